"""Printed digits rendered MNIST-style, for training (``train.printed``): photos of house numbers
and forms hold printed digits, which MNIST lacks. The fonts are matplotlib's own, never the
Liberation fonts the generated test photos use (``reading.photos``). ``fit_mnist`` is how
MNIST made its digits: the ink box fitted into 20x20, the centre of mass moved to the centre
of 28x28; the reader's pipeline ends with it too."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch

from ..errors import ImageError
from .splits import Split


def fit_mnist(ink: np.ndarray) -> np.ndarray:
    """Grey ink (light on dark, any size) -> (28, 28) uint8: the ink box fitted into 20x20
    keeping its aspect ratio, the centre of mass moved to the centre."""
    import cv2

    a = np.asarray(ink, np.float32)
    rows, cols = np.nonzero(a > 0.1 * a.max())
    if not len(rows):
        raise ImageError("no ink found")
    a = a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = a.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    box = np.clip(cv2.resize(a, (nw, nh), interpolation=interp), 0, None)
    box = box * np.float32(255.0 / max(float(box.max()), 1e-6))
    out = np.zeros((28, 28), np.float32)
    top, left = (28 - nh) // 2, (28 - nw) // 2
    out[top : top + nh, left : left + nw] = box
    # Shift so the centre of mass lands on the centre (13.5, 13.5), keeping the ink inside.
    total = out.sum()
    r, c = np.indices(out.shape)
    dr = int(np.clip(round(13.5 - (r * out).sum() / total), -top, 28 - (top + nh)))
    dc = int(np.clip(round(13.5 - (c * out).sum() / total), -left, 28 - (left + nw)))
    return np.rint(np.roll(out, (dr, dc), axis=(0, 1))).astype(np.uint8)


def font_files(kind: str = "test") -> list[str]:
    """TTF files for printed digits: Liberation (test) or matplotlib's own fonts (training)."""
    if kind == "train":
        import matplotlib

        root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        names = (
            "DejaVuSans.ttf",
            "DejaVuSans-Bold.ttf",
            "DejaVuSerif.ttf",
            "DejaVuSansMono.ttf",
            "STIXGeneral.ttf",
            "STIXGeneralBol.ttf",
            "cmr10.ttf",
            "cmss10.ttf",
        )
        return [str(root / n) for n in names if (root / n).exists()]
    found = sorted(
        glob.glob("/usr/share/fonts/truetype/liberation*/Liberation*-Regular.ttf")
        + glob.glob("/usr/share/fonts/truetype/liberation*/Liberation*-Bold.ttf")
    )
    return found or sorted(glob.glob("/usr/share/fonts/truetype/dejavu/DejaVu*.ttf")) or font_files("train")


def font_digit(d: int, font: str, height: int = 160) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    f = ImageFont.truetype(font, int(height * 1.3))
    canvas = Image.new("L", (int(height * 1.6), int(height * 1.8)), 0)
    ImageDraw.Draw(canvas).text((height * 0.2, height * 0.1), str(d), font=f, fill=255)
    return crop_ink(np.asarray(canvas, np.float32) / 255.0)


def crop_ink(a: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(a > 0.05)
    return a[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] if len(rows) else a


def pen_weight(a: np.ndarray, factor: float) -> np.ndarray:
    """Thicken (factor > 1) or thin (< 1) a coverage map's strokes."""
    import cv2

    if factor == 1:
        return a
    w = _width(a)
    r = int(round(abs(factor - 1) * w / 2))
    if r < 1:
        return a
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = cv2.dilate(a, k) if factor > 1 else cv2.erode(a, k)
    return out if out.max() > 0.3 else a


def _width(a: np.ndarray) -> float:
    import cv2

    m = (a > 0.5).astype(np.uint8)
    dt = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    return 2 * float(dt.max()) if m.any() else 1.0


def printed_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` printed digits, MNIST-style (N, 28, 28) uint8 with labels, from matplotlib's own
    fonts (never the Liberation fonts of the test photos), in varied pen weights."""
    rng = np.random.default_rng(seed)
    fonts = font_files("train")
    images, labels = [], []
    for i in range(n):
        d = i % 10
        a = pen_weight(font_digit(d, fonts[rng.integers(len(fonts))], 96), rng.choice([0.6, 1.0, 1.0, 1.6]))
        images.append(fit_mnist(a))
        labels.append(d)
    return np.stack(images), np.asarray(labels, np.int64)


def with_printed_digits(split: Split, fraction: float, seed: int) -> Split:
    """The split and printed digits (a `fraction` of its size) rendered MNIST-style."""
    images, labels = printed_digits(max(10, round(fraction * len(split))), seed)
    return Split(
        torch.cat([split.images, torch.from_numpy(images)]), torch.cat([split.labels, torch.from_numpy(labels)])
    )
