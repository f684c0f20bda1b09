"""Shared fixtures and the suite's markers. Every test runs offline, with its own cache and runs
folders.

Markers (pyproject.toml): ``slow(reason)`` keeps a test out of the inner loop (``make
test-fast``) and must say why; ``outcome`` marks a test that asserts what a training reaches,
which CI runs again on another CPU kernel path (``make test-kernels``); ``alone`` runs a test
with no other test beside it when the suite runs on several workers (it measures time or starts
processes of its own); ``gpu`` needs CUDA.

Under pytest-xdist each worker trains on one thread (two workers on two cores); an ``alone``
test takes both, once the other worker's current test has ended (a readers-writer lock on a
file the workers share)."""

from __future__ import annotations

import fcntl
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.data.splits import Dataset, Split

# cuBLAS is deterministic only with a fixed workspace, set before its first use (GPU tests
# compare a captured step with an eager one, and a resumed run with a whole one).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MNISTLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("MNISTLAB_RUNS", str(tmp_path_factory.mktemp("runs")))
    monkeypatch.setenv("MNISTLAB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx_set(folder, n_train=30, n_test=10, gz=True, seed=0, prefix=""):
    """Write the four IDX files of a tiny random dataset; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28)), 2051),
        "train-labels-idx1-ubyte": (rng.integers(0, 10, n_train), 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte": (rng.integers(0, 10, n_test), 2049),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (arr, magic) in arrays.items():
        raw = idx_bytes(arr, magic)
        path = folder / (prefix + name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(raw) if gz else raw)
    return {k: v[0] for k, v in arrays.items()}


def synthetic_dataset(n_train=256, n_test=64, seed=0) -> Dataset:
    """A learnable toy set: class k is a bright bar at row 2k+4 plus noise."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 40, (n, 28, 28), generator=g, dtype=torch.int64)
        for i, k in enumerate(labels.tolist()):
            images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 230
        return Split(images.to(torch.uint8), labels)

    return Dataset("synthetic", make(n_train), make(n_test), tuple(str(d) for d in range(10)), "synthetic")


def kill_at_epoch(monkeypatch, epoch: int):
    """Make the next train_run stop with KeyboardInterrupt as epoch `epoch` is about to be
    recorded (a kill between epochs: its checkpoint is the one before). Returns a function that
    puts recording back, for the resume that follows."""
    from mnistlab.train import run as train

    real = train.append_jsonl

    def append(path, row, **kw):
        if row["epoch"] == epoch:
            raise KeyboardInterrupt
        real(path, row, **kw)

    monkeypatch.setattr(train, "append_jsonl", append)
    return lambda: monkeypatch.setattr(train, "append_jsonl", real)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device mnistlab trains on by default here: CUDA on a GPU machine, else the CPU.
    Tests that mean the CPU ask for it (``--device cpu``); the rest compare on one device."""
    from mnistlab.runtime import resolve_device

    return resolve_device("auto")


WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def pytest_configure(config):
    if WORKER:  # two workers on two cores: one thread each, children too (alone tests take two)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    silent = [
        item.nodeid for item in items for m in item.iter_markers("slow") if not (m.args or m.kwargs.get("reason"))
    ]
    if silent:
        raise pytest.UsageError(f'slow tests must say why (@pytest.mark.slow("...")): {", ".join(silent[:5])}')
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cores(request, tmp_path_factory, monkeypatch):
    """On pytest-xdist workers: an `alone` test holds both cores; any other holds its share."""
    if not WORKER:
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # the session's folder, above each worker's own
    with open(shared / "cores.lock", "a") as cores, open(shared / "turnstile.lock", "a") as turnstile:
        if request.node.get_closest_marker("alone"):
            fcntl.flock(turnstile, fcntl.LOCK_EX)  # no test starts on the other worker ...
            fcntl.flock(cores, fcntl.LOCK_EX)  # ... and the one running there ends
            torch.set_num_threads(2)
            monkeypatch.setenv("OMP_NUM_THREADS", "2")
            monkeypatch.setenv("MKL_NUM_THREADS", "2")
            try:
                yield
            finally:
                torch.set_num_threads(1)
                fcntl.flock(cores, fcntl.LOCK_UN)
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_EX)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(cores, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(cores, fcntl.LOCK_UN)


@pytest.fixture
def toy():
    return synthetic_dataset()


def shared(tmp_path_factory, name: str, make) -> Path:
    """A folder made once a test session by `make(folder)`, whichever worker asks first (the
    others wait on a lock, then read it): a session fixture of pytest-xdist is per worker."""
    root = tmp_path_factory.getbasetemp().parent if WORKER else tmp_path_factory.getbasetemp()
    folder, done = root / "shared" / name, root / "shared" / f"{name}.done"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(root / "shared" / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                make(folder)
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


@pytest.fixture(scope="session")
def cnn_report(tmp_path_factory):
    """`mnistlab report --only cnn --seeds 0`: cnn trained with its defaults on the sample (8
    epochs), once a session, for the report's tests and the real-data bar. Read it only."""
    from mnistlab.cli import main

    def make(out):
        assert main(["report", "--only", "cnn", "--seeds", "0", "--out", str(out), "--no-progress"]) == 0

    return shared(tmp_path_factory, "cnn-report", make)


@pytest.fixture(scope="session")
def cnn_run_dir(tmp_path_factory):
    """The one trained classifier most tests read: a cnn trained 2 epochs on the sample through
    the CLI, with its figures (trained once a session; ~97% held-out). Read it only: a test that
    changes a run works on a copy (``shutil.copytree``)."""
    from mnistlab.cli import main

    def make(run):
        assert (
            main(["train", "cnn", "--dataset", "mnist-sample", "--epochs", "2", "--run-dir", str(run), "--no-progress"])
            == 0
        )

    return shared(tmp_path_factory, "cnn-run", make)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on a loopback port for this test session (skips without one)."""
    from postgres import Postgres

    pg = Postgres()
    why = pg.why_not()
    if why:
        pytest.skip(why)
    try:
        yield pg.start()
    finally:
        pg.stop()
