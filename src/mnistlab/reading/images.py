"""Users' own digit images, from a clean drawing to a phone photo, made to look like MNIST.

One path serves ``predict``, ``read`` and the web page:

1. **load**: any Pillow-readable file (EXIF rotation applied, transparency as paper), refused
   above ``MAX_PIXELS`` before decoding; colour is reduced to the grey channel in which the
   ink stands out most from the paper (blue pen on yellow paper, red on white, ...).
2. **flatten**: at a working size (long side 256-640 px) the paper is estimated by a
   morphological closing larger than any pen stroke (on a quarter-size copy, then smoothed)
   and divided out, so uneven light and soft shadows vanish; ink darkness is 1 - image/paper.
   Light ink on a dark ground (chalk, a canvas drawing) is recognised and inverted first.
3. **mask**: a threshold from Otsu's method, never below the paper's own noise (median +
   5 MAD), with a short hysteresis (fainter ink kept within 2 pixels of strong ink).
4. **lines**: ruled or grid lines (thin, near-horizontal or near-vertical, crossing most of
   the image) are found by morphological opening, fitted and erased along a narrow band;
   strokes that crossed them are rejoined by a closing across the band.
5. **components**: connected components; specks (small against the largest) dropped, the
   digit chosen (large, not cut by the image border), broken strokes near it merged.
6. **MNIST's recipe**: the stroke width is brought near MNIST's (12% of the ink box's long
   side), the ink box fitted into 20x20 keeping its aspect ratio, the result placed in 28x28
   with its centre of mass at the centre.

OpenCV (headless build) does the image work: one binary wheel with numpy as its only
dependency, C++ morphology, thresholding and connected components, ~0.1 s to import.
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import not_regular
from ..data.printed import fit_mnist
from ..errors import ImageError

MAX_PIXELS = 4096 * 4096  # larger inputs are refused before they are decoded
WORK_MIN, WORK_MAX = 256, 640  # long side of the working image, in pixels
MNIST_STROKE = 0.12  # stroke width / long side of the ink box, measured on mnist-sample
MAX_INK_FRACTION = 0.45  # more of the image than this as ink: no digit can be picked out
MIN_INK_PIXELS = 12  # at the working size: fewer strong-ink pixels than this is no digit
GREY_GAMMA = 1.0  # contrast of the grey rendering (grey_ink); chosen by benchmarks/photos.py


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ImageError("image preprocessing needs OpenCV: pip install opencv-python-headless") from e
    return cv2


# ---------------------------------------------------------------- loading


def open_image(source: str | os.PathLike | bytes, name: str | None = None):
    """A decoded PIL image (EXIF orientation applied); one-line ImageError when unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = name or ("image" if isinstance(source, bytes) else str(source))
    if not isinstance(source, bytes) and (why := not_regular(source)):  # a FIFO would hang the read
        raise ImageError(f"{why}", subject=name)
    try:
        fh = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as e:
        raise ImageError(f"cannot open ({e.strerror or e})", subject=name) from None
    with fh:
        try:
            img = Image.open(fh)
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{img.width}x{img.height} is too large (max {MAX_PIXELS:,} pixels)", subject=name)
            img.load()
            img = ImageOps.exif_transpose(_reduced(img))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as e:
            raise ImageError(f"not a readable image ({type(e).__name__})", subject=name) from None
    return img


def _reduced(img):
    """A large image box-averaged by a whole factor to a long side of 1-2 working sizes, while
    still 8-bit: the float copies made later stay small (a 4096x4096 RGBA photo otherwise
    costs ~800 MB on its way to a 640-pixel working image)."""
    factor = max(img.size) // WORK_MAX
    if factor < 2:
        return img
    if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img = img.convert(
            "RGBA" if img.mode in ("P", "PA") or "transparency" in img.info else "L" if img.mode == "1" else "RGB"
        )
    return img.reduce(factor)


