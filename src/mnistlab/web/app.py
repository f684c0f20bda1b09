"""``mnistlab serve``: a local page to draw a digit and watch the networks respond.

A Starlette app over one or more run folders. JSON API:

    GET  /api/runs                              the served runs, their key metrics and figures
    POST /api/predict?run=NAME[&steps=1][&pick=I]
                                                digit, ten probabilities, the 28x28 input the model saw,
                                                low_confidence; for an image: its box (and its stages);
                                                for a written number: its digits, and the I-th predicted
    POST /api/read?run=NAME                     a written number: digits with boxes, a picture of them
    POST /api/activations?run=NAME              each layer's output as a PNG (data URL)
    POST /api/reconstruct?run=NAME              the autoencoder's 28x28 output (and its code)
    POST /api/explain?run=NAME&method=M[&target=K][&contrast=K][&scrambled=1]
                                                the attribution map (28x28), the deletion check on this
                                                digit (ink order, probabilities vs a random order); with
                                                scrambled: the map of the re-initialised model and its
                                                Spearman correlation with the trained one
    POST /api/conv?run=NAME&layer=I[&channel=C&y=Y&x=X]
                                                a convolution's output maps; with a pixel: its kernels,
                                                input patches, products, bias and sum
    GET  /api/codes?run=NAME                    test-set codes coloured by digit (2-D and 3-D codes)
    GET  /api/figure?run=NAME&name=FILE.png     a figure of a served run

POST bodies: an image file's bytes (PNG, JPEG, ...), or JSON ``{"pixels": 28x28 grey 0-255}``.
Bad requests get a 4xx with ``{"error": ...}``.

Hardening: image decoding and inference run in worker threads, image uploads at most
``HEAVY_WORKERS`` at a time, so small requests are never queued behind large ones and the
event loop never blocks; a request must send its head within ``HEAD_TIMEOUT`` seconds and
its body within ``BODY_TIMEOUT``; past ``MAX_CONNECTIONS`` open connections the oldest idle
one is dropped for a new one; only the served host names are answered (DNS rebinding);
security headers on every answer; POSTs only as JSON or image bytes.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import io
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.sources import dataset_classes, dataset_for
from ..errors import MnistlabError
from ..infer import activations as layer_outputs
from ..infer import reconstruct as reconstruct_one
from ..reading.images import boxes_image, load_grey, preprocess, stage_images
from ..reading.reader import LOW_CONFIDENCE, probabilities, read_digit, read_number
from ..runs import latest_run, load_run

STATIC = Path(__file__).parent / "static"
MAX_BODY = 2 * 1024 * 1024  # bytes of one request
MAX_SIDE = 2048  # pixels, either side of an uploaded image
HEAVY_WORKERS = max(1, (os.cpu_count() or 2) // 2)  # image uploads decoded at once
HEAD_TIMEOUT = 10.0  # seconds for a connection to send a request's head
BODY_TIMEOUT = 10.0  # seconds for a request's body
MAX_CONNECTIONS = 512  # open connections before the oldest idle one is dropped for a new one
BACKLOG = 128  # pending connections; asyncio accepts up to this many at once, before any is seen
FIGURE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,120}\.png")
POST_TYPES = ("application/json", "image/", "application/octet-stream")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Served:
    name: str
    run: object  # runs.Run
    task: str
    codes: dict | None = None  # cached test-set codes for small-code autoencoders
    scrambled: object = None  # the classifier with re-initialised weights (the randomisation check)
    explainer: object = None  # a copy of the classifier that explain and conv hook into, one request at a time
    explain_lock: threading.Lock = field(default_factory=threading.Lock)


class Model:
    """The runs being served, loaded once. Inference needs no lock (eval-mode forward passes
    only read the weights); the lock guards the one-time cache of each run's test codes."""

    def __init__(self, run_dirs: list[Path]):
        self.runs: dict[str, Served] = {}
        for d in run_dirs:
            run = load_run(d)
            name, n = run.path.resolve().name, 1
            while name in self.runs:  # two runs of one name: both served, the second as name-2
                n += 1
                name = f"{run.path.resolve().name}-{n}"
            self.runs[name] = Served(name, run, run.task)
        self.lock = threading.Lock()

    def get(self, name: str | None, task: str | None = None) -> Served:
        if name is None:
            found = [s for s in self.runs.values() if task is None or s.task == task]
            if not found:
                raise BadRequest(f"no {task or ''} run is served".replace("  ", " "), 404)
            return found[0]
        if name not in self.runs:
            raise BadRequest(f"unknown run {name!r}", 404)
        served = self.runs[name]
        if task and served.task != task:
            raise BadRequest(f"run {name!r} is a {served.task} model, not {task}", 400)
        return served


