"""Services (issue 32): a tracking store or a study storage is checked before any folder is
made, local ones (SQLite files, file: URIs) like remote ones, each probe bounded in time; a
failure leaves nothing behind."""

from __future__ import annotations

import importlib

import pytest

from .conftest import device_node, fifo
from .test_inputs import SMALL, fails_cleanly

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _train(tmp_path, *extra):
    return ["train", "cnn", *SMALL, "--run-dir", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(
    "store, said",
    [
        (lambda tmp: f"sqlite:///{fifo(tmp / 'pipe.db')}", "a FIFO"),  # once: a hang past 60 s
        (lambda tmp: f"sqlite:///{device_node(tmp / 'zero.db')}", "a character device"),
        (lambda tmp: f"sqlite:///{_text(tmp / 'notes.db')}", "not a SQLite database"),
        (lambda tmp: "file:///proc/nope", "under /proc"),
        (lambda tmp: f"file://{_text(tmp / 'afile')}", "a file, not a folder"),
    ],
)
def test_a_local_tracking_store_is_checked_before_the_run_folder(store, said, tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow", reason="the 'track' extra is not installed")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store(tmp_path))
    fails_cleanly(_train(tmp_path, "--track", "mlflow"), capsys, "MLFLOW_TRACKING_URI", said)
    assert not (tmp_path / "run").exists()


def _text(path):
    path.write_text("some notes, not a database\n")
    return path


def test_a_missing_tracker_extra_is_named_before_the_run_folder(tmp_path, capsys, monkeypatch):
    real = importlib.import_module

    def without_tensorboard(name, *a, **kw):
        if name.split(".")[0] == "tensorboard":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *a, **kw)

    monkeypatch.setattr(importlib, "import_module", without_tensorboard)
    fails_cleanly(_train(tmp_path, "--track", "tensorboard"), capsys, "'track' extra", "pip install")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "storage, said",
    [
        (lambda tmp: "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=3", "cannot open"),
        (lambda tmp: f"sqlite:///{fifo(tmp / 'study.db')}", "a FIFO"),
        (lambda tmp: f"sqlite:///{_text(tmp / 'study.db')}", "not a SQLite database"),
    ],
)
def test_a_failing_study_storage_leaves_no_sweep_folder(storage, said, tmp_path, capsys):
    pytest.importorskip("optuna", reason="the 'sweep' extra is not installed")
    out = tmp_path / "sweep"
    argv = ["sweep", "cnn", "--grid", "lr=0.001", "--epochs", "1", "--dataset", "mnist-sample"]
    fails_cleanly([*argv, "--storage", storage(tmp_path), "--out", str(out)], capsys, "--storage", said)
    assert not out.exists()
