"""``mnistlab serve``: a local page to draw a digit and watch the networks respond.

A Starlette app over one or more run folders. JSON API:

    GET  /api/runs                              the served runs, their key metrics and figures
    POST /api/predict?run=NAME[&steps=1]        digit, ten probabilities, the 28x28 input the model saw,
                                                low_confidence; for an image: its box (and its stages)
    POST /api/read?run=NAME                     a written number: digits with boxes, a picture of them
    POST /api/activations?run=NAME              each layer's output as a PNG (data URL)
    POST /api/reconstruct?run=NAME              the autoencoder's 28x28 output (and its code)
    GET  /api/codes?run=NAME                    test-set codes coloured by digit (2-D and 3-D codes)
    GET  /api/figure?run=NAME&name=FILE.png     a figure of a served run

POST bodies: an image file's bytes (PNG, JPEG, ...), or JSON ``{"pixels": 28x28 grey 0-255}``.
Bad requests get a 4xx with ``{"error": ...}``.
"""
from __future__ import annotations

import base64
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import dataset_for
from ..errors import MnistlabError
from ..images import boxes_image, load_grey, preprocess, stage_images
from ..infer import activations as layer_outputs
from ..infer import reconstruct as reconstruct_one
from ..reading import LOW_CONFIDENCE, probabilities, read_digit, read_number
from ..runs import latest_run, load_run

STATIC = Path(__file__).parent / "static"
MAX_BODY = 2 * 1024 * 1024  # bytes of one request
MAX_SIDE = 2048  # pixels, either side of an uploaded image


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


class Model:
    """The runs being served, loaded once; models run under one lock (torch is threaded already)."""

    def __init__(self, run_dirs: list[Path]):
        self.runs: dict[str, Served] = {}
        for d in run_dirs:
            run = load_run(d)
            name = Path(d).resolve().name
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
    from ..reading import default_classifier

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
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest("body is not valid JSON") from None
        pixels = data.get("pixels") if isinstance(data, dict) else None
        if pixels is None:
            raise BadRequest("JSON body needs a \"pixels\" field (28 rows of 28 grey values 0-255)")
        try:
            arr = np.asarray(pixels, dtype=np.float64)
        except (ValueError, TypeError):
            raise BadRequest("\"pixels\" must be 28 rows of 28 numbers") from None
        if arr.shape != (28, 28):
            raise BadRequest(f"\"pixels\" must be 28x28, got shape {list(arr.shape)}")
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


