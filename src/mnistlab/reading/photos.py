"""Generated photos of digits on paper, to measure how well real-world inputs are read.

Nothing here comes from MNIST. Digits come from three sources:

- ``strokes``: handwriting-like digits drawn from per-digit stroke templates whose control
  points, slant, width and pen are jittered, then smoothed into curves;
- ``fonts``: printed digits in Debian's Liberation fonts (Sans, Serif, Mono; DejaVu when
  Liberation is missing). The ``printed`` augmentation of ``cnn-robust`` uses
  matplotlib's own fonts instead, so the printed digits here are unseen in training;
- ``sklearn``: scikit-learn's bundled 8x8 handwritten digits (UCI), upscaled, when
  scikit-learn is installed.

Each digit's ink is laid on a page under one condition of :data:`CONDITIONS` (paper noise,
specks, uneven light, shadow, coloured paper and ink, ruled/grid lines, JPEG, margins, thick
and thin pens, light on dark, rotation) or all of a phone photo's at once (``mixed``);
``numbers`` writes 3-5 digit numbers. Everything is seeded.

    python scripts/make_photos.py --out photos --per-condition 200
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._io import make_folder, write_bytes, write_text
from ..data.printed import crop_ink, font_digit, font_files, pen_weight

# Stroke templates: per digit, variants; each variant a list of strokes; each stroke a list
# of (x, y) points in a box 1 wide and 1 high (y down), and whether to smooth it.
_T = {
    0: [
        [
            (
                [
                    (0.5, 0.0),
                    (0.12, 0.2),
                    (0.05, 0.55),
                    (0.3, 0.95),
                    (0.7, 0.95),
                    (0.95, 0.5),
                    (0.85, 0.12),
                    (0.5, 0.0),
                    (0.45, 0.05),
                ],
                True,
            )
        ]
    ],
    1: [
        [([(0.5, 0.0), (0.5, 1.0)], False)],
        [([(0.25, 0.2), (0.55, 0.0), (0.55, 1.0)], False)],
        [([(0.3, 0.18), (0.55, 0.0), (0.52, 1.0)], False), ([(0.25, 1.0), (0.8, 1.0)], False)],
    ],
    2: [
        [
            ([(0.1, 0.25), (0.35, 0.02), (0.7, 0.05), (0.85, 0.3), (0.6, 0.6), (0.05, 1.0)], True),
            ([(0.05, 1.0), (0.95, 0.98)], False),
        ]
    ],
    3: [
        [
            ([(0.1, 0.12), (0.5, 0.0), (0.85, 0.2), (0.7, 0.42), (0.4, 0.48)], True),
            ([(0.4, 0.48), (0.85, 0.65), (0.8, 0.9), (0.45, 1.0), (0.05, 0.88)], True),
        ]
    ],
    4: [
        [([(0.7, 1.0), (0.7, 0.0), (0.05, 0.68), (0.95, 0.68)], False)],
        [([(0.25, 0.0), (0.1, 0.6), (0.9, 0.6)], False), ([(0.7, 0.2), (0.7, 1.0)], False)],
    ],
    5: [
        [
            ([(0.85, 0.02), (0.22, 0.0), (0.15, 0.45)], False),
            ([(0.15, 0.45), (0.55, 0.36), (0.9, 0.6), (0.75, 0.92), (0.4, 1.0), (0.05, 0.88)], True),
        ],
        [
            ([(0.22, 0.0), (0.15, 0.45), (0.55, 0.36), (0.9, 0.6), (0.75, 0.92), (0.4, 1.0), (0.05, 0.88)], True),
            ([(0.22, 0.02), (0.9, 0.0)], False),
        ],
    ],
    6: [
        [
            (
                [
                    (0.8, 0.02),
                    (0.4, 0.22),
                    (0.12, 0.6),
                    (0.25, 0.95),
                    (0.6, 1.0),
                    (0.88, 0.75),
                    (0.6, 0.5),
                    (0.25, 0.58),
                    (0.14, 0.7),
                ],
                True,
            )
        ]
    ],
    7: [
        [([(0.05, 0.02), (0.95, 0.0), (0.35, 1.0)], False)],
        [([(0.05, 0.05), (0.95, 0.0), (0.4, 1.0)], False), ([(0.35, 0.5), (0.85, 0.5)], False)],
    ],
    8: [
        [
            (
                [
                    (0.52, 0.48),
                    (0.18, 0.28),
                    (0.45, 0.0),
                    (0.82, 0.22),
                    (0.52, 0.48),
                    (0.12, 0.72),
                    (0.45, 1.0),
                    (0.9, 0.78),
                    (0.52, 0.48),
                ],
                True,
            )
        ]
    ],
    9: [
        [
            ([(0.85, 0.25), (0.55, 0.0), (0.15, 0.18), (0.25, 0.48), (0.65, 0.45), (0.88, 0.22)], True),
            ([(0.88, 0.22), (0.8, 0.6), (0.7, 1.0)], True),
        ]
    ],
}

CONDITIONS = (
    "clean",
    "noisy-paper",
    "specks",
    "uneven-light",
    "shadow",
    "colour",
    "ruled",
    "grid",
    "jpeg",
    "margins",
    "thick-pen",
    "thin-pen",
    "light-on-dark",
    "rotation",
    "mixed",
    "blur",
    "low-res",
    "narrow",
    "small",
)
# Soft strokes and narrow writing: each also as whole numbers, "numbers-<condition>".
SOFT_CONDITIONS = ("blur", "low-res", "narrow", "small")
NUMBER_SETS = ("numbers", *(f"numbers-{c}" for c in SOFT_CONDITIONS))


def _catmull_rom(points: np.ndarray, n: int = 12) -> np.ndarray:
    """A smooth curve through the points (centripetal enough for hand strokes)."""
    p = np.vstack([points[:1], points, points[-1:]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        for t in np.linspace(0, 1, n, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(
                0.5
                * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3)
            )
    out.append(p[-2])
    return np.asarray(out)


def stroke_digit(d: int, rng: np.random.Generator, height: int = 160, pen: float = 1.0) -> np.ndarray:
    """A handwriting-like digit as ink coverage (H, W) float32 in [0, 1]."""
    from PIL import Image, ImageDraw

    variant = _T[d][rng.integers(len(_T[d]))]
    width = height * rng.uniform(0.5, 0.75) * (0.45 if d == 1 else 1.0)
    slant = rng.uniform(-0.25, 0.3)
    ss = 2  # drawn at twice the size, then reduced: anti-aliased edges
    pen_px = max(2, int(ss * height * rng.uniform(0.06, 0.11) * pen))
    margin = pen_px + int(ss * height * 0.4)
    canvas = Image.new("L", (int(ss * (width + height * 0.6)) + 2 * margin, ss * height + 2 * margin), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, smooth in variant:
        q = np.asarray(pts, np.float64) + rng.normal(0, 0.035, (len(pts), 2))
        if smooth and len(q) > 2:
            q = _catmull_rom(q)
        x = (q[:, 0] * width + (1 - q[:, 1]) * slant * height * 0.4) * ss + margin
        y = q[:, 1] * height * ss + margin
        draw.line(list(zip(x.tolist(), y.tolist())), fill=255, width=pen_px, joint="curve")
        r = pen_px / 2
        for px, py in ((x[0], y[0]), (x[-1], y[-1])):
            draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    img = canvas.resize((canvas.width // ss, canvas.height // ss), Image.LANCZOS)
    return crop_ink(np.asarray(img, np.float32) / 255.0)


_SKLEARN: dict = {}


def sklearn_digit(d: int, rng: np.random.Generator, height: int = 160) -> np.ndarray | None:
    """One of scikit-learn's 8x8 digits (16 grey levels), upscaled smoothly; None without sklearn."""
    if "data" not in _SKLEARN:
        try:
            from sklearn.datasets import load_digits

            b = load_digits()
            _SKLEARN["data"] = (b.images, b.target)
        except ImportError:
            _SKLEARN["data"] = None
    if _SKLEARN["data"] is None:
        return None
    import cv2

    images, target = _SKLEARN["data"]
    pick = rng.choice(np.flatnonzero(target == d))
    a = np.pad(images[pick].astype(np.float32) / 16.0, 1)
    big = cv2.resize(a, (10 * height // 8, 10 * height // 8), interpolation=cv2.INTER_CUBIC)
    big = cv2.GaussianBlur(big, (0, 0), height / 40)
    return crop_ink(np.clip((big - 0.25) * 1.8, 0, 1))


def digit_ink(d: int, rng: np.random.Generator, height: int, source: str, pen: float = 1.0) -> np.ndarray:
    if source == "fonts":
        fonts = font_files("test")
        a = font_digit(d, fonts[rng.integers(len(fonts))], height)
        return pen_weight(a, pen)
    if source == "sklearn":  # already a broad pen: drawn as it is
        a = sklearn_digit(d, rng, height)
        if a is not None:
            return a
    return stroke_digit(d, rng, height, pen)


# ---------------------------------------------------------------- pages


def _smooth_field(rng, shape, cells: int, amp: float) -> np.ndarray:
    import cv2

    small = rng.normal(0, 1, (cells, cells)).astype(np.float32)
    return amp * cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _lines(rng, h, w, grid: bool) -> np.ndarray:
    """Ruled (and grid) lines as coverage, light blue or grey, 1-3 px."""
    a = np.zeros((h, w), np.float32)
    step = int(rng.uniform(0.09, 0.16) * h)
    thick = int(rng.integers(1, 4))
    off = int(rng.integers(0, step))
    for y in range(off, h, step):
        a[y : y + thick] = 1
    if grid:
        off = int(rng.integers(0, step))
        for x in range(off, w, step):
            a[:, x : x + thick] = 1
    return a


class Page:
    """A page under construction: RGB float paper, then layers of ink."""

    def __init__(self, rng, h, w, paper=(245, 243, 238)):
        self.rng, self.h, self.w = rng, h, w
        self.rgb = np.empty((h, w, 3), np.float32)
        self.rgb[:] = paper

    def lay(self, coverage: np.ndarray, colour, strength: float = 1.0, at: tuple[int, int] = (0, 0)) -> None:
        """Blend ink of `coverage` (0-1) with its top left at `at` (y, x); what falls off the page
        is dropped. Only the ink's box is touched (blending the whole page for each digit was
        most of a photo's making; outside the box the blend changed nothing)."""
        y, x = at
        cov = coverage[: self.h - y, : self.w - x]
        box = (slice(y, y + cov.shape[0]), slice(x, x + cov.shape[1]))
        c = np.clip(cov, 0, 1)[..., None] * strength
        self.rgb[box] = self.rgb[box] * (1 - c) + np.asarray(colour, np.float32) * c

    def light(self, field: np.ndarray) -> None:
        self.rgb *= field[..., None]

    def noise(self, sigma: float) -> None:
        self.rgb += self.rng.normal(0, sigma, self.rgb.shape).astype(np.float32)

    def image(self) -> np.ndarray:
        return np.clip(self.rgb, 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _shadow(rng, h, w) -> np.ndarray:
    """A soft shadow: a blurred polygon from one edge, darkening by 30-50%."""
    import cv2

    m = np.zeros((h, w), np.float32)
    side = rng.integers(4)
    cut = rng.uniform(0.3, 0.6)
    pts = {
        0: [(0, 0), (int(w * cut), 0), (int(w * rng.uniform(0.1, 0.5)), h), (0, h)],
        1: [(w, 0), (int(w * (1 - cut)), 0), (int(w * rng.uniform(0.5, 0.9)), h), (w, h)],
        2: [(0, 0), (w, 0), (w, int(h * rng.uniform(0.1, 0.5))), (0, int(h * cut))],
        3: [(0, h), (w, h), (w, int(h * (1 - cut))), (0, int(h * rng.uniform(0.5, 0.9)))],
    }[int(side)]
    cv2.fillPoly(m, [np.asarray(pts, np.int32)], 1.0)
    m = cv2.GaussianBlur(m, (0, 0), max(h, w) * rng.uniform(0.03, 0.08))
    return 1.0 - rng.uniform(0.3, 0.5) * m


def _specks(rng, h, w, n: int) -> np.ndarray:
    import cv2

    m = np.zeros((h, w), np.float32)
    for _ in range(n):
        r = float(rng.uniform(0.8, 0.006 * max(h, w) + 1.5))
        cv2.circle(m, (int(rng.integers(w)), int(rng.integers(h))), int(round(r)), 1.0, -1, cv2.LINE_AA)
    return m


def _settings(condition: str, rng) -> dict:
    """The knobs of one condition; `mixed` turns on a phone photo's at once."""
    s = dict(
        noise=2.0,
        texture=0.0,
        specks=0,
        light=False,
        shadow=False,
        colour=False,
        lines=None,
        jpeg=None,
        digit_frac=(0.45, 0.7),
        pen=1.0,
        light_on_dark=False,
        rotate=0.0,
        printed=0.0,
        blur=0.0,
        lowres=None,
        narrow=1.0,
        page=(300, 460),
        wander=(0.03, "page"),
    )
    if condition == "noisy-paper":
        s.update(noise=rng.uniform(4, 9), texture=rng.uniform(0.03, 0.06))
    elif condition == "specks":
        s.update(noise=3, specks=int(rng.integers(4, 15)))
    elif condition == "uneven-light":
        s.update(noise=3, light=True)
    elif condition == "shadow":
        s.update(noise=3, shadow=True)
    elif condition == "colour":
        s.update(noise=3, colour=True)
    elif condition in ("ruled", "grid"):
        s.update(noise=3, lines=condition)
    elif condition == "jpeg":
        s.update(noise=3, jpeg=int(rng.integers(15, 45)))
    elif condition == "margins":
        s.update(noise=3, digit_frac=(0.1, 0.22))
    elif condition == "thick-pen":
        s.update(noise=3, pen=rng.uniform(1.8, 2.6))
    elif condition == "thin-pen":
        s.update(noise=3, pen=rng.uniform(0.3, 0.5))
    elif condition == "light-on-dark":
        s.update(noise=4, light_on_dark=True)
    elif condition == "rotation":
        s.update(noise=3, rotate=rng.uniform(-12, 12))
    elif condition == "blur":  # out of focus: a Gaussian of 1-4 px at a 60 px digit height
        s.update(noise=3, blur=rng.uniform(1, 4) / 60)
    elif condition == "low-res":  # written 8-12 px tall, the scan then enlarged 5-8x
        s.update(noise=3, lowres=(rng.uniform(8, 12), rng.uniform(5, 8)))
    elif condition == "narrow":  # each digit 0.5-0.8 as wide as it was written
        s.update(noise=3, narrow=rng.uniform(0.5, 0.8))
    elif condition == "small":  # a 25-60 px digit in a 900-1400 px photo, its row wandering as a
        # writer's does (by its own height: by the page's, small digits would scatter off any row)
        s.update(noise=3, page=(900, 1400), digit_frac=(0.025, 0.045), wander=(0.03 / 0.55, "digit"))
    elif condition in ("mixed", "numbers"):
        s.update(
            noise=rng.uniform(3, 7),
            texture=rng.uniform(0.01, 0.04),
            specks=int(rng.integers(0, 5)),
            light=True,
            shadow=rng.random() < 0.6,
            lines=rng.choice(["ruled", None, None, "grid"]),
            jpeg=int(rng.integers(30, 75)),
            rotate=rng.uniform(-6, 6),
            printed=0.25,
            colour=rng.random() < 0.3,
            pen=rng.uniform(0.6, 1.6),
        )
    elif condition != "clean":
        raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}, numbers")
    return s


def _ink_colour(rng, s) -> tuple:
    if s["light_on_dark"]:
        return tuple(rng.uniform(215, 245, 3))
    pens = [(25, 25, 30), (20, 35, 140), (35, 40, 110), (50, 50, 55)]
    if s["colour"]:
        pens += [(150, 20, 25), (20, 100, 40), (80, 20, 120)]
    return pens[rng.integers(len(pens))]


def _paper(rng, s) -> tuple:
    if s["light_on_dark"]:
        return tuple(rng.uniform(20, 60, 3) * np.array([0.8, 1.0, 0.85]))
    if s["colour"]:
        return [(250, 235, 140), (200, 225, 245), (250, 210, 220), (205, 240, 200), (240, 225, 200)][rng.integers(5)]
    return tuple(rng.uniform(228, 252) + rng.uniform(-6, 4, 3))


def photo(inks: list[np.ndarray], s: dict, rng: np.random.Generator, gap: float = 0.25) -> tuple:
    """A page holding the given digits' ink, left to right, under settings `s` (of a condition).

    Returns the RGB uint8 image and each digit's box [x, y, w, h]."""
    h = int(rng.integers(*s["page"]))
    w = int(h * rng.uniform(1.0, 1.4)) if len(inks) == 1 else 0
    tall = max(i.shape[0] for i in inks)
    target = rng.uniform(*s["digit_frac"]) * h
    enlarge = 1.0
    if s["lowres"]:  # the page is made at the scan's low resolution, enlarged at the end
        digit_px, enlarge = s["lowres"]
        h = max(16, round(h * digit_px / target))
        w = round(w * digit_px / target) if w else 0
        target = digit_px
    k = target / tall
    inks = [_resize(i, k) for i in inks]
    if s["narrow"] != 1.0:
        inks = [_resize_xy(i, s["narrow"], 1.0) for i in inks]
    spacing = [int(rng.uniform(*sorted((gap * 0.4, gap))) * target) for _ in inks]
    row_w = sum(i.shape[1] for i in inks) + sum(spacing[:-1])
    if len(inks) > 1:
        w = int(row_w + rng.uniform(0.3, 0.8) * h)
    page = Page(rng, h, w, _paper(rng, s))
    if s["texture"]:
        page.light(1 + _smooth_field(rng, (h, w), 40, s["texture"]) + _smooth_field(rng, (h, w), 6, s["texture"]))
    if s["lines"]:
        line_colour = (150, 180, 225) if rng.random() < 0.7 else (160, 160, 160)
        page.lay(_lines(rng, h, w, s["lines"] == "grid"), line_colour, rng.uniform(0.6, 1.0))
    x = int(rng.uniform(0.1, 0.9) * (w - row_w))
    y0 = int(rng.uniform(0.1, 0.9) * (h - max(i.shape[0] for i in inks)))
    boxes = []
    wander = s["wander"][0] * (h if s["wander"][1] == "page" else target)  # sd of each digit's height on the row
    colour = _ink_colour(rng, s)
    strength = rng.uniform(0.75, 0.95) if s["light_on_dark"] else rng.uniform(0.85, 1.0)
    for ink, sp in zip(inks, spacing):
        y = int(np.clip(y0 + rng.normal(0, 1) * wander, 0, h - ink.shape[0]))
        page.lay(ink, colour, strength, at=(y, x))
        boxes.append([x, y, ink.shape[1], ink.shape[0]])
        x += ink.shape[1] + sp
    if s["specks"]:
        page.lay(_specks(rng, h, w, s["specks"]), colour if rng.random() < 0.5 else (60, 55, 50), 0.9)
    if s["light"]:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ang = rng.uniform(0, 2 * math.pi)
        ramp = np.cos(ang) * xx / w + np.sin(ang) * yy / h
        ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
        lo = rng.uniform(0.5, 0.75)
        vignette = 1 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
        page.light((lo + (1 - lo) * ramp) * vignette)
    if s["shadow"]:
        page.light(_shadow(rng, h, w))
    if s["blur"]:  # out of focus: the scene is blurred, the sensor's noise is not
        import cv2

        page.rgb = cv2.GaussianBlur(page.rgb, (0, 0), max(0.3, s["blur"] * target))
    page.noise(s["noise"] / enlarge)  # the scan's own noise, enlarged with it
    img = page.image()
    if enlarge > 1:
        import cv2

        img = cv2.resize(
            img, (round(img.shape[1] * enlarge), round(img.shape[0] * enlarge)), interpolation=cv2.INTER_CUBIC
        )
        boxes = [[round(v * enlarge) for v in b] for b in boxes]
    if s["rotate"]:
        img = _rotate(img, s["rotate"])
    if s["jpeg"]:
        img = _jpeg(img, s["jpeg"])
    return img, boxes


def _resize(a: np.ndarray, k: float) -> np.ndarray:
    import cv2

    h, w = a.shape
    size = (max(2, round(w * k)), max(2, round(h * k)))
    return cv2.resize(a, size, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)


def _resize_xy(a: np.ndarray, kx: float, ky: float) -> np.ndarray:
    import cv2

    h, w = a.shape
    return cv2.resize(a, (max(2, round(w * kx)), max(2, round(h * ky))), interpolation=cv2.INTER_AREA)


def _pick_source(rng, printed: float, sources: tuple[str, ...]) -> str:
    """Printed ("fonts") with probability `printed`, else one of the handwritten sources."""
    if printed and "fonts" in sources and rng.random() < printed:
        return "fonts"
    handwritten = [s for s in sources if s != "fonts"] or list(sources)
    return handwritten[rng.integers(len(handwritten))]


def make_set(
    condition: str,
    n: int,
    seed: int = 0,
    sources: tuple[str, ...] = ("strokes", "fonts", "sklearn"),
    progress: Callable[[int], None] | None = None,
) -> list[tuple[np.ndarray, str]]:
    """`n` photos of single digits (labels cycling 0-9) or of numbers ('numbers')."""
    if condition not in (*CONDITIONS, *NUMBER_SETS):
        raise ValueError(f"unknown condition {condition!r}; known: {', '.join((*CONDITIONS, *NUMBER_SETS))}")
    numbers = condition in NUMBER_SETS
    under = condition.removeprefix("numbers-")  # the condition the numbers are written under
    index = CONDITIONS.index(condition) if condition in CONDITIONS else 99 + NUMBER_SETS.index(condition)
    rng = np.random.default_rng([seed, index])
    if "sklearn" in sources and sklearn_digit(0, np.random.default_rng(0), 32) is None:
        sources = tuple(s for s in sources if s != "sklearn")
    out = []
    for i in range(n):
        s = _settings(under, rng)
        if numbers:
            length = int(rng.integers(3, 6))
            digits = [int(rng.integers(10)) for _ in range(length)]
            source = _pick_source(rng, 0.1, sources)  # one number in ten printed
            inks = [digit_ink(d, rng, 120, source, s["pen"]) for d in digits]
            gap = rng.uniform(-0.06, 0.0) if rng.random() < 0.1 else 0.3  # a tenth written touching
            img, _ = photo(inks, s, rng, gap=gap)
            out.append((img, "".join(map(str, digits))))
        else:
            d = i % 10
            source = _pick_source(rng, s["printed"], sources)
            img, _ = photo([digit_ink(d, rng, 160, source, s["pen"])], s, rng)
            out.append((img, str(d)))
        if progress:
            progress(i)
    return out


def write_set(folder: Path, items: list[tuple[np.ndarray, str]]) -> Path:
    """PNG files and labels.csv (file,label) in `folder`."""
    from PIL import Image

    make_folder(folder)
    rows = ["file,label"]
    for i, (img, label) in enumerate(items):
        name = f"{i:04d}.png"
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        write_bytes(folder / name, buf.getvalue())
        rows.append(f"{name},{label}")
    write_text(folder / "labels.csv", "\n".join(rows) + "\n")
    return folder
