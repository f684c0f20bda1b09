"""Is an explanation faithful to the model? Two checks on attribution maps.

- **Deletion / insertion**: erase a digit's ink pixels from the most to the least attributed
  (set to the background, black) and follow the explained class's probability; the faster it
  falls, the better the map picked the pixels that mattered. Insertion starts from the digit
  with all its ink erased and puts the pixels back in the same order; the faster it rises, the
  better. Each area under the curve is compared with random orders that also take ink only:
  erasing background changes nothing, so a random order over the whole image would be a
  baseline any map beats.
- **Randomisation** (Adebayo et al., NeurIPS 2018): re-initialise every weight and explain the
  same digits for the same classes again. A map that explains the *model* must change: the
  median Spearman rank correlation over each digit's ink pixels, trained against randomised,
  should be small. Methods that multiply by the input (integrated gradients) keep the digit's
  shape whatever the weights: a high figure there is the lesson, not a bug.

    from mnistlab.faithfulness import deletion, randomization
    d = deletion(model, images, "ig")          # d.beats_random, d.insertion_beats_random
    r = randomization(model, images, "saliency")   # r.median
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from ..calibrate import calibrated
from ..errors import ConfigError
from ..infer import batched
from .maps import explain

INK = 0.1  # a pixel brighter than this (of 1) is ink
STEPS = 20  # points on a deletion curve, besides the start
RANDOM_ORDERS = 5  # random ink-first orders a map is compared with (their mean area)
MAX_DIGITS = 10_000


def ink_of(images: torch.Tensor) -> torch.Tensor:
    """(N, 784) bool: each digit's ink pixels."""
    return images.reshape(len(images), -1) > INK


def _probs(model, x: torch.Tensor) -> torch.Tensor:
    """(N, classes) calibrated probabilities for float images, batched, on the CPU."""
    return calibrated(model, batched(model, model, x, as_images=False))