def create_app(run_dirs: list[Path] | None = None, runs_root: Path | None = None):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    state = Model(run_dirs or default_runs(runs_root))

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise BadRequest(f"request too large ({int(length):,} bytes, max {MAX_BODY:,})", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise BadRequest(f"request too large (max {MAX_BODY:,} bytes)", 413)
        return body

    async def read(request: Request) -> tuple[np.ndarray, str]:
        body = await body_of(request)
        return parse_image(body, request.headers.get("content-type", "")), request.query_params.get("run")

    def handler(fn):
        async def wrapped(request: Request):
            try:
                return JSONResponse(await fn(request))
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            except MnistlabError as e:
                return JSONResponse({"error": str(e)}, status_code=400)
        return wrapped

    @handler
    async def runs(request):
        out = []
        for s in state.runs.values():
            figs = sorted(p.name for p in s.run.figures.glob("*.png"))
            out.append({"name": s.name, "model": s.run.config.model_name, "task": s.task,
                        "dataset": s.run.config.data.dataset,
                        "summary": {k: v for k, v in s.run.summary.items() if isinstance(v, (int, float, str))},
                        "figures": figs,
                        "code_shape": list(s.run.model.code_shape) if s.task == "reconstruct" else None})
        return {"runs": out}

    def bad_image(fn):
        try:
            return fn()
        except MnistlabError as e:
            raise BadRequest(str(e).removeprefix("image: ")) from None

    @handler
    async def predict(request):
        body = await body_of(request)
        pixels, grey = parse_upload(body, request.headers.get("content-type", ""))
        s = state.get(request.query_params.get("run"), "classify")
        extra = {}
        with state.lock:
            if pixels is not None:
                img, probs = pixels, probabilities(s.run.model, pixels[None])[0]
            else:
                reading, prep = bad_image(lambda: read_digit(s.run.model, grey))
                img, probs = reading.image, np.asarray(reading.probabilities)
                extra["box"] = reading.box
                if request.query_params.get("steps") in ("1", "true"):
                    extra["steps"] = [{"name": n, "png": _png_data_url(a)} for n, a in stage_images(prep)]
        top = int(probs.argmax())
        return {"run": s.name, "digit": top, "probabilities": [round(float(p), 6) for p in probs],
                "confidence": round(float(probs[top]), 6), "low_confidence": bool(probs[top] < LOW_CONFIDENCE),
                "input": img.tolist(), **extra}

    @handler
    async def read_number_api(request):
        body = await body_of(request)
        pixels, grey = parse_upload(body, request.headers.get("content-type", ""))
        if grey is None:
            raise BadRequest("/api/read needs an image file, not pixels")
        s = state.get(request.query_params.get("run"), "classify")
        with state.lock:
            r = bad_image(lambda: read_number(s.run.model, grey))
        pic = boxes_image(grey, [d.box for d in r.digits], [f"{d.digit} {d.confidence:.0%}" for d in r.digits],
                          [d.low_confidence for d in r.digits])
        return {"run": s.name, **r.to_dict(), "boxes_png": _png_data_url(pic)}

    @handler
    async def activations(request):
        img, name = await read(request)
        s = state.get(name, "classify")
        with state.lock:
            acts = layer_outputs(s.run.model, img)
        layers = []
        for lname, t in acts:
            layers.append({"name": lname, "shape": list(t.shape[1:]),
                           "png": _png_data_url(_layer_picture(t), "viridis")})
        return {"run": s.name, "layers": layers}

    @handler
    async def reconstruct(request):
        img, name = await read(request)
        s = state.get(name, "reconstruct")
        with state.lock:
            z, out = reconstruct_one(s.run.model, img)
            out = out.numpy()
        return {"run": s.name, "input": img.tolist(), "output": np.rint(out * 255).astype(int).tolist(),
                "output_png": _png_data_url(out * 255), "code": z[0].flatten().tolist()[:64],
                "code_shape": list(z.shape[1:])}

    @handler
    async def codes(request):
        s = state.get(request.query_params.get("run"), "reconstruct")
        shape = s.run.model.code_shape
        if shape not in ((2,), (3,)):
            raise BadRequest(f"run {s.name!r} has a {'x'.join(map(str, shape))} code; points need a 2-D or 3-D code")
        if s.codes is None:
            from ..viz import _encode

            ds = dataset_for(s.run.config.data, notice=lambda m: None)
            n = min(2000, len(ds.test))
            with state.lock:
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
        folder = s.run.figures.resolve()
        path = (folder / name).resolve()
        bare = name and "/" not in name and "\\" not in name and not name.startswith(".")
        if not bare or not name.endswith(".png") or path.parent != folder or not path.is_file():
            return JSONResponse({"error": f"no figure {name!r} in run {s.name!r}"}, status_code=404)
        return FileResponse(path, media_type="image/png")

    async def index(request):
        return FileResponse(STATIC / "index.html")

    app = Starlette(routes=[
        Route("/", index),
        Route("/api/runs", runs),
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/read", read_number_api, methods=["POST"]),
        Route("/api/activations", activations, methods=["POST"]),
        Route("/api/reconstruct", reconstruct, methods=["POST"]),
        Route("/api/codes", codes),
        Route("/api/figure", figure),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])
    app.state.served = state
    return app


def serve(run_dirs: list[Path] | None, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    app = create_app(run_dirs)
    names = ", ".join(app.state.served.runs)
    print(f"mnistlab: serving {names} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = ["create_app", "serve", "parse_image", "preprocess"]
