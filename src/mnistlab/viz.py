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

    # in a Jupyter kernel the inline backend stays, so figures show in the notebook
    if not interactive and "ipykernel" not in sys.modules:
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


def shown(fig, name: str):
    """A tutorial's figure, wherever the tutorial runs: in a notebook it shows in the cell; run as
    a script it is saved as ``FOLDER/name.png`` (``$MNISTLAB_FIGURES``, default
    ``tutorial-figures/``) with a line saying where."""
    if "ipykernel" in sys.modules:
        return fig
    folder = Path(os.environ.get("MNISTLAB_FIGURES") or "tutorial-figures")
    path = save_figure(fig, folder / f"{name}.png")
    print(f"figure saved: {path}")
    return None


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
                ax.text(
                    c, r, str(int(v)), ha="center", va="center", fontsize=5.5, color="black" if v > 127 else "white"
                )
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
    _probability_bars(a1, probs, classes)
    return fig


def _probability_bars(ax, probs: np.ndarray, classes) -> None:
    """The class probabilities as bars, the top one in orange."""
    colors = ["tab:orange" if i == int(np.argmax(probs)) else "tab:blue" for i in range(len(probs))]
    ax.bar(range(len(probs)), probs, color=colors)
    ax.set_xticks(range(len(probs)), [str(c)[:6] for c in classes], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")


def explanation_figure(
    image: np.ndarray, attribution: np.ndarray, probs: np.ndarray, classes, title: str = "", what: str = ""
):
    """The digit, its signed attribution map over it (red: pushed toward the explained class,
    blue: away from it), and the class probabilities."""
    plt = _plt()
    fig, (a0, a1, a2) = plt.subplots(
        1, 3, figsize=(10.5, 3.2), gridspec_kw={"width_ratios": [1, 1, 1.6]}, layout="constrained"
    )
    a0.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    a0.set_title(title, fontsize=9)
    lim = float(np.abs(attribution).max()) or 1.0
    a1.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    shown = a1.imshow(attribution, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.65, interpolation="nearest")
    a1.set_title(what, fontsize=9)
    fig.colorbar(shown, ax=a1, fraction=0.046, pad=0.04)
    for ax in (a0, a1):
        ax.set_xticks([])
        ax.set_yticks([])
    _probability_bars(a2, probs, classes)
    return fig


def faithfulness_figure(result):
    """A faithfulness check as a picture: for deletion, the mean probability curve as ink goes
    in the method's order and in random ink-first orders, and each digit's two areas; for
    randomisation, each digit's Spearman correlation (trained vs re-initialised maps)."""
    plt = _plt()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(9.5, 3.6), layout="constrained")
    if hasattr(result, "curve"):
        frac = np.linspace(0, 1, len(result.curve))
        a0.plot(frac, result.curve, marker="o", ms=3, label=f"{result.method} order")
        a0.plot(frac, result.curve_random, marker="o", ms=3, label="random ink-first order")
        a0.set_xlabel("fraction of the ink erased")
        a0.set_ylabel("probability of the explained class")
        a0.set_title(f"deletion, mean of {result.n} digits", fontsize=9)
        a0.legend(fontsize=8)
        a0.grid(alpha=0.3)
        a1.scatter(result.deletion_random, result.deletion, s=8, alpha=0.6)
        a1.plot([0, 1], [0, 1], color="gray", lw=1)
        a1.set_xlabel("area, random orders")
        a1.set_ylabel(f"area, {result.method}")
        a1.set_title(f"below the line: {result.beats_random:.0%} of digits (deletion beats random)", fontsize=9)
    else:
        a0.hist(result.correlations, bins=30, range=(-1, 1))
        a0.axvline(result.median, color="C3", label=f"median {result.median:.2f}")
        a0.set_xlabel("Spearman over ink pixels (signed maps)")
        a0.set_ylabel("digits")
        a0.legend(fontsize=8)
        a1.hist(result.abs_correlations, bins=30, range=(-1, 1), color="C1")
        a1.axvline(result.abs_median, color="C3", label=f"median {result.abs_median:.2f}")
        a1.set_xlabel("Spearman over ink pixels (|map|)")
        a1.legend(fontsize=8)
        fig.suptitle(f"{result.method}: trained vs re-initialised weights, {result.n} digits", fontsize=10)
    return fig


# ---------------------------------------------------------------- runs


