"""Watch a network learn: what a live view shows while ``fit`` runs, from its ``on_step``.

``Watch`` is an ``on_step`` callback. Every few tenths of a second it sends a point of the
running loss and accuracy (or reconstruction error); every second or so a view: the first
layer's filters as small pictures and, for a fixed grid of held-out digits, the model's current
predictions, right or wrong (an autoencoder: its current reconstructions). It returns True
(stop) when asked to stop or past its deadline. The page's Train panel streams these to the
browser (``web.training``); ``NotebookView`` draws them into a notebook cell:

    from mnistlab.train.live import NotebookView
    view = NotebookView.for_run(cfg, ds)          # a figure in the cell, redrawn as it learns
    run = train_run(cfg, dataset=ds, on_step=view)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from ..infer import predict
from .loop import StepInfo

GRID = 16  # held-out digits watched


def grid_of(split, n: int = GRID) -> np.ndarray:
    """Indices of `n` held-out digits to watch, the same every time: the first of each class in
    turn (0, 1, ..., 9, then the second of each), so every class is seen."""
    labels = split.labels.cpu().numpy() if split.labels is not None else np.zeros(len(split), int)
    by_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    out: list[int] = []
    while len(out) < min(n, len(labels)):
        for idx in by_class:
            if idx and len(out) < n:
                out.append(int(idx.pop(0)))
    return np.asarray(out)


def first_layer(model: torch.nn.Module, most: int = 16) -> np.ndarray | None:
    """The first layer's weights as pictures (K, h, w) in [0, 1], each scaled on its own: a
    convolution's kernels, or a dense layer's weights to the 784 pixels as 28x28 images."""
    for m in model.modules():
        w = None
        if isinstance(m, torch.nn.Conv2d) and m.in_channels == 1:
            w = m.weight.detach()[:most, 0]
        elif isinstance(m, torch.nn.Linear) and m.in_features == 784:
            w = m.weight.detach()[:most].reshape(-1, 28, 28)
        if w is not None:
            w = w.float().cpu()
            lo = w.amin((1, 2), keepdim=True)
            hi = w.amax((1, 2), keepdim=True)
            return ((w - lo) / (hi - lo).clamp_min(1e-12)).numpy()
    return None


class Watch:
    """An ``on_step`` callback that sends what a live view shows to `send` (dicts, JSON-ready
    but for the numpy arrays of a view: ``filters``, ``outputs``)."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        task: str,
        send: Callable[[dict], None],
        *,
        point_every: float = 0.2,
        view_every: float = 1.0,
        stop: threading.Event | None = None,
        deadline: float | None = None,
    ):
        self.images = torch.as_tensor(np.ascontiguousarray(images))
        self.labels = None if labels is None else np.asarray(labels)
        self.task, self.send = task, send
        self.point_every, self.view_every = point_every, view_every
        self.stop = stop or threading.Event()
        self.deadline = deadline
        self.last_point = self.last_view = -1e9
        self.why_stopped = ""

    def __call__(self, info: StepInfo) -> bool:
        now = time.monotonic()
        end = info.step == info.steps
        if end or now - self.last_point >= self.point_every:
            self.last_point = now
            means = info.means()
            self.send(
                {
                    "type": "step",
                    "epoch": info.epoch,
                    "epochs": info.epochs,
                    "step": info.step,
                    "steps": info.steps,
                    "at": round(info.epoch - 1 + info.step / info.steps, 4),  # epochs done, fractional
                    **{k: round(v, 5) for k, v in means.items()},
                }
            )
        if end or now - self.last_view >= self.view_every:
            self.last_view = now
            self.send(self.view(info.model))
        if self.stop.is_set():
            self.why_stopped = "stopped"
            return True
        if self.deadline is not None and now > self.deadline:
            self.why_stopped = "time limit"
            return True
        return False

    @torch.no_grad()
    def view(self, model) -> dict:
        out = predict(model, self.images)  # eval mode for the pass, training mode after
        view: dict = {"type": "view", "filters": first_layer(model)}
        if self.task == "classify":
            probs = torch.softmax(out.float(), 1)
            pred = probs.argmax(1).numpy()
            view["predictions"] = pred.tolist()
            view["confidence"] = [round(float(p), 3) for p in probs.max(1).values]
            if self.labels is not None:
                view["correct"] = [bool(p == y) for p, y in zip(pred, self.labels)]
        else:
            view["outputs"] = out.float().reshape(-1, 28, 28).clamp(0, 1).numpy()
        return view


