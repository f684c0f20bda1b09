"""--track tensorboard / mlflow, read back with the real readers: TensorBoard's event reader
and MLflow's client."""

from __future__ import annotations

import json

import pytest

from conftest import kill_at_epoch, synthetic_dataset
from mnistlab._io import read_jsonl
from mnistlab.config import build_config
from mnistlab.errors import ConfigError
from mnistlab.train.run import resume_run, train_run

pytest.importorskip("tensorboard", reason="the 'track' extra is not installed")
mlflow = pytest.importorskip("mlflow", reason="the 'track' extra is not installed")


def _cfg(**train):
    return build_config("cnn", flags={"epochs": 2, "batch_size": 64, "track": "tensorboard,mlflow", **train})


@pytest.mark.slow("writes to TensorBoard and MLflow and reads them back")
def test_scalars_params_and_figures_reach_both(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    run = train_run(_cfg(), tmp_path / "r", dataset=synthetic_dataset(), progress=False)
    assert not (tmp_path / "mlruns").exists()  # nothing written where the command ran, all beside the runs
    rows = read_jsonl(run.path / "metrics.jsonl")
    events = EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    tb = events.Scalars("test_acc")
    assert [e.step for e in tb] == [1, 2]
    assert [e.value for e in tb] == pytest.approx([r["test_acc"] for r in rows])
    assert "train_loss" in events.Tags()["scalars"] and "summary/test_acc" in events.Tags()["scalars"]

    known = json.loads((run.path / "mlflow.json").read_text())
    assert known["tracking_uri"].startswith("sqlite:///")  # the local default, in the runs folder
    client = mlflow.tracking.MlflowClient(known["tracking_uri"])
    history = client.get_metric_history(known["run_id"], "test_acc")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([r["test_acc"] for r in rows])
    got = client.get_run(known["run_id"])
    assert got.data.params["train.epochs"] == "2" and got.data.params["model_name"] == "cnn"
    assert got.data.metrics["summary_test_acc"] == pytest.approx(run.summary["test_acc"])
    assert got.data.tags["run_folder"] == str(run.path) and got.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(known["run_id"], "figures")} >= {"figures/curves.png"}


@pytest.mark.slow("writes to TensorBoard and MLflow and reads them back")
def test_a_resumed_run_goes_on_in_the_same_mlflow_run(tmp_path, monkeypatch):
    import mnistlab.train.run as tr

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ds = synthetic_dataset()
    restore = kill_at_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_run(_cfg(epochs=3), tmp_path / "r", dataset=ds, progress=False)
    restore()
    monkeypatch.setattr(tr, "dataset_for", lambda *a, **k: ds)
    run_id = json.loads((tmp_path / "r" / "mlflow.json").read_text())["run_id"]
    resume_run(tmp_path / "r")
    known = json.loads((tmp_path / "r" / "mlflow.json").read_text())
    assert known["run_id"] == run_id
    steps = [m.step for m in mlflow.tracking.MlflowClient(known["tracking_uri"]).get_metric_history(run_id, "test_acc")]
    assert sorted(set(steps)) == [1, 2, 3]


def test_unknown_tracker_and_missing_extra_are_clear(monkeypatch):
    import importlib

    from mnistlab.train import track

    with pytest.raises(ConfigError, match="train.track"):
        build_config("cnn", flags={"track": "wandb"})
    real = importlib.import_module

    def no_mlflow(name, *a):
        if name == "mlflow":
            raise ImportError("no mlflow", name="mlflow")
        return real(name, *a)

    monkeypatch.setattr(track.importlib, "import_module", no_mlflow)
    with pytest.raises(ConfigError, match=r"needs the 'track' extra .*pip install 'mnistlab\[track\]'"):
        track.MLflow(None, {})
