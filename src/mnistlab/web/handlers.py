"""The web page's endpoints, one plain function each: ``fn(state, req) -> dict``, answered as
JSON by ``app``; a request the server will not answer as asked raises ``BadRequest``. The routes
and what each returns are listed once, in ``web.app``'s docstring (and the JSON reference)."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import brief
from ..data.sources import dataset_classes, dataset_for
from ..errors import MnistlabError
from ..infer import activations as layer_outputs
from ..infer import predict as predict_logits
from ..infer import reconstruct as reconstruct_one
from ..reading.images import boxes_image, load_grey, preprocess, stage_images
from ..reading.reader import LOW_CONFIDENCE, MAX_DIGITS, probabilities, read_photo
from ..reading.reader import read_number as read_number_in
from .served import BadRequest, ServedRuns, explaining

MAX_BODY = 2 * 1024 * 1024  # bytes of one request
MAX_SIDE = 2048  # pixels, either side of an uploaded image


def parse_upload(body: bytes, content_type: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Request body -> (28x28 uint8 pixels, None) for JSON pixels, or (None, grey image) for an
    image file, which then goes through the same preprocessing as `predict` and `read`."""
    if not body:
        raise BadRequest('empty request body: send an image file or JSON {"pixels": 28x28}')
    if len(body) > MAX_BODY:
        raise BadRequest(f"request too large ({len(body):,} bytes, max {MAX_BODY:,})", 413)
    if content_type.startswith("application/json"):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # bad JSON, bad UTF-8, a 5000-digit number, deep nesting
            raise BadRequest("body is not valid JSON (or nests too deep, or holds a number too long)") from None
        pixels = data.get("pixels") if isinstance(data, dict) else None
        if pixels is None:
            raise BadRequest('JSON body needs a "pixels" field (28 rows of 28 grey values 0-255)')
        try:
            arr = np.asarray(pixels, dtype=np.float64)
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise BadRequest('"pixels" must be 28 rows of 28 numbers within 0..255') from None
        if arr.shape != (28, 28):
            raise BadRequest(f'"pixels" must be 28x28, got shape {list(arr.shape)}')
        # numbers only: true/false are no grey values, though numpy reads them as 1 and 0
        if not all(type(v) in (int, float) for row in pixels for v in row):
            raise BadRequest('"pixels" must be 28 rows of 28 numbers within 0..255 (not true/false)')
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
            raise BadRequest('"pixels" values must be within 0..255')
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
        raise BadRequest(e.detail) from None


def parse_image(body: bytes, content_type: str) -> np.ndarray:
    """Request body -> MNIST-style (28, 28) uint8, through the same preprocessing as predict."""
    pixels, grey = parse_upload(body, content_type)
    if pixels is not None:
        return pixels
    try:
        return preprocess(grey)
    except MnistlabError as e:
        raise BadRequest(e.detail) from None


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
    sq[: a.size] = a.ravel()
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


def _bool_arg(query: dict, key: str) -> bool:
    """A true/false query parameter (1/0, true/false, yes/no, on/off); anything else is refused,
    never read as false."""
    raw = query.get(key)
    if raw in (None, ""):
        return False
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"{key}: true or false (1 or 0), got {brief(repr(raw), 30)}")


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


def _upload(req: Req) -> tuple[np.ndarray | None, np.ndarray | None]:
    return parse_upload(req.body, req.content_type)


def _image_of(req: Req) -> np.ndarray:
    return parse_image(req.body, req.content_type)


def _bad_image(fn):
    try:
        return fn()
    except MnistlabError as e:
        raise BadRequest(e.detail) from None


def list_served(state: ServedRuns, req: Req) -> dict:
    out = []
    for s in state.runs.values():
        figs = sorted(p.name for p in s.run.figures.glob("*.png"))
        out.append(
            {
                "name": s.name,
                "model": s.run.config.model_name,
                "task": s.task,
                "dataset": s.run.config.data.dataset,
                "summary": {k: v for k, v in s.run.summary.items() if isinstance(v, (int, float, str))},
                "figures": figs,
                "code_shape": list(s.run.model.code_shape) if s.task == "reconstruct" else None,
                "classes": (
                    list(s.run.model.classes(dataset_classes(s.run.config.data.dataset)))
                    if s.task == "classify"
                    else None
                ),
            }
        )
    return {"runs": out}