def default_runs(root: Path | None = None) -> list[Path]:
    """The default classifier (the newest cnn-robust run, else the newest classifier run)
    and the newest autoencoder run."""
    from ..reading.reader import default_classifier

    out = []
    for pick in (lambda: default_classifier(root), lambda: latest_run(root, task="reconstruct")):
        try:
            out.append(pick())
        except MnistlabError:
            pass
    if not out:
        raise MnistlabError("no finished runs to serve: train one (e.g. `mnistlab train cnn`) or pass --run")
    return out


def parse_upload(body: bytes, content_type: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Request body -> (28x28 uint8 pixels, None) for JSON pixels, or (None, grey image) for an
    image file, which then goes through the same preprocessing as `predict` and `read`."""
    if not body:
        raise BadRequest("empty request body: send an image file or JSON {\"pixels\": 28x28}")
    if len(body) > MAX_BODY:
        raise BadRequest(f"request too large ({len(body):,} bytes, max {MAX_BODY:,})", 413)
    if content_type.startswith("application/json"):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # bad JSON, bad UTF-8, a 5000-digit number, deep nesting
            raise BadRequest("body is not valid JSON (or nests too deep, or holds a number too long)") from None
        pixels = data.get("pixels") if isinstance(data, dict) else None
        if pixels is None:
            raise BadRequest("JSON body needs a \"pixels\" field (28 rows of 28 grey values 0-255)")
        try:
            arr = np.asarray(pixels, dtype=np.float64)
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise BadRequest("\"pixels\" must be 28 rows of 28 numbers within 0..255") from None
        if arr.shape != (28, 28):
            raise BadRequest(f"\"pixels\" must be 28x28, got shape {list(arr.shape)}")
        # numbers only: true/false are no grey values, though numpy reads them as 1 and 0
        if not all(type(v) in (int, float) for row in pixels for v in row):
            raise BadRequest("\"pixels\" must be 28 rows of 28 numbers within 0..255 (not true/false)")
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
            raise BadRequest("\"pixels\" values must be within 0..255")
        if arr.max() == 0:
            raise BadRequest("image is empty (all pixels 0)")
        return np.rint(arr).astype(np.uint8), None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(body)) as img:
            if img.width > MAX_SIDE or img.height > MAX_SIDE:
                raise BadRequest(f"image is {img.width}x{img.height}, max {MAX_SIDE}x{MAX_SIDE}", 413)
    except BadRequest:
        raise
    except Image.DecompressionBombError:  # PIL refuses to even open one this large
        raise BadRequest(f"image too large (max {MAX_SIDE}x{MAX_SIDE})", 413) from None
    except Exception:
        raise BadRequest("body is not a readable image (PNG, JPEG, ...)") from None
    try:
        return None, load_grey(body)
    except MnistlabError as e:
        raise BadRequest(str(e).removeprefix("image: ")) from None


def parse_image(body: bytes, content_type: str) -> np.ndarray:
    """Request body -> MNIST-style (28, 28) uint8, through the same preprocessing as predict."""
    pixels, grey = parse_upload(body, content_type)
    if pixels is not None:
        return pixels
    try:
        return preprocess(grey)
    except MnistlabError as e:
        raise BadRequest(str(e).removeprefix("image: ")) from None


def _png_data_url(arr: np.ndarray, cmap: str | None = None) -> str:
    from PIL import Image

    a = np.asarray(arr, dtype=np.float64)
    if cmap:
        import matplotlib

        lo, hi = np.nanmin(a), np.nanmax(a)
        norm = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        rgba = matplotlib.colormaps[cmap](np.nan_to_num(norm, nan=0.0))
        rgba[np.isnan(a)] = (1, 1, 1, 1)
        img = Image.fromarray((rgba[..., :3] * 255).astype(np.uint8))
    else:
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _layer_picture(t: torch.Tensor) -> np.ndarray:
    from ..viz import _mosaic

    a = t.detach().float().cpu().numpy()[0]
    if a.ndim == 3:
        return a[0] if a.shape[0] == 1 else _mosaic(a)
    side = int(np.ceil(np.sqrt(a.size)))
    sq = np.full(side * side, np.nan)
    sq[:a.size] = a.ravel()
    return sq.reshape(side, side)


def _int_arg(query: dict, key: str, default, least: int, most: int):
    """An integer query parameter within least..most (the default when absent)."""
    raw = query.get(key)
    if raw in (None, ""):
        return default
    if not re.fullmatch(r"-?[0-9]{1,6}", raw):
        raise BadRequest(f"{key}: an integer, got {raw[:20]!r}")
    value = int(raw)
    if not least <= value <= most:
        raise BadRequest(f"{key}: {least}..{most}, got {value}")
    return value


@dataclass
class Req:
    """What a handler needs of a request, read on the event loop; handlers run in threads."""

    query: dict
    body: bytes
    content_type: str


def _finite(obj):
    """JSON-safe: NaN and infinities (a diverged run's summary, say) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def create_app(run_dirs: list[Path] | None = None, runs_root: Path | None = None,
               allowed_hosts: list[str] | None = None):
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    state = Model(run_dirs or default_runs(runs_root))
    limiters: dict[str, anyio.CapacityLimiter] = {}

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise BadRequest(f"request too large ({int(length):,} bytes, max {MAX_BODY:,})", 413)
        chunks, size = [], 0
        with anyio.move_on_after(BODY_TIMEOUT) as scope:
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BODY:
                    raise BadRequest(f"request too large (max {MAX_BODY:,} bytes)", 413)
        if scope.cancelled_caught:
            raise BadRequest(f"request body not received within {BODY_TIMEOUT:g} s", 408)
        return b"".join(chunks)

    def api(fn, post: bool = False):
        """An endpoint: the body read here, `fn(Req)` run in a worker thread (image uploads in
        a small pool of their own), its dict answered as JSON; errors as 4xx JSON."""
        async def endpoint(request: Request):
            try:
                body, ctype = b"", request.headers.get("content-type", "").lower()
                if post:
                    if not ctype.startswith(POST_TYPES):
                        raise BadRequest("send an image file (image/*) or JSON (application/json)", 415)
                    body = await body_of(request)
                heavy = post and not ctype.startswith("application/json")
                if heavy and "heavy" not in limiters:
                    limiters["heavy"] = anyio.CapacityLimiter(HEAVY_WORKERS)
                req = Req(dict(request.query_params), body, ctype)
                out = await anyio.to_thread.run_sync(fn, req, limiter=limiters["heavy"] if heavy else None)
                return JSONResponse(_finite(out))
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            except MnistlabError as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            except Exception as e:  # a bug, not the client's fault; still JSON, never a traceback page
                logging.getLogger("mnistlab.web").exception("internal error")
                return JSONResponse({"error": f"internal error ({type(e).__name__})"}, status_code=500)
        return endpoint

    def upload(req: Req) -> tuple[np.ndarray | None, np.ndarray | None]:
        return parse_upload(req.body, req.content_type)

    def image_of(req: Req) -> np.ndarray:
        return parse_image(req.body, req.content_type)

    def bad_image(fn):
        try:
            return fn()
        except MnistlabError as e:
            raise BadRequest(str(e).removeprefix("image: ")) from None

    def runs(req: Req) -> dict:
        out = []
        for s in state.runs.values():
            figs = sorted(p.name for p in s.run.figures.glob("*.png"))
            out.append({"name": s.name, "model": s.run.config.model_name, "task": s.task,
                        "dataset": s.run.config.data.dataset,
                        "summary": {k: v for k, v in s.run.summary.items() if isinstance(v, (int, float, str))},
                        "figures": figs,
                        "code_shape": list(s.run.model.code_shape) if s.task == "reconstruct" else None,
                        "classes": (list(s.run.model.classes(dataset_classes(s.run.config.data.dataset)))
                                    if s.task == "classify" else None)})
        return {"runs": out}

    def predict(req: Req) -> dict:
        pixels, grey = upload(req)
        s = state.get(req.query.get("run"), "classify")
        extra = {}
        if pixels is not None:
            img, probs = pixels, probabilities(s.run.model, pixels[None])[0]
        else:
            reading, prep = bad_image(lambda: read_digit(s.run.model, grey))
            img, probs = reading.image, np.asarray(reading.probabilities)
            extra["box"] = reading.box
            # a written number: the digit picked (the first by default) is the one predicted, as
            # `read` reads it, not the whole number squeezed into one 28x28 digit
            try:
                number = read_number(s.run.model, grey, ink=prep.ink)  # the ink read_digit found
            except MnistlabError:
                number = None
            if number is not None and len(number.digits) > 1:
                pick = _int_arg(req.query, "pick", 0, 0, len(number.digits) - 1)
                d = number.digits[pick]
                img, probs = d.image, np.asarray(d.probabilities)
                extra.update(box=d.box, pick=pick, number=number.number,
                             digits=[{"digit": x.digit, "confidence": round(x.confidence, 6), "box": x.box}
                                     for x in number.digits])
            if req.query.get("steps") in ("1", "true"):
                extra["steps"] = [{"name": n, "png": _png_data_url(a)} for n, a in stage_images(prep)]
        top = int(probs.argmax())
        return {"run": s.name, "digit": top, "probabilities": [round(float(p), 6) for p in probs],
                "confidence": round(float(probs[top]), 6), "low_confidence": bool(probs[top] < LOW_CONFIDENCE),
                "input": img.tolist(), **extra}

    def read_number_api(req: Req) -> dict:
        pixels, grey = upload(req)
        if grey is None:
            raise BadRequest("/api/read needs an image file, not pixels")
        s = state.get(req.query.get("run"), "classify")
        r = bad_image(lambda: read_number(s.run.model, grey))
        pic = boxes_image(grey, [d.box for d in r.digits], [f"{d.digit} {d.confidence:.0%}" for d in r.digits],
                          [d.low_confidence for d in r.digits])
        return {"run": s.name, **r.to_dict(), "boxes_png": _png_data_url(pic)}

    def activations(req: Req) -> dict:
        img = image_of(req)
        s = state.get(req.query.get("run"), "classify")
        layers = [{"name": lname, "shape": list(t.shape[1:]), "png": _png_data_url(_layer_picture(t), "viridis")}
                  for lname, t in layer_outputs(s.run.model, img)]
        return {"run": s.name, "layers": layers}

    @contextlib.contextmanager
    def explaining(s: Served):
        """The run's explainer copy, one request at a time: explanations and the convolution
        view hook into a model's layers, and a hook on the served model would fire inside
        other threads' predictions."""
        with s.explain_lock:
            if s.explainer is None:
                s.explainer = copy.deepcopy(s.run.model).eval()
            yield s.explainer

    def explain_api(req: Req) -> dict:
        from ..attribution.faithfulness import STEPS, curves, ink_of, ink_order, randomized, spearman
        from ..attribution.maps import METHODS, explain

        img = image_of(req)
        s = state.get(req.query.get("run"), "classify")
        method = req.query.get("method", "ig")
        if method not in METHODS:
            raise BadRequest(f"method: one of {', '.join(METHODS)}, got {method[:40]!r}")
        probs = probabilities(s.run.model, img[None])[0]
        classes = len(probs)
        target = _int_arg(req.query, "target", int(probs.argmax()), 0, classes - 1)
        contrast = _int_arg(req.query, "contrast", None, 0, classes - 1)
        scrambled = req.query.get("scrambled") in ("1", "true")
        x = torch.from_numpy(np.ascontiguousarray(img)).float().div(255)[None, None]
        ink = ink_of(x)
        out = {"run": s.name, "method": method, "digit": int(probs.argmax()), "target": target,
               "contrast": contrast, "probabilities": [round(float(p), 6) for p in probs], "input": img.tolist(),
               "scrambled": scrambled}
        with explaining(s) as model:
            maps = explain(model, x, method, target=target, contrast=contrast)
            if scrambled:
                if s.scrambled is None:  # one re-initialised copy per run, made once
                    s.scrambled = randomized(model, seed=0)
                trained, maps = maps, explain(s.scrambled, x, method, target=target, contrast=contrast)
                on_ink = ink[0].numpy()
                out["spearman"] = round(spearman(trained.reshape(-1).numpy()[on_ink],
                                                 maps.reshape(-1).numpy()[on_ink]), 4)
            # the deletion check on this digit: its ink erased in the map's order (the order the
            # page plays), against a random one
            t = torch.tensor([target])
            shuffled = torch.rand(1, 784, generator=torch.Generator().manual_seed(0))
            out["deletion"] = {"fractions": [round(i / STEPS, 4) for i in range(STEPS + 1)],
                               "order": ink_order(maps.reshape(1, -1), ink)[0, :int(ink.sum())].tolist(),
                               "probability": [round(float(v), 5) for v in curves(model, x, maps, t)[0]],
                               "random": [round(float(v), 5) for v in curves(model, x, shuffled, t)[0]]}
        out["attribution"] = np.round(maps[0].numpy(), 6).tolist()
        return out

    def convolution(req: Req) -> dict:
        from ..infer import conv_layers, open_convolution

        img = image_of(req)
        s = state.get(req.query.get("run"), "classify")
        layer = _int_arg(req.query, "layer", 0, 0, 63)
        channel = _int_arg(req.query, "channel", None, 0, 1 << 16)
        y, x = _int_arg(req.query, "y", 0, 0, 1 << 16), _int_arg(req.query, "x", 0, 0, 1 << 16)
        layers = [name for name, _ in conv_layers(s.run.model)]
        with explaining(s) as model:
            out = open_convolution(model, img, layer, channel, y, x)

        def rounded(v):
            return np.round(v.numpy(), 5).tolist() if torch.is_tensor(v) else v

        if channel is None:
            out["maps"] = rounded(out["maps"])
        else:
            out["inputs"] = [{k: rounded(v) for k, v in d.items()} for d in out["inputs"]]
        return {"run": s.name, "layers": layers, **out}

    def reconstruct(req: Req) -> dict:
        img = image_of(req)
        s = state.get(req.query.get("run"), "reconstruct")
        z, out = reconstruct_one(s.run.model, img)
        out = out.numpy()
        return {"run": s.name, "input": img.tolist(), "output": np.rint(out * 255).astype(int).tolist(),
                "output_png": _png_data_url(out * 255), "code": z[0].flatten().tolist()[:64],
                "code_shape": list(z.shape[1:])}

    def codes(req: Req) -> dict:
        s = state.get(req.query.get("run"), "reconstruct")
        shape = s.run.model.code_shape
        if shape not in ((2,), (3,)):
            raise BadRequest(f"run {s.name!r} has a {'x'.join(map(str, shape))} code; points need a 2-D or 3-D code")
        with state.lock:  # computed once per run
            if s.codes is None:
                from ..viz import _encode

                ds = dataset_for(s.run.config.data, notice=lambda m: None)
                n = min(2000, len(ds.test))
                z = _encode(s.run.model, ds.test.images[:n])
                s.codes = {"points": [[round(v, 4) for v in row] for row in z.tolist()],
                           "labels": ds.test.labels[:n].tolist()}
        return {"run": s.name, **s.codes}

    async def figure(request):
        try:
            s = state.get(request.query_params.get("run"))
        except BadRequest as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        name = request.query_params.get("name", "")
        shown = name if len(name) <= 60 else name[:60] + "..."
        path = s.run.figures / name if FIGURE_NAME.fullmatch(name) else None
        if path is None or not path.is_file():
            return JSONResponse({"error": f"no figure {shown!r} in run {s.name!r}"}, status_code=404)
        return FileResponse(path, media_type="image/png")

    async def index(request):
        return FileResponse(STATIC / "index.html")

    class SecurityHeaders:
        """Adds SECURITY_HEADERS to every HTTP answer."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            async def send_with_headers(message):
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), *extra]
                await send(message)

            await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)

    class HostCheck:
        """Answers a request whose Host header names no allowed host with a JSON 400 (a DNS
        rebinding page cannot reach the API); what Starlette's TrustedHostMiddleware does, in JSON."""

        def __init__(self, app, allowed):
            self.app, self.allowed = app, set(allowed)

        async def __call__(self, scope, receive, send):
            if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
                host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
                name = host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.split(":")[0]
                if name not in self.allowed:
                    await JSONResponse({"error": "invalid Host header: this server answers to "
                                                 f"{', '.join(sorted(self.allowed))}"}, status_code=400)(
                        scope, receive, send)
                    return
            await self.app(scope, receive, send)

    async def http_error(request, exc):
        return JSONResponse({"error": f"{exc.detail} ({request.method} {request.url.path[:200]})"},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    hosts = allowed_hosts or ["localhost", "127.0.0.1", "[::1]", "::1", "testserver"]
    app = Starlette(routes=[
        Route("/", index),
        Route("/api/runs", api(runs)),
        Route("/api/predict", api(predict, post=True), methods=["POST"]),
        Route("/api/read", api(read_number_api, post=True), methods=["POST"]),
        Route("/api/activations", api(activations, post=True), methods=["POST"]),
        Route("/api/reconstruct", api(reconstruct, post=True), methods=["POST"]),
        Route("/api/explain", api(explain_api, post=True), methods=["POST"]),
        Route("/api/conv", api(convolution, post=True), methods=["POST"]),
        Route("/api/codes", api(codes)),
        Route("/api/figure", figure),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], middleware=[Middleware(SecurityHeaders), Middleware(HostCheck, allowed=hosts)],
        exception_handlers={HTTPException: http_error})
    app.state.served = state
    return app


def _guarded_protocol(max_connections: int = MAX_CONNECTIONS, head_timeout: float = HEAD_TIMEOUT):
    """uvicorn's h11 protocol with the two limits it lacks: a request head must arrive within
    `head_timeout` seconds of connecting (or of the previous answer), else the connection is closed; and
    past MAX_CONNECTIONS open connections, the oldest idle one is closed for each new one. So
    half-sent requests can neither pile up nor run the process out of file descriptors."""
    import time

    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            self._idle_since = time.monotonic()
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
            self._head_timer = self.loop.call_later(head_timeout, self._head_timeout)

        def _head_timeout(self) -> None:
            if not self._busy() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()
            if len(self.connections) > max_connections:
                idle = [c for c in self.connections
                        if c is not self and not c._busy() and not c.transport.is_closing()]
                if idle:
                    min(idle, key=lambda c: c._idle_since).transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if self._busy() and getattr(self, "_head_timer", None) is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def on_response_complete(self) -> None:
            self._arm()
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            if getattr(self, "_head_timer", None) is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol


def _connection_cap() -> int:
    """Raise the soft limit on open files to the hard one, as servers do, and keep the open
    connections far enough below it that a burst of BACKLOG accepts never runs out."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            soft = hard if hard != resource.RLIM_INFINITY else 65536
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ImportError, ValueError, OSError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - BACKLOG - 128))


def serve(run_dirs: list[Path] | None, host: str = "127.0.0.1", port: int = 8000,
          head_timeout: float = HEAD_TIMEOUT) -> None:
    import socket

    import uvicorn

    if not 0 <= port <= 65535:
        raise MnistlabError(f"--port {port}: must be in 0..65535 (0: any free port)")
    if not (math.isfinite(head_timeout) and 1 <= head_timeout <= 300):
        raise MnistlabError(f"--head-timeout {head_timeout:g}: must be in 1..300 seconds")
    local = host in ("127.0.0.1", "localhost", "::1")
    hosts = None if local else ["*"] if host in ("0.0.0.0", "::") else [host, "localhost", "127.0.0.1"]
    app = create_app(run_dirs, allowed_hosts=hosts)
    names = ", ".join(app.state.served.runs)
    cap = _connection_cap()
    # Bound here, before saying where: a port in use is one line, and port 0 is said as the
    # port the system gave.
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
    except OSError as e:
        raise MnistlabError(f"cannot serve at {host}:{port} ({e.strerror or e})") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"mnistlab: serving {names} at http://{shown}:{bound}/ (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", http=_guarded_protocol(cap, head_timeout), backlog=BACKLOG,
                            timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["create_app", "serve", "parse_image", "preprocess"]
