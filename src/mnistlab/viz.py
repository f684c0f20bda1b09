"""Figures. Matplotlib is imported lazily (with the Agg backend unless a window is wanted),
so ``import mnistlab`` stays light. Every figure is written atomically as PNG."""
from __future__ import annotations

import io
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_open


def _plt(interactive: bool = False):
    import matplotlib

    if not interactive:
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def can_display() -> bool:
    """Whether a window can open: a desktop OS, or an X/Wayland display on Linux."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    with atomic_open(path) as f:
        f.write(buf.getvalue())
    return Path(path)


def show_or_save(fig, save: str | None, default_name: str) -> Path | None:
    """Save when asked or when no window can open (returns the path); else show a window."""
    if save or not can_display():
        return save_figure(fig, save or default_name)
    _plt(interactive=True).show()
    return None


# ---------------------------------------------------------------- single digits

def digit_figure(image: np.ndarray, title: str = "", annotate: bool = False):
    """A 28x28 digit in grey; `annotate` writes each pixel's 8-bit value on it."""
    plt = _plt()
    image = np.asarray(image)
    fig, ax = plt.subplots(figsize=(9, 9) if annotate else (3, 3))
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if annotate:
        for (r, c), v in np.ndenumerate(image):
            if v:
                ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=5.5,
                        color="black" if v > 127 else "white")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig


def prediction_figure(image: np.ndarray, probs: np.ndarray, classes, title: str = ""):
    """The digit beside the ten class probabilities."""
    plt = _plt()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(7, 3), gridspec_kw={"width_ratios": [1, 1.6]})
    a0.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    a0.set_xticks([])
    a0.set_yticks([])
    a0.set_title(title)
    colors = ["tab:orange" if i == int(np.argmax(probs)) else "tab:blue" for i in range(len(probs))]
    a1.bar(range(len(probs)), probs, color=colors)
    a1.set_xticks(range(len(probs)), [str(c)[:6] for c in classes], fontsize=8)
    a1.set_ylim(0, 1)
    a1.set_ylabel("probability")
    return fig


# ---------------------------------------------------------------- runs

def curves_figure(history: list[dict]):
    """Loss (and accuracy, when the model has it) per epoch for each split recorded."""
    plt = _plt()
    metrics = [m for m in ("loss", "acc", "mse") if any(k.endswith("_" + m) for k in history[0])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for ax, m in zip(axes[0], metrics):
        for key in sorted(k for k in history[0] if k.endswith("_" + m)):
            ax.plot(epochs, [r[key] for r in history], marker="o", ms=3, label=key.rsplit("_", 1)[0])
        ax.set_xlabel("epoch")
        ax.set_ylabel({"acc": "accuracy"}.get(m, m))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def confusion_matrix(pred: torch.Tensor, true: torch.Tensor, k: int) -> np.ndarray:
    return torch.bincount(true * k + pred, minlength=k * k).reshape(k, k).numpy()


def confusion_figure(cm: np.ndarray, classes, title: str = ""):
    plt = _plt()
    k = len(cm)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(cm, cmap="Blues")
    thresh = cm.max() / 2
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > thresh else "black")
    names = [str(c)[:7] for c in classes]
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix ({cm.trace() / cm.sum():.2%} correct)")
    fig.tight_layout()
    return fig


def _mosaic(maps: np.ndarray, cols: int | None = None) -> np.ndarray:
    """(C, H, W) maps, each scaled to [0, 1], tiled in a grid with one-pixel NaN gaps."""
    c, h, w = maps.shape
    cols = cols or int(math.ceil(math.sqrt(c * h / w)))
    rows = int(math.ceil(c / cols))
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    lo = maps.reshape(c, -1).min(1)[:, None, None]
    hi = maps.reshape(c, -1).max(1)[:, None, None]
    scaled = (maps - lo) / np.where(hi > lo, hi - lo, 1)
    for i in range(c):
        r, q = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = scaled[i]
    return out


def layers_figure(acts: list[tuple[str, torch.Tensor]], classes, title: str = ""):
    """Every layer's output for one digit: feature maps as colour-mapped mosaics, flat
    vectors reshaped to a square (1600 -> 40x40), the class scores as bars."""
    plt = _plt()
    n = len(acts)
    cols = 4
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, t) in zip(axes.flat, acts):
        a = t.detach().float().cpu().numpy()[0]
        if a.ndim == 3 and a.shape[0] == 1:
            ax.imshow(a[0], cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name} {a.shape[1]}x{a.shape[2]}")
        elif a.ndim == 3:
            ax.imshow(_mosaic(a), cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name}: {a.shape[0]} maps {a.shape[1]}x{a.shape[2]}")
        elif a.ndim == 1 and len(a) == len(classes):
            probs = np.exp(a - a.max())
            probs /= probs.sum()
            ax.bar(range(len(a)), probs, color=["tab:orange" if i == probs.argmax() else "tab:blue"
                                                 for i in range(len(a))])
            ax.set_xticks(range(len(a)), [str(c)[:4] for c in classes], fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_title(f"{name}: class probabilities")
            ax.set_aspect("auto")
            continue
        else:
            side = int(math.ceil(math.sqrt(a.size)))
            sq = np.full(side * side, np.nan)
            sq[:a.size] = a.ravel()
            ax.imshow(sq.reshape(side, side), cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name}: {a.size} values as {side}x{side}")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _classify_figures(run, ds) -> None:
    from .train import predict

    fig = run.figures
    save_figure(curves_figure(run.metrics), fig / "curves.png")
    logits = predict(run.model, ds.test.images, run.config.train.eval_batch_size)
    cm = confusion_matrix(logits.argmax(1), ds.test.labels.cpu(), len(ds.classes))
    with atomic_open(run.path / "confusion.csv", "w") as f:
        f.write("true\\pred," + ",".join(map(str, ds.classes)) + "\n")
        for c, row in zip(ds.classes, cm):
            f.write(f"{c}," + ",".join(map(str, row)) + "\n")
    save_figure(confusion_figure(cm, ds.classes, f"{ds.name} test: {cm.trace() / cm.sum():.2%} correct"),
                fig / "confusion.png")


# The figures each task's run writes; models of a new task add an entry here.
RUN_FIGURES = {"classify": _classify_figures}


def run_figures(run, ds) -> None:
    run.figures.mkdir(parents=True, exist_ok=True)
    RUN_FIGURES[run.task](run, ds)
