"""Augmentation done to whole batches on the device (never per sample in Python).

``shift``: random integer shifts of up to ``max_shift`` pixels (zero fill), exact.
``affine``: small random rotations, scalings and shifts through one ``grid_sample`` call.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: (B, C, H, W). Each image moved by its own (dy, dx) in [-max_shift, max_shift]."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, C, H+2s, W+2s)
    shifts = torch.randint(0, 2 * s + 1, (2, b), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + shifts[0][:, None])  # (B, H)
    cols = (torch.arange(w, device=x.device)[None, :] + shifts[1][:, None])  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * s))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_affine(x: torch.Tensor, degrees: float = 10.0, scale: float = 0.1, shift: float = 2.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotation in [-degrees, degrees], scale in [1-scale, 1+scale], shift up to `shift` pixels."""
    b, _, h, w = x.shape
    r = torch.rand(4, b, generator=generator).to(x.device, x.dtype) * 2 - 1  # (4, B) in [-1, 1]
    angle = r[0] * math.radians(degrees)
    s = 1 + r[1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    tx, ty = r[2] * shift * 2 / w, r[3] * shift * 2 / h
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


AUGMENTATIONS = {
    "none": lambda x, g: x,
    "shift": lambda x, g: random_shift(x, 2, g),
    "affine": lambda x, g: random_affine(x, generator=g),
}


def augment(x: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    return AUGMENTATIONS[kind](x, generator)