def curves_figure(history: list[dict]):
    """Loss (and accuracy, when the model has it) per epoch for each split recorded."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    metrics = [m for m in ("loss", "acc", "mse") if any(k.endswith("_" + m) for k in history[0])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for ax, m in zip(axes[0], metrics):
        for key in sorted(k for k in history[0] if k.endswith("_" + m)):
            ax.plot(epochs, [r[key] for r in history], marker="o", ms=3, label=key.rsplit("_", 1)[0])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.2, 1.4 ...
        ax.set_ylabel({"acc": "accuracy", "mse": "mse (per pixel)"}.get(m, m))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def confusion_figure(cm: np.ndarray, rows, cols=None, title: str = ""):
    """The confusion matrix with its counts; `cols` (the predicted classes) default to `rows`."""
    plt = _plt()
    cols = rows if cols is None else cols
    fig, ax = plt.subplots(figsize=(5.5 * max(1.0, len(cols) / max(len(rows), 1)) ** 0.5, 5))
    ax.imshow(cm, cmap="Blues")
    thresh = cm.max() / 2
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=7, color="white" if v > thresh else "black")
    xnames, ynames = [str(c)[:7] for c in cols], [str(c)[:7] for c in rows]
    ax.set_xticks(range(len(xnames)), xnames, rotation=45 if max(map(len, xnames)) > 2 else 0, fontsize=8)
    ax.set_yticks(range(len(ynames)), ynames, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix ({np.trace(cm) / max(cm.sum(), 1):.2%} correct)")
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
        out[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = scaled[i]
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
            ax.bar(
                range(len(a)), probs, color=["tab:orange" if i == probs.argmax() else "tab:blue" for i in range(len(a))]
            )
            ax.set_xticks(range(len(a)), [str(c)[:4] for c in classes], fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_title(f"{name}: class probabilities")
            ax.set_aspect("auto")
            continue
        else:
            side = int(math.ceil(math.sqrt(a.size)))
            sq = np.full(side * side, np.nan)
            sq[: a.size] = a.ravel()
            ax.imshow(sq.reshape(side, side), cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name}: {a.size} values as {side}x{side}")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _classify_figures(run, ds, phase: str, predictions: torch.Tensor | None = None) -> None:
    if phase == "before":
        return
    fig = run.figures
    save_figure(curves_figure(run.metrics), fig / "curves.png")
    if predictions is None:
        from .infer import predict

        predictions = predict(run.model, ds.test.images, run.config.train.eval_batch_size).argmax(1)
    from .runs import run_confusion

    cm, rows, cols = run_confusion(run, ds, predictions)
    save_figure(
        confusion_figure(cm, rows, cols, f"{ds.name} test: {np.trace(cm) / max(cm.sum(), 1):.2%} correct"),
        fig / "confusion.png",
    )


# ---------------------------------------------------------------- autoencoders


def one_per_class(split, k: int = 10) -> torch.Tensor:
    """Index of the first example of each class, in class order (a fixed, readable pick)."""
    labels = split.labels.cpu()
    if not (labels >= 0).any():  # unlabelled images: the first k
        return torch.arange(min(k, len(labels)))
    return torch.stack([(labels == c).nonzero()[0, 0] for c in range(k) if (labels == c).any()])


def _encode(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    from .infer import encode

    return encode(model, images, batch_size)


def _decode(model, codes: torch.Tensor) -> np.ndarray:
    from .infer import batched

    return batched(model, model.decode, codes, as_images=False).numpy()[:, 0]


def tile(images: np.ndarray, gap: int = 2, fill: float = np.nan) -> np.ndarray:
    """(N, H, W) images side by side in one row with `gap` pixels of `fill` between them."""
    n, h, w = images.shape
    out = np.full((h, n * (w + gap) - gap), fill, dtype=np.float64)
    for i, im in enumerate(images):
        out[:, i * (w + gap) : i * (w + gap) + w] = im
    return out


def image_rows_figure(rows: list[tuple[str, np.ndarray]], title: str = "", gap: int = 2):
    """Rows of images (each (N, H, W) in [0, 1]), labelled on the left: one picture in one axes
    (a grid of small axes cost 16 ms an axes to build, most of a run's figure time)."""
    plt = _plt()
    h = max(imgs.shape[1] for _, imgs in rows)
    n = max(len(imgs) for _, imgs in rows)
    w = max(imgs.shape[2] for _, imgs in rows)
    sheet = np.full((len(rows) * (h + gap) - gap, n * (w + gap) - gap), np.nan)
    for r, (_, imgs) in enumerate(rows):
        strip = tile(np.asarray(imgs, dtype=np.float64), gap)
        sheet[r * (h + gap) : r * (h + gap) + imgs.shape[1], : strip.shape[1]] = strip
    fig, ax = plt.subplots(figsize=(1.1 * n, 1.2 * len(rows)))
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    ax.imshow(sheet, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([r * (h + gap) + h / 2 - 0.5 for r in range(len(rows))], [label for label, _ in rows], fontsize=9)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _scatter_kwargs(labels):
    return dict(c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=5, alpha=0.7)


def code3d_figures(codes: np.ndarray, labels: np.ndarray, title: str):
    """A 3-D scatter of the codes coloured by digit, and its xy, xz, yz projections."""
    plt = _plt()
    fig = plt.figure(figsize=(6, 5.5))
    ax = fig.add_subplot(projection="3d")
    sc = ax.scatter(codes[:, 0], codes[:, 1], codes[:, 2], **_scatter_kwargs(labels))
    ax.set_xlabel("z0")
    ax.set_ylabel("z1")
    ax.set_zlabel("z2")
    fig.colorbar(sc, ax=ax, ticks=range(10), shrink=0.6, label="digit")
    ax.set_title(title)
    proj, axes = plt.subplots(1, 3, figsize=(13, 4))
    for a, (i, j) in zip(axes, ((0, 1), (0, 2), (1, 2))):
        a.scatter(codes[:, i], codes[:, j], **_scatter_kwargs(labels))
        a.set_xlabel(f"z{i}")
        a.set_ylabel(f"z{j}")
        a.set_title("xyz"[i] + "xyz"[j])
    proj.suptitle(title)
    proj.tight_layout()
    return fig, proj


def code2d_figure(model, codes: np.ndarray, labels: np.ndarray, title: str, grid: int = 15):
    """The codes coloured by digit beside the images decoded on a grid over the same plane."""
    plt = _plt()
    lo, hi = np.percentile(codes, 1, axis=0), np.percentile(codes, 99, axis=0)
    xs, ys = np.linspace(lo[0], hi[0], grid), np.linspace(hi[1], lo[1], grid)
    pts = torch.tensor([[x, y] for y in ys for x in xs], dtype=torch.float32)
    imgs = _decode(model, pts)
    mosaic = np.ones((grid * 28, grid * 28))
    for k, im in enumerate(imgs):
        r, c = divmod(k, grid)
        mosaic[r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28] = im
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 5.5))
    sc = a0.scatter(codes[:, 0], codes[:, 1], **_scatter_kwargs(labels))
    a0.set_xlim(lo[0], hi[0])
    a0.set_ylim(lo[1], hi[1])
    fig.colorbar(sc, ax=a0, ticks=range(10), label="digit")
    a0.set_title("test codes")
    a1.imshow(mosaic, cmap="gray", vmin=0, vmax=1, extent=(lo[0], hi[0], lo[1], hi[1]), aspect="auto")
    a1.set_title("decoded over the same plane")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def interpolation_figure(model, a: torch.Tensor, b: torch.Tensor, steps: int = 10, title: str = ""):
    """Decodings of codes on the straight line between two digits' codes."""
    za, zb = _encode(model, torch.stack([a, b]))
    t = torch.linspace(0, 1, steps).view(-1, *([1] * za.dim()))
    imgs = _decode(model, za[None] * (1 - t) + zb[None] * t)
    return image_rows_figure([("interpolated", imgs)], title)


