"""Calibrated confidence: a probability should mean what it says.

Temperature scaling (Guo et al., ICML 2017): the logits divided by one number T, fitted to
minimise the negative log-likelihood on held-out digits, so the classes' order (and the
accuracy) stays and only the confidence moves. The expected calibration error (ECE) is the
gap between confidence and accuracy, averaged over 15 equal-width confidence bins, weighted
by how many predictions fall in each.

Where a run fits T (``fit_run_temperature``): on its validation split when it has one, else
on a seeded half of its test split, with the ECE before and after reported on the other half,
so no figure is measured on the digits T was fitted on. T is stored in ``calibration.json``
of the run and used by ``predict``, ``read`` and the web page (``reading.probabilities``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BINS = 15


def temperature_of(model) -> float:
    """The model's fitted temperature (set by load_run from calibration.json), 1 when it has none."""
    return float(getattr(model, "temperature", 1.0) or 1.0)


def calibrated(model, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities: softmax(logits / the model's temperature)."""
    return torch.softmax(logits.float() / temperature_of(model), 1)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, lo: float = 0.05, hi: float = 20.0) -> float:
    """The T in [lo, hi] minimising the NLL of softmax(logits / T): a golden-section search on
    log T (the NLL is convex in 1/T), deterministic, 60 evaluations."""
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return round(math.exp((a + b) / 2), 4)


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """Expected calibration error of (N, classes) probabilities against labels, in [0, 1]."""
    conf, pred = probs.max(1)
    right = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    total = 0.0
    for k in range(bins):
        inside = (conf > edges[k]) & (conf <= edges[k + 1]) if k else (conf >= 0) & (conf <= edges[1])
        if inside.any():
            total += float(inside.double().mean() * (conf[inside].double().mean() - right[inside].mean()).abs())
    return total


def calibration(
    fit: tuple[torch.Tensor, torch.Tensor], report: tuple[torch.Tensor, torch.Tensor], fitted_on: str
) -> dict:
    """Fit T on `fit` (logits, labels) and report the ECE before and after on `report`."""
    t = fit_temperature(*fit)
    held, labels = report[0].double(), report[1]
    return {
        "temperature": t,
        "fitted_on": fitted_on,
        "n_fit": len(fit[1]),
        "n_report": len(labels),
        "ece_before": round(ece(torch.softmax(held, 1), labels), 5),
        "ece_after": round(ece(torch.softmax(held / t, 1), labels), 5),
    }


def split_halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of n rows into a fitting half and a reporting half."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 104729))
    return perm[: n // 2], perm[n // 2 :]
