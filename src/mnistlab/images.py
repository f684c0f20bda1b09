"""Users' own digit images made to look like MNIST.

MNIST's recipe: light ink on a dark ground, the ink's bounding box fitted into 20x20
keeping its aspect ratio, then placed in 28x28 so that its centre of mass sits at the
centre. ``preprocess`` does that to any grey array; ``load_image`` reads a PNG/JPEG first.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .errors import ImageError

MAX_PIXELS = 4096 * 4096  # larger inputs are refused rather than decoded


def _to_grey(img) -> np.ndarray:
    """A PIL image to float ink-ish grey in [0, 255]; transparency counts as background."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), np.float64)
        alpha = rgba[..., 3] / 255.0
        if (alpha < 0.5).mean() > 0.5:
            # Mostly transparent (a drawing exported with no background): the strokes are
            # the opaque part, whatever their colour.
            return 255.0 * alpha
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)),
                                    img.convert("RGBA"))
    return np.asarray(img.convert("L"), np.float64)


def load_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Read an image file (or its bytes) and return it MNIST-style: (28, 28) uint8."""
    from PIL import Image, UnidentifiedImageError

    name = "image" if isinstance(source, bytes) else str(source)
    try:
        fh = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as e:
        raise ImageError(f"{name}: cannot open ({e.strerror or e})") from None
    with fh:
        try:
            img = Image.open(fh)
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{name}: {img.width}x{img.height} is too large (max {MAX_PIXELS:,} pixels)")
            img.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as e:
            raise ImageError(f"{name}: not a readable image ({type(e).__name__})") from None
    return preprocess(_to_grey(img), name=name)


def preprocess(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """Any-size grey array (0-255) -> MNIST-style (28, 28) uint8."""
    from PIL import Image

    a = np.asarray(grey, np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ImageError(f"{name}: expected a 2-D grey image, got shape {a.shape}")
    # Light paper (judged by the border, where the ink rarely is): make the ink light.
    def border(x):
        return np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])

    if np.median(border(a)) > 127:
        a = 255.0 - a
    a = np.clip(a - np.median(border(a)), 0, None)  # the ground becomes 0
    peak = a.max()
    if peak < 20:  # less than ~8% contrast anywhere: a blank page
        raise ImageError(f"{name}: no ink found (blank or nearly uniform image)")
    a = a * (255.0 / peak)
    ink = a > 0.1 * 255
    rows, cols = np.nonzero(ink)
    a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = a.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    box = np.asarray(Image.fromarray(a.astype(np.float32)).resize((nw, nh), Image.LANCZOS))
    box = np.clip(box, 0, 255)
    out = np.zeros((28, 28))
    top, left = (28 - nh) // 2, (28 - nw) // 2
    out[top:top + nh, left:left + nw] = box
    # Shift so the centre of mass lands on the centre (13.5, 13.5), keeping the ink inside.
    total = out.sum()
    r, c = np.indices(out.shape)
    dr = int(round(13.5 - (r * out).sum() / total))
    dc = int(round(13.5 - (c * out).sum() / total))
    dr = int(np.clip(dr, -top, 28 - (top + nh)))
    dc = int(np.clip(dc, -left, 28 - (left + nw)))
    out = np.roll(out, (dr, dc), axis=(0, 1))
    return np.rint(out).astype(np.uint8)


def is_image_path(arg: str) -> bool:
    """A CLI argument names an image file (not a dataset id) when it is not all digits."""
    return not arg.isdigit() or Path(arg).is_file()