class NotebookView:
    """A live view in a notebook cell: loss (and accuracy) curves, the first layer's filters and
    the watched digits with their current predictions, redrawn as the model learns."""

    def __init__(self, images: np.ndarray, labels, task: str, class_names=None):
        self.points: list[dict] = []
        self.last_view: dict | None = None
        self.images, self.labels, self.task = images, labels, task
        self.names = class_names
        self.handle = None
        self.watch = Watch(images, labels, task, self._take, point_every=0.5, view_every=2.0)

    @classmethod
    def for_run(cls, cfg, ds) -> NotebookView:
        from ..models import get_spec

        idx = grid_of(ds.test)
        labels = ds.test.labels[idx].numpy() if ds.test.labels is not None else None
        return cls(ds.test.images[idx].numpy(), labels, get_spec(cfg.model_name).task, ds.classes)

    def __call__(self, info: StepInfo) -> bool:
        return self.watch(info)

    def _take(self, event: dict) -> None:
        if event["type"] == "step":
            self.points.append(event)
        else:
            self.last_view = event
            self.draw()

    def figure(self):
        """The current view as a matplotlib figure (what the cell shows)."""
        from ..viz import _plt

        plt = _plt()
        fig = plt.figure(figsize=(11, 3.4))
        grid = fig.add_gridspec(2, 12)
        ax = fig.add_subplot(grid[:, :4])
        x = [p["at"] for p in self.points]
        ax.plot(x, [p.get("loss", np.nan) for p in self.points], label="training loss")
        ax.set_xlabel("epochs")
        ax.set_ylabel("loss (running mean)")
        if self.points and "acc" in self.points[0]:
            acc = ax.twinx()
            acc.plot(x, [p["acc"] for p in self.points], color="tab:green", label="accuracy")
            acc.set_ylim(0, 1)
            acc.set_ylabel("accuracy (running mean)", color="tab:green")
        ax.set_title("learning, live")
        view = self.last_view or {}
        filters = view.get("filters")
        if filters is not None:
            for k, f in enumerate(filters[:8]):
                a = fig.add_subplot(grid[k // 4, 4 + k % 4])
                a.imshow(f, cmap="gray")
                a.set_axis_off()
            fig.text(0.5, 0.02, "first layer's filters", ha="center", fontsize=8)
        for k in range(min(8, len(self.images))):
            a = fig.add_subplot(grid[k // 4, 8 + k % 4])
            a.set_axis_off()
            if "outputs" in view:
                a.imshow(view["outputs"][k], cmap="gray", vmin=0, vmax=1)
            else:
                a.imshow(self.images[k], cmap="gray")
                if "predictions" in view:
                    p = view["predictions"][k]
                    ok = view.get("correct", [True] * len(self.images))[k]
                    name = self.names[p] if self.names is not None and p < len(self.names) else p
                    a.set_title(f"{name}", fontsize=8, color="tab:green" if ok else "tab:red")
        fig.text(0.83, 0.02, "held-out digits: current reading (red: wrong)", ha="center", fontsize=8)
        return fig

    def draw(self) -> None:
        try:
            from IPython.display import display
        except ImportError:  # not in a notebook: nothing to draw into
            return
        from ..viz import _plt

        fig = self.figure()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        _plt().close(fig)
