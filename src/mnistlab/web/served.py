"""The runs a page serves, loaded once: each classifier or autoencoder by name, with what the
handlers cache per run (an autoencoder's test codes, a classifier's scrambled copy and the copy
explanations hook into)."""

from __future__ import annotations

import contextlib
import copy
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MnistlabError
from ..runs import latest_run, load_run


class BadRequest(Exception):
    """A request the server will not answer as asked: its message and HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Served:
    name: str
    run: object  # runs.Run
    task: str
    codes: dict | None = None  # cached test-set codes for small-code autoencoders
    scrambled: object = None  # the classifier with re-initialised weights (the randomisation check)
    explainer: object = None  # a copy of the classifier that explain and conv hook into, one request at a time
    explain_lock: threading.Lock = field(default_factory=threading.Lock)


class ServedRuns:
    """The runs being served, loaded once. Inference needs no lock (eval-mode forward passes
    only read the weights); the lock guards the one-time cache of each run's test codes."""

    def __init__(self, run_dirs: list[Path]):
        self.runs: dict[str, Served] = {}
        self.lock = threading.Lock()
        for d in run_dirs:
            self.add(load_run(d))

    def add(self, run) -> Served:
        """Serve a loaded run too (a run trained from the page); its name made unique."""
        with self.lock:
            name, n = run.path.resolve().name, 1
            while name in self.runs:  # two runs of one name: both served, the second as name-2
                n += 1
                name = f"{run.path.resolve().name}-{n}"
            self.runs[name] = Served(name, run, run.task)
            return self.runs[name]

    def get(self, name: str | None, task: str | None = None) -> Served:
        if name is None:
            found = [s for s in self.runs.values() if task is None or s.task == task]
            if not found:
                raise BadRequest(f"no {task or ''} run is served".replace("  ", " "), 404)
            return found[0]
        if name not in self.runs:
            raise BadRequest(f"unknown run {name!r}", 404)
        served = self.runs[name]
        if task and served.task != task:
            raise BadRequest(f"run {name!r} is a {served.task} model, not {task}", 400)
        return served


def default_runs(root: Path | None = None) -> list[Path]:
    """The default classifier (the newest cnn-robust run, else the newest classifier run)
    and the newest autoencoder run."""
    from ..reading.reader import default_classifier

    out = []
    for pick in (lambda: default_classifier(root), lambda: latest_run(root, task="reconstruct")):
        try:
            out.append(pick())
        except MnistlabError:
            pass
    if not out:
        raise MnistlabError("no finished runs to serve: train one (e.g. `mnistlab train cnn`) or pass --run")
    return out


@contextlib.contextmanager
def explaining(s: Served):
    """The run's explainer copy, one request at a time: explanations and the convolution view
    hook into a model's layers, and a hook on the served model would fire inside other
    threads' predictions."""
    with s.explain_lock:
        if s.explainer is None:
            s.explainer = copy.deepcopy(s.run.model).eval()
        yield s.explainer
