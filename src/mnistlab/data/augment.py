"""Augmentation done to whole batches on the device (never per sample in Python).

``shift``: random integer shifts of up to ``max_shift`` pixels (zero fill), exact.
``affine``: small random rotations, scalings and shifts through one ``grid_sample`` call.
``robust``: what separates users' photos from MNIST, each image its own draw: a wider
affine (rotation, anisotropic scale, shear, shift) and an elastic warp in one
``grid_sample``; stroke thickness (dilated or eroded by a 3x3 max-pool); blur; contrast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _draw(fn, shape, generator: torch.Generator | None, device, **kw) -> torch.Tensor:
    """`fn` (torch.rand or torch.randint) drawn on the generator's own device, then moved to
    `device`: a CUDA generator keeps the draws, and so a captured step, free of host work;
    a CPU generator (or none) draws on the CPU."""
    where = generator.device if generator is not None else torch.device("cpu")
    return fn(*kw.pop("args", ()), shape, generator=generator, device=where, **kw).to(device)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: (B, C, H, W). Each image moved by its own (dy, dx) in [-max_shift, max_shift]."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, C, H+2s, W+2s)
    shifts = _draw(torch.randint, (2, b), generator, x.device, args=(0, 2 * s + 1))
    rows = torch.arange(h, device=x.device)[None, :] + shifts[0][:, None]  # (B, H)
    cols = torch.arange(w, device=x.device)[None, :] + shifts[1][:, None]  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * s))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_affine(
    x: torch.Tensor,
    degrees: float = 10.0,
    scale: float = 0.1,
    shift: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotation in [-degrees, degrees], scale in [1-scale, 1+scale], shift up to `shift` pixels."""
    b, _, h, w = x.shape
    r = _draw(torch.rand, (4, b), generator, x.device).to(x.dtype) * 2 - 1  # (4, B) in [-1, 1]
    angle = r[0] * math.radians(degrees)
    s = 1 + r[1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    tx, ty = r[2] * shift * 2 / w, r[3] * shift * 2 / h
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rand(b: int, generator, device, lo: float, hi: float) -> torch.Tensor:
    return _draw(torch.rand, (b,), generator, device) * (hi - lo) + lo


NARROW_SHARE, NARROW = 0.3, (0.45, 0.8)


def random_robust(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: (B, 1, H, W) in [0, 1]. The gap between MNIST and preprocessed photos, batched."""
    b, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    u = lambda lo, hi: _rand(b, generator, dev, lo, hi).to(dt)  # noqa: E731
    angle = u(-15, 15) * (math.pi / 180)
    sx, sy = u(0.8, 1.15), u(0.8, 1.15)
    # Narrow writing: MNIST keeps each digit's aspect ratio, so a narrow 8 stays narrow, and
    # MNIST has few narrow 3s, 5s and 8s. A share of the images is squeezed to NARROW of its
    # width (measured in benchmarks/photos/README.md).
    squeeze = _draw(torch.rand, (b,), generator, dev).to(dt) < NARROW_SHARE
    sx = torch.where(squeeze, u(*NARROW), sx)
    shear = u(-0.3, 0.3)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output -> input coordinates: rotation @ shear @ scale (inverse of the image's warp).
    a11, a12 = cos / sx, (cos * shear - sin) / sy
    a21, a22 = sin / sx, (sin * shear + cos) / sy
    tx, ty = u(-2.5, 2.5) * 2 / w, u(-2.5, 2.5) * 2 / h
    theta = torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    # Elastic: a smooth random displacement of up to ~1.5 px, from a 4x4 field upsampled.
    coarse = (_draw(torch.rand, (b, 2, 4, 4), generator, dev).to(dt) * 2 - 1) * (3.0 / w)
    grid = grid + F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Stroke thickness: 15% eroded, a third dilated, the rest as they are.
    pick = _draw(torch.rand, (b,), generator, dev)[:, None, None, None]
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = -F.max_pool2d(-x, 3, 1, 1)
    x = torch.where(pick < 0.15, thin, torch.where(pick > 0.67, thick, x))
    # Blur: a third of the images mixed with a 3x3 box blur, by a random amount.
    mix = (_draw(torch.rand, (b,), generator, dev) < 0.33).to(dt) * u(0.3, 1.0)
    x = torch.lerp(x, F.avg_pool2d(x, 3, 1, 1), mix[:, None, None, None])
    # Contrast: gamma and peak level.
    x = x.clamp(0, 1).pow(u(0.7, 1.4)[:, None, None, None]) * u(0.85, 1.0)[:, None, None, None]
    return x


AUGMENTATIONS = {
    "none": lambda x, g: x,
    "shift": lambda x, g: random_shift(x, 2, g),
    "affine": lambda x, g: random_affine(x, generator=g),
    "robust": lambda x, g: random_robust(x, g),
}


def augment(x: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    return AUGMENTATIONS[kind](x, generator)
