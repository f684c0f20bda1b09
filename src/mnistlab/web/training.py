"""The page's Train panel: one training at a time, run through the one training loop (``fit``
and its ``on_step``), its live view streamed to the browser as server-sent events.

    POST /api/train?model=cnn-fast&lr=0.015&epochs=1&width=16&augment=none&batch_size=128
    GET  /api/train/events          text/event-stream: start, step, view, epoch, done | stopped | error
    POST /api/train/stop

Bounded: the models and settings a teacher varies (``MODELS``, ``SETTINGS``), on the bundled
sample, within ``MAX_SECONDS``; a second Train while one runs is refused (409). The finished
run is a normal run folder under the runs folder, and is served at once (it joins the pickers).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MnistlabError
from .served import BadRequest, ServedRuns

MAX_SECONDS = 600  # one training from the page, at most
DATASET = "mnist-sample"
# model -> how "width" sets it, and its default width
MODELS = {
    "cnn-fast": ("model.channels={w},{w2}", 16),
    "cnn": ("model.channels={w},{w2}", 32),
    "mlp": ("model.hidden={w8},{w4}", 32),
    "ae-dense": ("model.code={w}", 32),
}
WIDTHS = (4, 8, 16, 32, 64)
AUGMENT = ("none", "shift", "affine")
# setting -> (least, most, kind)
SETTINGS = {"lr": (1e-4, 0.5, float), "epochs": (1, 5, int), "batch_size": (16, 512, int)}
KEEP = 2000  # events kept for a late listener (a whole training sends a few hundred)


@dataclass
class Job:
    model: str
    started: float
    events: list[dict] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    done: bool = False


class Trainer:
    """The one training the page may run, and the events of the last one."""

    def __init__(self, served: ServedRuns, runs_root: Path | None = None):
        self.served, self.runs_root = served, runs_root
        self.job: Job | None = None
        self.cond = threading.Condition()

    # ------------------------------------------------------------------ requests

    def start(self, query: dict) -> dict:
        cfg = self._config(query)
        with self.cond:
            if self.job is not None and not self.job.done:
                raise BadRequest(f"a {self.job.model} is training: stop it or wait for it to finish", 409)
            self.job = Job(cfg.model_name, time.monotonic())
        threading.Thread(target=self._train, args=(self.job, cfg), name="mnistlab-train", daemon=True).start()
        return {"training": cfg.model_name, "events": "/api/train/events"}

    def stop(self) -> dict:
        with self.cond:
            if self.job is None or self.job.done:
                raise BadRequest("nothing is training", 409)
            self.job.stop.set()
        return {"stopping": self.job.model}

    def events_after(self, seen: int, timeout: float) -> tuple[list[dict], bool]:
        """The events after the first `seen` of the current job (waiting up to `timeout` s for
        one), and whether the job has ended."""
        with self.cond:
            job = self.job
            if job is None:
                return [], True
            if len(job.events) <= seen and not job.done:
                self.cond.wait(timeout)
            return job.events[seen:], job.done

    # ------------------------------------------------------------------ the training

    def _config(self, q: dict):
        from ..config import build_config

        model = q.get("model", "cnn-fast")
        if model not in MODELS:
            raise BadRequest(f"model: one of {', '.join(MODELS)}")
        how, default_width = MODELS[model]
        sets = []
        for key, (least, most, kind) in SETTINGS.items():
            raw = q.get(key)
            if raw in (None, ""):
                continue
            try:
                value = kind(raw)
            except ValueError:
                raise BadRequest(f"{key}: a number, got {raw[:20]!r}") from None
            if not least <= value <= most:
                raise BadRequest(f"{key}: {least:g}..{most:g} on this page, got {value:g}")
            sets.append(f"{key}={value}")
        width = int(q.get("width") or default_width) if str(q.get("width") or default_width).isdigit() else -1
        if width not in WIDTHS:
            raise BadRequest(f"width: one of {', '.join(map(str, WIDTHS))}")
        sets.append(how.format(w=width, w2=2 * width, w4=4 * width, w8=8 * width))
        augment = q.get("augment") or "none"
        if augment not in AUGMENT:
            raise BadRequest(f"augment: one of {', '.join(AUGMENT)}")
        sets.append(f"augment={augment}")
        if model.startswith("ae-"):
            sets.append("val_fraction=0")  # the curve and the grid read the test split
        flags = {"dataset": DATASET, "epochs": 1}
        try:
            return build_config(model, flags=flags, sets=sets)
        except MnistlabError as e:
            raise BadRequest(str(e)) from None

    def _send(self, job: Job, event: dict) -> None:
        from .handlers import _png_data_url

        event = dict(event, t=round(time.monotonic() - job.started, 3))
        if event.get("filters") is not None:
            event["filters"] = [_png_data_url(f * 255) for f in event["filters"]]
        if event.get("outputs") is not None:
            event["outputs"] = [_png_data_url(o * 255) for o in event["outputs"]]
        with self.cond:
            job.events.append(event)
            del job.events[:-KEEP]
            self.cond.notify_all()

    def _train(self, job: Job, cfg) -> None:
        from ..data.sources import dataset_for
        from ..models import get_spec
        from ..runs import load_run, new_run_dir
        from ..train.live import Watch, grid_of
        from ..train.run import train_run
        from .handlers import _png_data_url

        try:
            ds = dataset_for(cfg.data, notice=lambda m: None)
            idx = grid_of(ds.test)
            images = ds.test.images[idx].numpy()
            labels = ds.test.labels[idx].numpy() if ds.test.labels is not None else None
            task = get_spec(cfg.model_name).task
            self._send(
                job,
                {
                    "type": "start",
                    "model": cfg.model_name,
                    "task": task,
                    "epochs": cfg.train.epochs,
                    "settings": {"lr": cfg.train.lr, "batch_size": cfg.train.batch_size, "augment": cfg.train.augment},
                    "digits": [_png_data_url(im) for im in images],
                    "labels": None if labels is None else [ds.classes[int(y)] for y in labels],
                    "classes": list(ds.classes),
                },
            )
            watch = Watch(
                images,
                labels,
                task,
                lambda e: self._send(job, e),
                point_every=0.1,
                stop=job.stop,
                deadline=time.monotonic() + MAX_SECONDS,
            )

            def epoch(row):
                self._send(job, {"type": "epoch", **{k: v for k, v in row.items() if isinstance(v, (int, float))}})

            path = new_run_dir(cfg.model_name, ds.name, self.runs_root)
            run = train_run(cfg, path, dataset=ds, progress=False, on_step=watch, after_epoch=epoch)
            served = self.served.add(load_run(run.path))
            summary = {k: v for k, v in run.summary.items() if isinstance(v, (int, float, str))}
            end = "stopped" if watch.why_stopped else "done"
            self._send(job, {"type": end, "why": watch.why_stopped, "run": served.name, "summary": summary})
        except Exception as e:  # the page hears of it; the server goes on
            msg = str(e) if isinstance(e, MnistlabError) else f"internal error ({type(e).__name__}: {e})"
            self._send(job, {"type": "error", "error": msg[:300]})
        finally:
            with self.cond:
                job.done = True
                self.cond.notify_all()


def stream(trainer: Trainer):
    """An async generator of the current job's events as server-sent events, to its end."""
    import json

    import anyio

    async def events():
        seen = 0
        while True:
            new, done = await anyio.to_thread.run_sync(trainer.events_after, seen, 15.0)
            for e in new:
                seen += 1
                yield f"id: {seen}\nevent: {e['type']}\ndata: {json.dumps(_plain(e))}\n\n"
            if done and not new:
                yield "event: end\ndata: {}\n\n"
                return
            if not new:
                yield ": keep-alive\n\n"

    return events()


def _plain(e: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
