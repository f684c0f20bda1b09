"""The training loop, run folders and determinism, on small synthetic data."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import synthetic_dataset
from mnistlab._io import read_jsonl
from mnistlab.config import build_config
from mnistlab.data.batches import batch_indices
from mnistlab.errors import RunError
from mnistlab.infer import evaluate
from mnistlab.models._registry import create_model
from mnistlab.runs import latest_run, list_runs, load_run
from mnistlab.train.loop import fit
from mnistlab.train.run import reuse_run, train_run


def _cfg(**sets):
    return build_config("cnn", sets=[f"{k}={v}" for k, v in {"epochs": 2, "batch_size": 32, **sets}.items()])


@pytest.mark.outcome
def test_fit_learns_the_toy_task(toy):
    torch.manual_seed(0)
    model = create_model("cnn")
    before = evaluate(model, toy.test)
    hist = fit(model, toy.train, {"test": toy.test}, _cfg(epochs=3).train, progress=False)
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["test_acc"] > max(0.9, before["acc"] + 0.5)


def test_batches_cover_the_epoch_and_drop_a_lone_last_one():
    g = torch.Generator().manual_seed(0)
    idx = batch_indices(65, 32, g, "cpu")
    assert [len(b) for b in idx] == [32, 32]  # the lone 65th is dropped (BatchNorm needs 2)
    idx = batch_indices(70, 32, g, "cpu")
    assert sorted(torch.cat(idx).tolist()) == list(range(70))


@pytest.mark.parametrize("schedule,optimizer", [("onecycle", "sgd"), ("cosine", "adamw")])
def test_schedules_and_optimizers_train(toy, schedule, optimizer):
    cfg = _cfg(schedule=schedule, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.003)
    hist = fit(create_model("cnn"), toy.train, {}, cfg.train, progress=False)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_run_folder_records_everything(toy, tmp_path, device):
    run = train_run(_cfg(), tmp_path / "r", dataset=toy, progress=False)
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "env.json",
        "checkpoint.pt",
        "figures",
        "confusion.csv",
    } <= files
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "test_acc" in rows[0]
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["device"] == str(device) and env["seed"] == 0 and env["torch"] == torch.__version__
    for fig in ("curves.png", "confusion.png"):
        assert (tmp_path / "r" / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model_name"] == "cnn" and cfg["data"]["dataset"] == "synthetic" and cfg["train"]["epochs"] == 2
    assert run.summary["n_test"] == 64


def test_load_run_rebuilds_the_same_model(toy, tmp_path):
    run = train_run(_cfg(epochs=1), tmp_path / "r", dataset=toy, progress=False)
    again = load_run(tmp_path / "r")
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(run.model.eval().cpu()(x), again.model(x))  # train_run hands back its model on its device
    assert again.summary["test_acc"] == run.summary["test_acc"] and len(again.metrics) == 1


def test_same_seed_same_metrics_other_seed_differs(toy, tmp_path):
    a = train_run(_cfg(), tmp_path / "a", dataset=toy, progress=False)
    b = train_run(_cfg(), tmp_path / "b", dataset=toy, progress=False)
    c = train_run(_cfg(seed=1), tmp_path / "c", dataset=toy, progress=False)
    assert a.metrics == [dict(r, train_time_s=x["train_time_s"]) for r, x in zip(b.metrics, a.metrics)]
    assert a.metrics[0]["train_loss"] != c.metrics[0]["train_loss"]


def test_existing_run_is_not_overwritten(toy, tmp_path):
    train_run(_cfg(epochs=1), tmp_path / "r", dataset=toy, progress=False)
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(RunError, match="already holds a run"):
        train_run(_cfg(epochs=1, seed=3), tmp_path / "r", dataset=toy, progress=False)
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before


def test_validation_split_is_reported_separately(toy, tmp_path):
    run = train_run(_cfg(val_fraction=0.25), tmp_path / "r", dataset=toy, progress=False)
    assert "val_acc" in run.metrics[0] and "test_acc" not in run.metrics[0]
    assert run.summary["n_train"] == 192 and "test_acc" in run.summary


def test_listing_and_latest(toy, tmp_path):
    train_run(_cfg(epochs=1), tmp_path / "cnn-a", dataset=toy, progress=False)
    (tmp_path / "junk").mkdir()
    runs = list_runs(tmp_path)
    assert [r["model"] for r in runs] == ["cnn"] and runs[0]["complete"]
    assert latest_run(tmp_path, task="classify") == tmp_path / "cnn-a"
    # a newer run killed mid-way (checkpoint, no summary) is listed as incomplete and never picked
    train_run(_cfg(epochs=1), tmp_path / "cnn-b", dataset=toy, progress=False)
    (tmp_path / "cnn-b" / "summary.json").unlink()
    assert [r["complete"] for r in list_runs(tmp_path)] == [True, False]
    assert latest_run(tmp_path, task="classify") == tmp_path / "cnn-a"
    with pytest.raises(RunError, match="no finished reconstruct run"):
        latest_run(tmp_path, task="reconstruct")


def test_reuse_loads_instead_of_training(tmp_path, monkeypatch):
    ds = synthetic_dataset()
    train_run(_cfg(epochs=1), tmp_path / "r", dataset=ds, progress=False)
    import mnistlab.train.run as tr

    monkeypatch.setattr(tr, "dataset_for", lambda *a, **k: ds)
    monkeypatch.setattr(tr, "fit", lambda *a, **k: pytest.fail("reuse must not train"))
    run = reuse_run(tmp_path / "r")
    assert 0 <= run.summary["test_acc"] <= 1


def test_load_run_errors(tmp_path):
    with pytest.raises(RunError, match="no such run folder"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no config.json"):
        load_run(tmp_path / "empty")


@pytest.mark.slow("starts mnistlab in child processes")
def test_resume_after_sigkill_ends_as_if_never_stopped(tmp_path):
    """A cnn killed with SIGKILL after epoch 2 of 4 and resumed: the same final metrics (1e-6)
    as the same run uninterrupted (CPU; dropout and data order continue from saved RNG state)."""
    import signal
    import subprocess
    import sys
    import time

    # 20 batches an epoch: what is compared (every epoch's figures, the final ones) does not need more
    args = [
        "train",
        "cnn",
        "--dataset",
        "mnist-sample",
        "--epochs",
        "4",
        "--set",
        "limit_batches=20",
        "--no-progress",
        "--figures",
        "none",
    ]
    env = {**os.environ, "MNISTLAB_RUNS": str(tmp_path)}
    whole = subprocess.run(
        [sys.executable, "-m", "mnistlab", *args, "--run-dir", str(tmp_path / "whole")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *args, "--run-dir", str(tmp_path / "cut")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "cut" / "summary.json").exists()
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistlab",
            "train",
            "cnn",
            "--resume",
            str(tmp_path / "cut"),
            "--no-progress",
            "--figures",
            "none",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    a = json.loads((tmp_path / "whole" / "summary.json").read_text())
    b = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert b["epochs"] == 4 and abs(a["test_acc"] - b["test_acc"]) <= 1e-6
    assert abs(a["test_loss"] - b["test_loss"]) <= 1e-6
    rows_a, rows_b = (read_jsonl(tmp_path / r / "metrics.jsonl") for r in ("whole", "cut"))
    assert [r["epoch"] for r in rows_b] == [1, 2, 3, 4]
    assert all(abs(x["train_loss"] - y["train_loss"]) <= 1e-6 for x, y in zip(rows_a, rows_b))
    # a finished run is not resumed again
    done = subprocess.run(
        [sys.executable, "-m", "mnistlab", "train", "cnn", "--resume", str(tmp_path / "cut")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1 and "nothing to resume" in done.stderr


def test_resume_continues_a_two_stage_model(tmp_path, monkeypatch):
    """The encoder classifier stopped in its second stage goes on in that stage."""
    import mnistlab.train.run as tr

    ds = synthetic_dataset()
    ae = train_run(build_config("ae-dense", flags={"epochs": 1}), tmp_path / "ae", dataset=ds, progress=False)
    cfg = lambda: build_config(
        "encoder-classifier",
        flags={  # noqa: E731
            "epochs": 2,
            "model.encoder": str(ae.path),
            "model.finetune_epochs": 2,
            "dropout": 0.3,
        },
    )
    whole = train_run(cfg(), tmp_path / "whole", dataset=ds, progress=False)
    real, calls = tr.append_jsonl, []

    def killed_at_epoch_4(path, row, **kw):
        calls.append(row["epoch"])
        if row["epoch"] == 4:
            raise KeyboardInterrupt  # stands in for a kill between epochs
        real(path, row, **kw)

    monkeypatch.setattr(tr, "append_jsonl", killed_at_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg(), tmp_path / "cut", dataset=ds, progress=False)
    monkeypatch.setattr(tr, "append_jsonl", real)
    monkeypatch.setattr(tr, "dataset_for", lambda *a, **k: ds)
    resumed = tr.resume_run(tmp_path / "cut", model="encoder-classifier")
    assert resumed.summary["epochs"] == 4
    assert [r["stage"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")] == [
        "frozen",
        "frozen",
        "finetune",
        "finetune",
    ]
    assert abs(resumed.summary["test_acc"] - whole.summary["test_acc"]) <= 1e-6
    assert abs(resumed.summary["test_loss"] - whole.summary["test_loss"]) <= 1e-6
    with pytest.raises(RunError, match="not 'cnn'"):
        tr.resume_run(tmp_path / "whole", model="cnn")


def test_files_get_the_users_umask(tmp_path):
    """Atomic writes used to leave mode 0600: a teammate could not read a shared run folder."""
    from mnistlab._io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "b.json", {"x": 1})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