def predict(state: ServedRuns, req: Req) -> dict:
    pixels, grey = _upload(req)
    s = state.get(req.query.get("run"), "classify")
    extra = {}
    if pixels is not None:
        img, probs = pixels, probabilities(s.run.model, pixels[None])[0]
    else:
        # one rule with the CLI's predict (reading.reader.read_photo): a written number's digit
        # picked (the first by default) is the one predicted, as `read` reads it
        pick = _int_arg(req.query, "pick", 0, 0, MAX_DIGITS - 1)
        photo = _bad_image(lambda: read_photo(s.run.model, grey, pick=pick))
        reading, prep, number = photo.digit, photo.prep, photo.number
        img, probs = reading.image, np.asarray(reading.probabilities)
        extra["box"] = reading.box
        if number is not None:
            extra.update(
                pick=photo.pick,
                number=number.number,
                note=photo.note(),
                digits=[{"digit": x.digit, "confidence": round(x.confidence, 6), "box": x.box} for x in number.digits],
            )
        if _bool_arg(req.query, "steps"):
            extra["steps"] = [{"name": n, "png": _png_data_url(a)} for n, a in stage_images(prep)]
    top = int(probs.argmax())
    logits = predict_logits(s.run.model, torch.from_numpy(np.ascontiguousarray(img))[None])[0]
    extra["logits"] = [round(float(v), 5) for v in logits]  # the softmax step, shown with its numbers
    extra["temperature"] = float(getattr(s.run.model, "temperature", 1.0))
    return {
        "run": s.name,
        "digit": top,
        "probabilities": [round(float(p), 6) for p in probs],
        "confidence": round(float(probs[top]), 6),
        "low_confidence": bool(probs[top] < LOW_CONFIDENCE),
        "input": img.tolist(),
        **extra,
    }


def read_number(state: ServedRuns, req: Req) -> dict:
    pixels, grey = _upload(req)
    if grey is None:
        raise BadRequest("/api/read needs an image file, not pixels")
    s = state.get(req.query.get("run"), "classify")
    r = _bad_image(lambda: read_number_in(s.run.model, grey))
    pic = boxes_image(
        grey,
        [d.box for d in r.digits],
        [f"{d.digit} {d.confidence:.0%}" for d in r.digits],
        [d.low_confidence for d in r.digits],
    )
    return {"run": s.name, **r.to_dict(), "boxes_png": _png_data_url(pic)}


def layers(state: ServedRuns, req: Req) -> dict:
    img = _image_of(req)
    s = state.get(req.query.get("run"), "classify")
    layers = []
    for lname, t in layer_outputs(s.run.model, img):
        layer = {"name": lname, "shape": list(t.shape[1:]), "png": _png_data_url(_layer_picture(t), "viridis")}
        if t[0].numel() <= 16:  # a few numbers (the class scores): shown as labelled bars, not tiles
            layer["values"] = [round(float(v), 4) for v in t[0].flatten()]
        layers.append(layer)
    return {"run": s.name, "layers": layers}


