"""``mnistlab serve``'s app: the routes of a Starlette app over one or more run folders, each
endpoint a plain function of ``handlers``; ``transport`` runs it behind uvicorn. JSON API:

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
                                                and what follows: normalisation, ReLU, the max-pool window
    GET  /api/codes?run=NAME                    test-set codes coloured by digit (2-D and 3-D codes)
    GET  /api/figure?run=NAME&name=FILE.png     a figure of a served run
    GET  /api/summary?run=NAME                  the model's layers, output shapes, parameters (``mnistlab summary``)
    POST /api/train  {"model", "lr", "epochs", "width", "augment", "batch_size"}
                                                start the one training the page may run (409 while one runs)
    GET  /api/train/events                      its live view as server-sent events: start, step (running
                                                loss and accuracy), view (first-layer filters as PNGs, the
                                                16 watched digits' readings), epoch, then done, stopped or error
    POST /api/train/stop  {}                    stop it after the current batch: the run is finished as it stands

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

import json
import logging
import os
import re
from pathlib import Path

from ..errors import MnistlabError
from . import handlers
from .handlers import MAX_BODY, Req, _finite
from .served import BadRequest, ServedRuns, default_runs
from .training import Trainer, stream

# the Host names a server on this machine answers to unless told more (`serve --host`); no
# other name, not even a test client's "testserver" (tests name http://localhost)
LOOPBACK = ("localhost", "127.0.0.1", "[::1]", "::1")

STATIC = Path(__file__).parent / "static"
HEAVY_WORKERS = max(1, (os.cpu_count() or 2) // 2)  # image uploads decoded at once
BODY_TIMEOUT = 10.0  # seconds for a request's body
FIGURE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,120}\.png")
POST_TYPES = ("application/json", "image/", "application/octet-stream")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


def create_app(
    run_dirs: list[Path] | None = None, runs_root: Path | None = None, allowed_hosts: list[str] | None = None
):
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    state = ServedRuns(run_dirs or default_runs(runs_root))
    limiters: dict[str, anyio.CapacityLimiter] = {}
    trainer = Trainer(state, runs_root)

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
        """An endpoint: the body read here, `fn(state, Req)` run in a worker thread (image uploads
        in a small pool of their own), its dict answered as JSON; errors as 4xx JSON."""

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
                out = await anyio.to_thread.run_sync(fn, state, req, limiter=limiters["heavy"] if heavy else None)
                return JSONResponse(_finite(out))
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            except MnistlabError as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            except Exception as e:  # a bug, not the client's fault; still JSON, never a traceback page
                logging.getLogger("mnistlab.web").exception("internal error")
                return JSONResponse({"error": f"internal error ({type(e).__name__})"}, status_code=500)

        return endpoint

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

    def training(act):
        """A Train panel action: JSON only (a page of another site cannot send JSON here without
        asking first, so it cannot start a training), its settings in the body."""

        async def endpoint(request: Request):
            try:
                if not request.headers.get("content-type", "").lower().startswith("application/json"):
                    raise BadRequest("send the settings as JSON (application/json)", 415)
                body = await body_of(request)
                try:
                    settings = json.loads(body or b"{}")
                except ValueError:
                    raise BadRequest("the body is not JSON") from None
                if not isinstance(settings, dict):
                    raise BadRequest("the body must be a JSON object of settings")
                query = {str(k): str(v) for k, v in settings.items() if isinstance(v, (str, int, float))}
                return JSONResponse(await anyio.to_thread.run_sync(act, query))
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)

        return endpoint

    async def train_events(request):
        return StreamingResponse(stream(trainer), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

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
                    await JSONResponse(
                        {"error": f"invalid Host header: this server answers to {', '.join(sorted(self.allowed))}"},
                        status_code=400,
                    )(scope, receive, send)
                    return
            await self.app(scope, receive, send)

    async def http_error(request, exc):
        return JSONResponse(
            {"error": f"{exc.detail} ({request.method} {request.url.path[:200]})"},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    hosts = allowed_hosts or list(LOOPBACK)
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/runs", api(handlers.list_served)),
            Route("/api/predict", api(handlers.predict, post=True), methods=["POST"]),
            Route("/api/read", api(handlers.read_number, post=True), methods=["POST"]),
            Route("/api/activations", api(handlers.layers, post=True), methods=["POST"]),
            Route("/api/reconstruct", api(handlers.reconstruct, post=True), methods=["POST"]),
            Route("/api/explain", api(handlers.explain, post=True), methods=["POST"]),
            Route("/api/conv", api(handlers.conv, post=True), methods=["POST"]),
            Route("/api/codes", api(handlers.codes)),
            Route("/api/summary", api(handlers.model_summary)),
            Route("/api/train", training(trainer.start), methods=["POST"]),
            Route("/api/train/stop", training(lambda q: trainer.stop()), methods=["POST"]),
            Route("/api/train/events", train_events),
            Route("/api/figure", figure),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(HostCheck, allowed=hosts)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.served = state
    app.state.trainer = trainer
    return app


__all__ = ["create_app"]