def to_grey(img) -> np.ndarray:
    """A PIL image to grey float32 in [0, 255]; transparency counts as white paper.

    Colour images keep the channel (luminance, R, G or B) with the most ink contrast."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), np.float32)
        alpha = rgba[..., 3] / 255.0
        if (alpha < 0.5).mean() > 0.5:
            # Mostly transparent (a drawing exported with no background): the strokes are
            # the opaque part, whatever their colour; drawn dark on white paper.
            return 255.0 * (1.0 - alpha)
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    if img.mode in ("L", "1", "I", "I;16", "F"):
        a = np.asarray(img.convert("F"), np.float32)
        hi = float(a.max()) if a.size else 0.0
        return a * (255.0 / hi) if hi > 255 else a  # 16-bit greys scaled down
    rgb = np.asarray(img.convert("RGB"), np.float32)
    lum = rgb @ np.float32([0.299, 0.587, 0.114])
    # The ink: the 1% of pixels furthest from the paper's median in luminance (subsampled).
    step = max(1, max(lum.shape) // 160)
    sub_l, sub = lum[::step, ::step], rgb[::step, ::step]
    dev = np.abs(sub_l - np.median(sub_l))
    ink = dev >= np.percentile(dev, 99)
    sign = np.sign(sub_l[ink].mean() - np.median(sub_l))

    def contrast(ch: np.ndarray) -> float:
        med = float(np.median(ch))
        mad = float(np.median(np.abs(ch - med))) + 1.0
        diff = float(ch[ink].mean()) - med
        return abs(diff) / mad if np.sign(diff) == sign else -1.0

    # A channel where the ink stands out more than in luminance, on the same side of the paper
    # (never one where blue ink on yellow paper turns lighter than the paper).
    best = max(range(3), key=lambda c: contrast(sub[..., c]))
    if contrast(sub[..., best]) > 1.25 * contrast(sub_l):
        return np.ascontiguousarray(rgb[..., best])
    return lum


def load_grey(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """Read an image file (or its bytes) as a grey float32 array in [0, 255]."""
    name = name or ("image" if isinstance(source, bytes) else str(source))
    grey = to_grey(open_image(source, name))
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ImageError(f"expected a 2-D image, got shape {grey.shape}", subject=name)
    return grey


# ---------------------------------------------------------------- finding the ink


@dataclass
class Ink:
    """The ink of one image at working size (``scale`` working pixels per input pixel)."""

    grey: np.ndarray  # (H, W) uint8 working image, ink dark
    darkness: np.ndarray  # (H, W) float32 in [0, 1]: 1 - grey/paper
    mask: np.ndarray  # (H, W) uint8 0/1 ink, lines removed
    lines: np.ndarray  # (H, W) uint8 0/1 pixels erased as ruled/grid lines
    scale: float
    inverted: bool  # the input was light ink on a dark ground
    offset: tuple[int, int] = (0, 0)  # (x, y) of the working image's origin in the input, in input pixels

    def box(self, blob: Blob) -> list[int]:
        """[x, y, w, h] of a blob in the input image's pixels."""
        x, y, w, h = blob.box(self.scale)
        return [x + self.offset[0], y + self.offset[1], w, h]


def _working_size(grey: np.ndarray) -> tuple[np.ndarray, float]:
    cv2 = _cv2()
    h, w = grey.shape
    long = max(h, w)
    scale = min(1.0, WORK_MAX / long) if long > WORK_MAX else max(1.0, WORK_MIN / long)
    if scale == 1.0:
        return grey.astype(np.float32), 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(grey.astype(np.float32), size, interpolation=interp), scale


def _light_on_dark(work: np.ndarray) -> bool:
    """Whether the ink is lighter than its ground: compare the mass of strong deviations on
    each side of a local background (a median filter over a quarter of the image)."""
    cv2 = _cv2()
    h, w = work.shape
    f = 64.0 / max(h, w)
    small = cv2.resize(work, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
    bg = cv2.medianBlur(np.clip(small, 0, 255).astype(np.uint8), 15).astype(np.float32)
    r = small - bg
    noise = 1.4826 * float(np.median(np.abs(r))) + 2.0
    light = np.clip(r - 3 * noise, 0, None).sum()
    dark = np.clip(-r - 3 * noise, 0, None).sum()
    if light == dark == 0:  # no local structure: judge by which side of the median most pixels sit
        return float(np.median(work)) < 110
    return light > dark


def _line_kernel(length: int, degrees: float) -> np.ndarray:
    cv2 = _cv2()
    k = np.zeros((length | 1, length | 1), np.uint8)
    c = (length | 1) // 2
    dx, dy = c * np.cos(np.radians(degrees)), c * np.sin(np.radians(degrees))
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1, 1)
    return k