def _reconstruct_figures(run, ds, phase: str, predictions=None) -> None:
    """Inputs over reconstructions; code-space pictures for small codes; an interpolation strip."""
    out, model = run.figures, run.model
    test = ds.test
    pick = one_per_class(test)
    images = test.images[pick]
    codes_pick = _encode(model, images)
    recon = _decode(model, codes_pick)
    inputs = images.numpy() / 255.0
    rows = [("input", inputs), ("output", recon)]
    code_shape = tuple(codes_pick.shape[1:])
    if len(code_shape) == 3 and code_shape[0] == 1:  # an image code, e.g. 4x4
        c = codes_pick[:, 0].numpy()
        rows.insert(1, (f"code {code_shape[1]}x{code_shape[2]}", (c - c.min()) / max(float(c.max() - c.min()), 1e-8)))
    when = "before training" if phase == "before" else "after training"
    save_figure(image_rows_figure(rows, f"{run.config.model_name}, {when}"), out / f"reconstructions_{phase}.png")
    if code_shape in ((2,), (3,)):
        codes = _encode(model, test.images).numpy()
        labels = test.labels.cpu().numpy()
        title = f"{run.config.model_name} test codes, {when}"
        if code_shape == (3,):
            f3, fp = code3d_figures(codes, labels, title)
            save_figure(f3, out / f"code3d_{phase}.png")
            save_figure(fp, out / f"code3d_projections_{phase}.png")
        else:
            save_figure(code2d_figure(model, codes, labels, title), out / f"code2d_{phase}.png")
    if phase == "after":
        save_figure(curves_figure(run.metrics), out / "curves.png")
        save_figure(
            interpolation_figure(
                model,
                images[1],
                images[7],
                title=f"{run.config.model_name}: interpolating between a 1 and a 7 in code space",
            ),
            out / "interpolation.png",
        )


# The figures each task's run writes, before and after training.
RUN_FIGURES = {"classify": _classify_figures, "reconstruct": _reconstruct_figures}


def run_figures(run, ds, phase: str = "after", predictions: torch.Tensor | None = None) -> None:
    """A run's figures for `phase` ('before' or 'after' training). `predictions`: a classifier's
    predicted class per test image, when the caller has them (no second pass over the test set)."""
    run.figures.mkdir(parents=True, exist_ok=True)
    RUN_FIGURES[run.task](run, ds, phase, predictions)


# ---------------------------------------------------------------- users' images


def steps_figure(stages: list[tuple[str, np.ndarray]], title: str = ""):
    """The preprocessing stages of one image side by side (``images.stage_images``)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(stages), figsize=(2.6 * len(stages), 3.0))
    for ax, (name, img) in zip(axes, stages):
        ax.imshow(img, interpolation="nearest" if img.shape[0] <= 28 else "antialiased")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def save_picture(rgb: np.ndarray, path: str | Path) -> Path:
    """An RGB uint8 array as a PNG file, written atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    with atomic_open(path) as f:
        f.write(buf.getvalue())
    return Path(path)