def explain(state: ServedRuns, req: Req) -> dict:
    from ..attribution.faithfulness import STEPS, curves, ink_of, ink_order, randomized, spearman
    from ..attribution.maps import METHODS
    from ..attribution.maps import explain as attribute

    img = _image_of(req)
    s = state.get(req.query.get("run"), "classify")
    method = req.query.get("method", "ig")
    if method not in METHODS:
        raise BadRequest(f"method: one of {', '.join(METHODS)}, got {method[:40]!r}")
    probs = probabilities(s.run.model, img[None])[0]
    classes = len(probs)
    target = _int_arg(req.query, "target", int(probs.argmax()), 0, classes - 1)
    contrast = _int_arg(req.query, "contrast", None, 0, classes - 1)
    scrambled = _bool_arg(req.query, "scrambled")
    if contrast is not None and contrast == target:
        raise BadRequest(f"contrast: class {contrast} is the class explained; a class against itself explains nothing")
    x = torch.from_numpy(np.ascontiguousarray(img)).float().div(255)[None, None]
    ink = ink_of(x)
    out = {
        "run": s.name,
        "method": method,
        "digit": int(probs.argmax()),
        "target": target,
        "contrast": contrast,
        "probabilities": [round(float(p), 6) for p in probs],
        "input": img.tolist(),
        "scrambled": scrambled,
    }
    with explaining(s) as model:
        maps = attribute(model, x, method, target=target, contrast=contrast)
        if scrambled:
            if s.scrambled is None:  # one re-initialised copy per run, made once
                s.scrambled = randomized(model, seed=0)
            trained, maps = maps, attribute(s.scrambled, x, method, target=target, contrast=contrast)
            on_ink = ink[0].numpy()
            out["spearman"] = round(spearman(trained.reshape(-1).numpy()[on_ink], maps.reshape(-1).numpy()[on_ink]), 4)
        # the deletion check on this digit: its ink erased in the map's order (the order the
        # page plays), against a random one
        t = torch.tensor([target])
        shuffled = torch.rand(1, 784, generator=torch.Generator().manual_seed(0))
        out["deletion"] = {
            "fractions": [round(i / STEPS, 4) for i in range(STEPS + 1)],
            "order": ink_order(maps.reshape(1, -1), ink)[0, : int(ink.sum())].tolist(),
            "probability": [round(float(v), 5) for v in curves(model, x, maps, t)[0]],
            "random": [round(float(v), 5) for v in curves(model, x, shuffled, t)[0]],
        }
    out["attribution"] = np.round(maps[0].numpy(), 6).tolist()
    return out


def conv(state: ServedRuns, req: Req) -> dict:
    from ..infer import conv_layers, open_convolution

    img = _image_of(req)
    s = state.get(req.query.get("run"), "classify")
    # numbers here; their ranges are the model's, said by open_convolution (layers, channels, size)
    layer = _int_arg(req.query, "layer", 0, -(10**6), 10**6)
    channel = _int_arg(req.query, "channel", None, -(10**6), 10**6)
    y, x = _int_arg(req.query, "y", 0, -(10**6), 10**6), _int_arg(req.query, "x", 0, -(10**6), 10**6)
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


def model_summary(state: ServedRuns, req: Req) -> dict:
    """The served model's summary (``mnistlab summary``): layers, shapes, parameters."""
    from ..summaries import summary

    s = state.get(req.query.get("run"))
    with explaining(s) as model:  # its hooks on a copy, not the model answering predictions
        return {"run": s.name, **summary(model).to_dict()}


def reconstruct(state: ServedRuns, req: Req) -> dict:
    img = _image_of(req)
    s = state.get(req.query.get("run"), "reconstruct")
    z, out = reconstruct_one(s.run.model, img)
    out = out.numpy()
    return {
        "run": s.name,
        "input": img.tolist(),
        "output": np.rint(out * 255).astype(int).tolist(),
        "output_png": _png_data_url(out * 255),
        "code": z[0].flatten().tolist()[:64],
        "code_shape": list(z.shape[1:]),
    }


def codes(state: ServedRuns, req: Req) -> dict:
    s = state.get(req.query.get("run"), "reconstruct")
    shape = s.run.model.code_shape
    if shape not in ((2,), (3,)):
        raise BadRequest(f"run {s.name!r} has a {'x'.join(map(str, shape))} code; points need a 2-D or 3-D code")
    with state.lock:  # computed once per run
        if s.codes is None:
            from ..infer import encode

            ds = dataset_for(s.run.config.data, notice=lambda m: None)
            n = min(2000, len(ds.test))
            z = encode(s.run.model, ds.test.images[:n])
            s.codes = {
                "points": [[round(v, 4) for v in row] for row in z.tolist()],
                "labels": ds.test.labels[:n].tolist(),
            }
    return {"run": s.name, **s.codes}