def _line_candidates(m: np.ndarray) -> list[tuple[float, float, float, int, int]]:
    """Near-horizontal thin straight runs in a 0/1 mask: (slope, intercept, thickness, x0, x1).

    Runs are found by opening with a line-shaped kernel at the angle (within 8 degrees) that
    keeps the most ink, so lines on a slightly turned page are found too."""
    cv2 = _cv2()
    h, w = m.shape
    length = max(15, w // 8)
    fat = cv2.dilate(m, np.ones((3, 3), np.uint8))  # 1-px lines match a kernel at any phase
    half = cv2.resize(fat, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_NEAREST)
    angles = np.arange(-8, 8.5, 1.0)
    kept = [cv2.morphologyEx(half, cv2.MORPH_OPEN, _line_kernel(length // 2, a)).sum() for a in angles]
    best = int(np.argmax(kept))
    if kept[best] < 0.1 * w / 2:
        return []
    opened = np.zeros_like(m)
    for a in angles[max(0, best - 1) : best + 2]:
        opened |= cv2.morphologyEx(fat, cv2.MORPH_OPEN, _line_kernel(length, a))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(opened & m, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if bw < 0.3 * w:
            continue
        ys, xs = np.nonzero(lab[y : y + bh, x : x + bw] == i)
        slope, icpt = np.polyfit(xs.astype(np.float64) + x, ys.astype(np.float64) + y, 1)
        if abs(slope) <= 0.15:  # within ~8 degrees of the axis
            out.append((slope, icpt, area / bw, int(x), int(x + bw)))
    return out


def _band(shape, slope, icpt, half) -> np.ndarray:
    h, w = shape
    centre = slope * np.arange(w)[None, :] + icpt
    return (np.abs(np.arange(h)[:, None] - centre) <= half).astype(np.uint8)


def _remove_lines(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Erase ruled/grid lines: thin straight runs, near-horizontal or near-vertical, thinner
    than the pen's strokes, that run from edge to edge or come as a family of three or more."""
    cv2 = _cv2()
    found = {axis: _line_candidates(mask if axis == 0 else mask.T) for axis in (0, 1)}
    if not any(found.values()):
        return mask, np.zeros_like(mask)
    bands = np.zeros_like(mask)
    for axis, cands in found.items():
        for slope, icpt, thick, _, _ in cands:
            b = _band(mask.shape[::-1] if axis else mask.shape, slope, icpt, thick / 2 + 1)
            bands |= b.T if axis else b
    pen = stroke_width(mask & (1 - bands)) if (mask & (1 - bands)).any() else 0.0
    erased = np.zeros_like(mask)
    for axis, cands in found.items():
        m = mask.T.copy() if axis else mask.copy()
        h, w = m.shape
        # A family of ruling: three or more long runs, much thinner than the pen.
        ruling = [c for c in cands if c[4] - c[3] >= 0.6 * w and c[2] <= max(2.5, 0.6 * pen)]
        band = np.zeros_like(m)
        for slope, icpt, thick, x0, x1 in cands:
            spans = x0 <= 0.1 * w and x1 >= 0.9 * w and thick <= max(3.0, 0.8 * pen)
            if not (spans or (len(ruling) >= 3 and (slope, icpt, thick, x0, x1) in ruling)):
                continue
            band |= _band(m.shape, slope, icpt, thick / 2 + 2)
        if not band.any():
            continue
        cut = m & band
        kept = m & (1 - band)
        # Strokes that crossed a line have ink on both sides of the band: rejoin them.
        span = int(2 * (band.sum(0).max() // 2) + 3)
        rejoined = cv2.morphologyEx(kept, cv2.MORPH_CLOSE, np.ones((span, 1), np.uint8)) & cut
        kept |= rejoined
        gone = cut & (1 - rejoined)
        mask = kept.T.copy() if axis else kept
        erased |= gone.T if axis else gone
    return mask, erased


DETAIL_FRACTION = 0.35  # ink spanning less than this of a reduced photo is looked at again, closer


def find_ink(grey: np.ndarray, name: str = "image") -> Ink:
    """Flatten the paper, threshold, erase lines: the ink mask of a grey image (0-255). A small
    digit or number in a large photo (its ink spanning under DETAIL_FRACTION of the reduced
    working image) is looked at again in a crop around it, at the input's full detail: at the
    working size a 40-pixel digit of a 1,400-pixel photo is 18 pixels tall, its loops closed."""
    ink = _find_ink_once(grey, name)
    if ink.scale >= 1:
        return ink
    ys, xs = np.nonzero(ink.mask)
    h, w = ink.mask.shape
    bh, bw = int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1
    if max(bh / h, bw / w) >= DETAIL_FRACTION:
        return ink
    margin = 0.6 * max(bh, bw)
    x0, y0 = (max(0, int((v.min() - margin) / ink.scale)) for v in (xs, ys))
    x1, y1 = (int((v.max() + 1 + margin) / ink.scale) for v in (xs, ys))
    try:
        inner = _find_ink_once(np.asarray(grey)[y0:y1, x0:x1], name)
    except ImageError:
        return ink
    return dataclasses.replace(inner, offset=(x0, y0))


def _find_ink_once(grey: np.ndarray, name: str = "image") -> Ink:
    cv2 = _cv2()
    a = np.asarray(grey, np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ImageError(f"expected a 2-D grey image, got shape {a.shape}", subject=name)
    if not np.isfinite(a).all():
        raise ImageError("holds values that are not finite numbers", subject=name)
    work, scale = _working_size(np.clip(a, 0, 255))
    inverted = _light_on_dark(work)
    if inverted:
        work = 255.0 - work
    h, w = work.shape
    # Paper: a closing (max then min filter) wider than any stroke removes the ink and keeps
    # the light; done at quarter size, then smoothed, so it is cheap and has no blocky edges.
    q = 4 if min(h, w) >= 64 else 1
    small = cv2.resize(work, (max(1, w // q), max(1, h // q)), interpolation=cv2.INTER_AREA)
    k = max(5, (max(small.shape) // 5) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    paper_small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel)
    paper_small = cv2.GaussianBlur(paper_small, (0, 0), k / 4)
    paper = cv2.resize(paper_small, (w, h), interpolation=cv2.INTER_LINEAR)
    paper = np.maximum(paper, work)  # the paper is never darker than what lies on it
    darkness = np.clip(1.0 - work / np.maximum(paper, 8.0), 0.0, 1.0)
    sigma = max(0.7, max(h, w) / 400)
    darkness = cv2.GaussianBlur(darkness, (0, 0), sigma)  # sensor noise, JPEG blocks

    d8 = np.clip(darkness * 255, 0, 255).astype(np.uint8)
    otsu = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] / 255.0
    # The paper's own noise, measured on Otsu's paper class (ink left out, however much).
    paper_px = darkness[darkness < otsu] if otsu > 0 else darkness
    med = float(np.median(paper_px)) if paper_px.size else 0.0
    noise = 1.4826 * float(np.median(np.abs(paper_px - med))) if paper_px.size else 0.0
    high = max(otsu, med + 5 * noise, 0.12)
    # Counted, not a percentile: a small digit in a large photo is far less than 0.1% of it.
    if int((darkness >= high).sum()) < MIN_INK_PIXELS or darkness.max() < 0.15:
        raise ImageError("no ink found (blank or nearly uniform image)", subject=name)
    strong = (darkness >= high).astype(np.uint8)
    # Hysteresis, kept short: fainter ink (0.6 of the threshold) is kept within a few pixels
    # of strong ink, so a stroke's soft edges and faint ends stay, but the hysteresis never
    # runs out along faint ruling or a shadow's edge.
    reach = cv2.dilate(strong, np.ones((5, 5), np.uint8))
    mask = strong | ((darkness >= 0.6 * high).astype(np.uint8) & reach)
    mask, lines = _remove_lines(mask)
    if mask.mean() > MAX_INK_FRACTION:
        raise ImageError(f"no digit found (ink covers {mask.mean():.0%} of the image)", subject=name)
    if not mask.any():
        raise ImageError("no ink found once lines were removed", subject=name)
    grey8 = np.clip(work, 0, 255).astype(np.uint8)
    return Ink(grey8, darkness, mask, lines, scale, inverted)


# ---------------------------------------------------------------- components


@dataclass
class Blob:
    """One or more connected components taken as one digit (working-size pixels)."""

    x: int
    y: int
    w: int
    h: int
    area: int
    labels: list[int] = field(default_factory=list)

    @property
    def x1(self) -> int:
        return self.x + self.w

    @property
    def y1(self) -> int:
        return self.y + self.h

    def box(self, scale: float = 1.0) -> list[int]:
        """[x, y, w, h] in the input image's pixels (`scale` working pixels per input pixel)."""
        return [int(round(v / scale)) for v in (self.x, self.y, self.w, self.h)]

    def merged(self, other: Blob) -> Blob:
        x, y = min(self.x, other.x), min(self.y, other.y)
        return Blob(
            x,
            y,
            max(self.x1, other.x1) - x,
            max(self.y1, other.y1) - y,
            self.area + other.area,
            self.labels + other.labels,
        )

    def gap(self, other: Blob) -> float:
        """Distance between the two boxes (0 when they overlap)."""
        dx = max(0, max(self.x, other.x) - min(self.x1, other.x1))
        dy = max(0, max(self.y, other.y) - min(self.y1, other.y1))
        return float(np.hypot(dx, dy))

    def x_overlap(self, other: Blob) -> float:
        """Shared width as a fraction of the narrower box."""
        shared = min(self.x1, other.x1) - max(self.x, other.x)
        return max(0.0, shared) / max(1, min(self.w, other.w))


def components(mask: np.ndarray) -> tuple[np.ndarray, list[Blob]]:
    """Connected components of the mask (8-connected) as blobs, specks dropped."""
    cv2 = _cv2()
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    blobs = [Blob(int(s[0]), int(s[1]), int(s[2]), int(s[3]), int(s[4]), [i]) for i, s in enumerate(stats) if i]
    if not blobs:
        return lab, []
    biggest = max(b.area for b in blobs)
    tallest = max(b.h for b in blobs)
    # A speck: small beside the largest ink and short beside the tallest.
    min_area = max(4, 0.02 * biggest, 0.0002 * mask.size)
    return lab, [b for b in blobs if b.area >= min_area or b.h >= 0.5 * tallest]


def check_not_scattered(blobs: list[Blob], ink: Ink, name: str) -> None:
    """Noise or texture, not writing: many marks and none holding a quarter of the ink."""
    if len(blobs) > 30 and max(b.area for b in blobs) < 0.25 * int(ink.mask.sum()):
        raise ImageError(f"no digit found (ink scattered in {len(blobs)} marks: noise or texture?)", subject=name)


def _touches_border(b: Blob, shape) -> bool:
    h, w = shape
    return b.x <= 0 or b.y <= 0 or b.x1 >= w or b.y1 >= h


def choose_digit(blobs: list[Blob], shape) -> Blob:
    """The digit of a one-digit image: the largest blob not cut by the border (a cut one
    counts a third), with the broken strokes near it."""
    if not blobs:
        raise ImageError("no digit found")
    score = lambda b: b.area * (0.33 if _touches_border(b, shape) else 1.0)
    main = max(blobs, key=score)
    rest = [b for b in blobs if b is not main]
    grown = True
    while grown:
        grown = False
        for b in list(rest):
            reach = 0.35 * max(main.h, main.w)
            if b.area >= 0.03 * main.area and main.gap(b) <= reach and not _touches_border(b, shape):
                main = main.merged(b)
                rest.remove(b)
                grown = True
    return main


def _merge_columns(blobs: list[Blob]) -> list[Blob]:
    """Left to right, boxes sharing most of a column merged: the pieces of one digit."""
    merged: list[Blob] = []
    for b in sorted(blobs, key=lambda b: b.x):
        if merged and merged[-1].x_overlap(b) >= 0.5:
            merged[-1] = merged[-1].merged(b)
        else:
            merged.append(b)
    return merged


def segment_digits(blobs: list[Blob], shape: tuple[int, int]) -> list[Blob]:
    """A written number's digits, left to right: broken strokes merged, specks and stray
    marks off the row dropped. Touching digits are split later, when a model can judge."""
    if not blobs:
        return []
    tallest = max(b.h for b in blobs)
    tall = [b for b in blobs if b.h >= 0.35 * tallest]
    # A digit is about as tall as the row's others; a flat mark (a dash, a scrap of ruling)
    # is no digit of its own.
    typical = float(np.median([b.h for b in tall]))
    is_digit = lambda b: b.h >= max(0.35 * tallest, 0.5 * typical) and b.w <= 3 * b.h  # noqa: E731
    merged = _merge_columns([b for b in blobs if is_digit(b)])
    small = [b for b in blobs if not is_digit(b)]
    if not merged:
        return []
    height = float(np.median([b.h for b in merged]))
    # Small pieces (a 5's flag, a 7's bar) join the digit whose column they share; marks
    # wider than that digit or cut by the image's edge (scraps of ruling, shadow) do not.
    orphans = []
    for s in small:
        if _touches_border(s, shape):
            continue
        host = max(merged, key=lambda b: b.x_overlap(s))
        if host.x_overlap(s) >= 0.5 and host.gap(s) <= 0.3 * height and s.w <= 1.2 * host.w:
            merged[merged.index(host)] = host.merged(s)
        elif host.x_overlap(s) < 0.5:
            orphans.append(s)
    # A digit broken into small pieces only (a faint 0 in two halves) is tall once merged.
    merged += [b for b in _merge_columns(orphans) if b.h >= 0.5 * height and b.w <= 3 * b.h]
    merged.sort(key=lambda b: b.x)
    # The row: keep digits whose vertical middle lies within the row's band.
    mid = float(np.median([b.y + b.h / 2 for b in merged]))
    return [b for b in merged if abs(b.y + b.h / 2 - mid) <= 0.6 * height]


def blob_mask(lab: np.ndarray, blob: Blob, pad: int = 0) -> np.ndarray:
    """The blob's own pixels in its box (0/1 uint8), `pad` pixels of margin around."""
    y0, x0 = max(0, blob.y - pad), max(0, blob.x - pad)
    crop = lab[y0 : blob.y1 + pad, x0 : blob.x1 + pad]
    return np.isin(crop, blob.labels).astype(np.uint8)


def split_columns(mask: np.ndarray, n: int) -> list[tuple[int, int]]:
    """Cut a blob's mask into n column ranges at the thinnest columns near the even splits."""
    w = mask.shape[1]
    ink = mask.sum(0).astype(np.float64)
    cuts = [0]
    for k in range(1, n):
        centre = k * w / n
        lo, hi = int(max(cuts[-1] + 1, centre - 0.3 * w / n)), int(min(w - 1, centre + 0.3 * w / n))
        if hi <= lo:
            return []
        cuts.append(lo + int(np.argmin(ink[lo:hi])))
    cuts.append(w)
    return list(zip(cuts[:-1], cuts[1:]))


# ---------------------------------------------------------------- MNIST's recipe


def stroke_width(mask: np.ndarray) -> float:
    """Median width of the strokes of a 0/1 mask: twice the distance to the paper along
    the strokes' ridges."""
    cv2 = _cv2()
    mask = np.pad(mask, 1)  # paper all round, even for a crop that is ink edge to edge
    dt = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    ridge = (dt >= cv2.dilate(dt, np.ones((3, 3), np.uint8))) & (mask > 0)
    return 2.0 * float(np.median(dt[ridge])) if ridge.any() else 1.0


def holes(mask: np.ndarray) -> int:
    """How many loops a 0/1 mask closes: the paper regions it encloses (not touching the border)."""
    cv2 = _cv2()
    n, _ = cv2.connectedComponents((np.pad(mask, 1) == 0).astype(np.uint8), connectivity=4)
    return n - 2  # less the label of the ink and the one paper region outside, round the padding


def stroke_radius(mask: np.ndarray) -> int:
    """The disc radius that brings the strokes near MNIST's width: > 0 thickens, < 0 thins, 0
    leaves them. Never one that closes a loop or a gap (thickening a 3 must not make an 8 of it,
    nor an open 4 closed) or breaks a stroke (thinning a bold 0 must not make two brackets)."""
    cv2 = _cv2()
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return 0
    long = max(np.ptp(ys), np.ptp(xs)) + 1
    target = MNIST_STROKE * long
    width = stroke_width(mask)
    r = int(round((target - width) / 2))
    if r > 0 and width < 0.75 * target:
        loops = holes(mask)
        for k in range(r, 0, -1):
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
            if holes(cv2.dilate(mask, disc)) == loops:
                return k
        return 0
    if r < 0 and width > 1.5 * target:
        r = min(-r, int(0.2 * width))  # at most a fifth of the stroke from each side
        if r >= 1:
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
            if cv2.connectedComponents(cv2.erode(mask, disc))[0] <= cv2.connectedComponents(mask)[0]:
                return -r
    return 0


def normalise_stroke(mask: np.ndarray, grey: np.ndarray | None = None) -> np.ndarray:
    """Thicken thin pens and thin thick markers toward MNIST's stroke width (``stroke_radius``),
    on the 0/1 mask, or on the grey ink when given (a grey max or min filter, so the soft edges
    stay soft)."""
    cv2 = _cv2()
    r = stroke_radius(mask)
    img = mask if grey is None else grey
    if r == 0:
        return img
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(r) + 1, 2 * abs(r) + 1))
    return cv2.dilate(img, disc) if r > 0 else cv2.erode(img, disc)


def grey_ink(mask: np.ndarray, darkness: np.ndarray) -> np.ndarray:
    """The digit's ink as MNIST has it, grey rather than 0/1: the flattened paper's darkness on
    the chosen component grown by a pixel (so soft edges are kept and not cut at the threshold),
    scaled so the strokes' cores are 1. A blurred 3 whose gaps the threshold closed keeps them
    as fainter ink, where a 0/1 mask shows one solid blob."""
    cv2 = _cv2()
    grown = cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(np.float32)
    d = np.asarray(darkness, np.float32) * grown
    core = d[mask > 0]
    top = float(np.percentile(core, 90)) if core.size else 1.0
    g = np.clip(d / max(top, 1e-3), 0.0, 1.0)
    return g if GREY_GAMMA == 1 else g**GREY_GAMMA


def render(mask: np.ndarray, darkness: np.ndarray | None = None) -> np.ndarray:
    """A digit's 0/1 mask -> MNIST-style (28, 28) uint8: grey from `darkness` (the same crop of
    the flattened paper's darkness, see ``grey_ink``) when given, else from the mask alone."""
    if darkness is None:
        return fit_mnist(normalise_stroke(mask).astype(np.float32))
    return fit_mnist(normalise_stroke(mask, grey_ink(mask, darkness)))


def crop(a: np.ndarray, blob: Blob, pad: int = 0) -> np.ndarray:
    """`a` (working-size, like the mask) cut to the blob's box with `pad` pixels of margin."""
    y0, x0 = max(0, blob.y - pad), max(0, blob.x - pad)
    return a[y0 : blob.y1 + pad, x0 : blob.x1 + pad]


# ---------------------------------------------------------------- the one path


@dataclass
class Prepared:
    """A one-digit image made MNIST-like, with every stage kept for pictures."""

    image: np.ndarray  # (28, 28) uint8, what the model sees
    ink: Ink
    digit: Blob  # the chosen component(s), working-size pixels
    chosen: np.ndarray  # (H, W) uint8 0/1 mask of the chosen component(s)

    def box(self) -> list[int]:
        """[x, y, w, h] of the digit in the input image's pixels."""
        return self.ink.box(self.digit)


def prepare(grey: np.ndarray, name: str = "image") -> Prepared:
    """A grey image holding one digit -> what the model sees, and how it got there."""
    ink = find_ink(grey, name)
    lab, blobs = components(ink.mask)
    if not blobs:
        raise ImageError("no digit found", subject=name)
    check_not_scattered(blobs, ink, name)
    digit = choose_digit(blobs, ink.mask.shape)
    chosen = np.zeros_like(ink.mask)
    chosen[digit.y : digit.y1, digit.x : digit.x1] = blob_mask(lab, digit)
    image = render(blob_mask(lab, digit, pad=2), crop(ink.darkness, digit, pad=2))
    return Prepared(image, ink, digit, chosen)


def preprocess(grey: np.ndarray, name: str = "image") -> np.ndarray:
    """Any-size grey array (0-255) holding one digit -> MNIST-style (28, 28) uint8."""
    return prepare(grey, name).image


def load_image(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """Read an image file (or its bytes) and return it MNIST-style: (28, 28) uint8."""
    name = name or ("image" if isinstance(source, bytes) else str(source))
    return preprocess(load_grey(source, name), name)


def is_image_path(arg: str) -> bool:
    """A CLI argument names an image file (not a dataset id) when it is not all digits."""
    return not arg.isdigit() or Path(arg).is_file()


# ---------------------------------------------------------------- pictures of the steps


def stage_images(prep: Prepared) -> list[tuple[str, np.ndarray]]:
    """Each stage of `prepare` as an RGB uint8 picture: input, flattened paper, ink mask
    (erased lines in red), chosen component(s) (green; other ink red), the 28x28 result."""
    ink = prep.ink
    grey = np.repeat(ink.grey[..., None], 3, 2)
    flat = np.repeat((255 - np.clip(ink.darkness * 255, 0, 255)).astype(np.uint8)[..., None], 3, 2)
    mask = np.repeat((ink.mask * 255)[..., None], 3, 2).astype(np.uint8)
    mask[ink.lines > 0] = (220, 40, 40)
    chosen = (grey * 0.45 + 140).astype(np.uint8)
    chosen[(ink.mask > 0) & (prep.chosen == 0)] = (220, 60, 60)
    chosen[prep.chosen > 0] = (30, 160, 60)
    first = "input (light ink: inverted)" if ink.inverted else "input"
    return [
        (first, grey),
        ("paper flattened", flat),
        ("ink mask", mask),
        ("chosen", chosen),
        ("28x28", np.repeat(prep.image[..., None], 3, 2)),
    ]


def boxes_image(grey: np.ndarray, boxes: list[list[int]], texts: list[str], unsure: list[bool]) -> np.ndarray:
    """The input image (grey 0-255, any size) with each box drawn and its reading above it;
    unsure readings in orange."""
    cv2 = _cv2()
    a = np.clip(np.asarray(grey, np.float32), 0, 255).astype(np.uint8)
    f = min(1.0, 1600 / max(a.shape))  # large photos drawn at a readable size
    if f < 1:
        a = cv2.resize(a, (round(a.shape[1] * f), round(a.shape[0] * f)), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(np.repeat(a[..., None], 3, 2))
    thick = max(1, round(max(a.shape) / 300))
    for (x, y, w, h), text, low in zip(boxes, texts, unsure):
        colour = (240, 140, 0) if low else (0, 170, 60)
        p0, p1 = (round(x * f), round(y * f)), (round((x + w) * f), round((y + h) * f))
        cv2.rectangle(rgb, p0, p1, colour, thick)
        scale = max(0.4, (h * f) / 110)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = p0[1] - 4 if p0[1] - th - 4 >= 0 else min(rgb.shape[0] - 2, p1[1] + th + 4)  # above, else below
        cv2.putText(rgb, text, (p0[0], ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return rgb