def ink_order(scores: torch.Tensor, ink: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N, 784) pixel indices, ink first from the highest score down, ties in a seeded random
    order (not the pixels' reading order), then the background."""
    s = torch.where(ink, scores.float(), torch.tensor(-torch.inf))
    shuffle = torch.rand(s.shape, generator=torch.Generator().manual_seed(seed)).argsort(1)
    return shuffle.gather(1, torch.argsort(s.gather(1, shuffle), dim=1, descending=True, stable=True))


def _ranks(scores: torch.Tensor, ink: torch.Tensor) -> torch.Tensor:
    """(N, 784) position of each pixel in `ink_order`: the first k are those with rank < k."""
    order = ink_order(scores, ink)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return ranks


CHUNK = 128  # digits whose (steps + 1) images are built at once (128 x 21 x 784 floats: 8 MB)


def curves(
    model,
    images: torch.Tensor,
    scores: torch.Tensor,
    targets: torch.Tensor,
    *,
    insertion: bool = False,
    steps: int = STEPS,
) -> torch.Tensor:
    """(N, steps + 1) probability of each digit's target class as its ink pixels are erased
    (or, with `insertion`, put back onto the erased digit) in the order of `scores`, highest
    first, at 0, 1/steps, ..., all of the ink."""
    targets = torch.as_tensor(targets).reshape(-1).cpu()
    scores = torch.as_tensor(scores).reshape(len(images), -1).cpu()
    return torch.cat(
        [
            _curves(model, images[i : i + CHUNK], scores[i : i + CHUNK], targets[i : i + CHUNK], insertion, steps)
            for i in range(0, len(images), CHUNK)
        ]
    )


def _curves(model, images, scores, targets, insertion: bool, steps: int) -> torch.Tensor:
    n = len(images)
    flat = images.reshape(n, -1).float()
    ink = ink_of(images)
    ranks = _ranks(scores.reshape(n, -1), ink)
    counts = ink.sum(1, keepdim=True).float()
    fractions = torch.linspace(0, 1, steps + 1)
    k = torch.round(counts * fractions[None, :])  # (N, S+1) pixels changed at each point
    changed = ranks[:, None, :] < k[:, :, None]  # (N, S+1, 784)
    if insertion:  # start from no ink; put the first k back
        start = torch.where(ink, torch.zeros(()), flat)
        x = torch.where(changed, flat[:, None, :], start[:, None, :])
    else:
        x = torch.where(changed, torch.zeros(()), flat[:, None, :])
    p = _probs(model, x.reshape(-1, 1, 28, 28))
    return p[torch.arange(len(p)), targets.repeat_interleave(steps + 1)].reshape(n, steps + 1)


def area(curve: torch.Tensor) -> torch.Tensor:
    """Area under curves sampled evenly over [0, 1] (trapezoids), one per row."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


@dataclass
class Deletion:
    method: str
    n: int
    deletion: np.ndarray  # (N,) area under the method's deletion curve (lower is better)
    deletion_random: np.ndarray  # (N,) mean area over random ink-first orders
    insertion: np.ndarray  # (N,) area under the insertion curve (higher is better)
    insertion_random: np.ndarray
    curve: np.ndarray = field(repr=False)  # (S+1,) mean deletion curve, the method's order
    curve_random: np.ndarray = field(repr=False)

    @property
    def beats_random(self) -> float:
        """Fraction of digits whose deletion curve falls below (its area under) random's."""
        return float(np.mean(self.deletion < self.deletion_random))

    @property
    def insertion_beats_random(self) -> float:
        return float(np.mean(self.insertion > self.insertion_random))

    def to_dict(self) -> dict:
        return {
            "eval": "deletion",
            "method": self.method,
            "n": self.n,
            "deletion_beats_random": round(self.beats_random, 4),
            "insertion_beats_random": round(self.insertion_beats_random, 4),
            "deletion_auc": round(float(self.deletion.mean()), 4),
            "deletion_auc_random": round(float(self.deletion_random.mean()), 4),
            "insertion_auc": round(float(self.insertion.mean()), 4),
            "insertion_auc_random": round(float(self.insertion_random.mean()), 4),
            "curve": [round(float(v), 4) for v in self.curve],
            "curve_random": [round(float(v), 4) for v in self.curve_random],
        }


def _check(images) -> torch.Tensor:
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ConfigError(f"images must be (N, 1, 28, 28) floats in [0, 1], got shape {tuple(x.shape)}")
    if not 1 <= len(x) <= MAX_DIGITS:
        raise ConfigError(f"digits to evaluate: 1..{MAX_DIGITS:,}, got {len(x):,}")
    return x


def deletion(
    model,
    images,
    method: str,
    *,
    targets=None,
    maps: torch.Tensor | None = None,
    steps: int = STEPS,
    orders: int = RANDOM_ORDERS,
    seed: int = 0,
    **options,
) -> Deletion:
    """Deletion and insertion of each digit's ink in the order of `method`'s map (explaining
    `targets`, default the predicted classes) against `orders` random ink-first orders."""
    x = _check(images).cpu()
    t = _probs(model, x).argmax(1) if targets is None else torch.as_tensor(targets).reshape(-1).long()
    m = explain(model, x, method, target=t, seed=seed, **options) if maps is None else torch.as_tensor(maps).cpu()
    gen = torch.Generator().manual_seed(seed)
    d = curves(model, x, m, t, steps=steps)
    i = curves(model, x, m, t, steps=steps, insertion=True)
    dr, ir = [], []
    for _ in range(orders):
        r = torch.rand(x.shape[0], 784, generator=gen)
        dr.append(curves(model, x, r, t, steps=steps))
        ir.append(curves(model, x, r, t, steps=steps, insertion=True))
    dr_curves = torch.stack(dr)
    return Deletion(
        method,
        len(x),
        area(d).numpy(),
        area(dr_curves).mean(0).numpy(),
        area(i).numpy(),
        area(torch.stack(ir)).mean(0).numpy(),
        d.mean(0).numpy(),
        dr_curves.mean((0, 1)).numpy(),
    )


def randomized(model, seed: int = 0):
    """A copy of `model` with every weight re-initialised (each layer's own initialiser, seeded;
    batch-norm statistics reset too): the same architecture that has learnt nothing."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in clone.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return clone


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays (average ranks for ties); 0 when either
    is constant."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def _average_ranks(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    s = v[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], len(v)]
    ranks = np.empty(len(v))
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b - 1) / 2.0
    return ranks


@dataclass
class Randomization:
    method: str
    n: int
    correlations: np.ndarray  # (N,) Spearman over each digit's ink pixels, trained vs randomised maps
    abs_correlations: np.ndarray  # the same on |map|

    @property
    def median(self) -> float:
        return float(np.median(self.correlations))

    @property
    def abs_median(self) -> float:
        return float(np.median(self.abs_correlations))

    def to_dict(self) -> dict:
        return {
            "eval": "randomization",
            "method": self.method,
            "n": self.n,
            "median_spearman": round(self.median, 4),
            "median_spearman_abs": round(self.abs_median, 4),
        }


def randomization(model, images, method: str, *, targets=None, seed: int = 0, **options) -> Randomization:
    """Trained against re-initialised weights: Spearman over each digit's ink pixels between
    the two maps, both explaining the trained model's classes (or `targets`)."""
    x = _check(images).cpu()
    t = _probs(model, x).argmax(1) if targets is None else torch.as_tensor(targets).reshape(-1).long()
    trained = explain(model, x, method, target=t, seed=seed, **options).reshape(len(x), -1).numpy()
    scrambled = explain(randomized(model, seed), x, method, target=t, seed=seed, **options)
    scrambled = scrambled.reshape(len(x), -1).numpy()
    ink = ink_of(x).numpy()
    rho = np.array([spearman(a[m], b[m]) for a, b, m in zip(trained, scrambled, ink)])
    rho_abs = np.array([spearman(np.abs(a[m]), np.abs(b[m])) for a, b, m in zip(trained, scrambled, ink)])
    return Randomization(method, len(x), rho, rho_abs)
