"""On a CUDA GPU only (skipped elsewhere): the captured training step replays exactly what the
same step computes uncaptured, a run resumes on the GPU as if never stopped, and a step that
cannot be captured falls back to eager with one line."""
from __future__ import annotations

import pytest
import torch

from conftest import kill_at_epoch
from mnistlab import steps, train
from mnistlab.config import build_config
from mnistlab.models import create_model

pytestmark = pytest.mark.gpu


@pytest.fixture
def deterministic():
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def _params(model):
    return torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


@pytest.mark.parametrize("name", ["cnn", "cnn-fast", "cnn-robust"])
def test_captured_step_equals_the_same_step_uncaptured(toy, deterministic, monkeypatch, name):
    """50 steps (3 eager warm-up, then replays), fp32: the same weights and metric sums to 1e-6.
    Dropout (cnn) and robust augmentation (cnn-robust) draw on the GPU under replay too."""
    cfg = build_config(name, sets=["epochs=1", "batch_size=16", "limit_batches=50", "amp=off", "graph=on",
                                   "device=cuda"])
    real_plan = steps.plan
    out = {}
    for kind in ("static", "captured"):
        monkeypatch.setattr(steps, "plan", lambda *a, _k=kind, **k: steps.Plan(_k, "fp32"))
        torch.manual_seed(0)
        torch.cuda.manual_seed_all(0)
        model = create_model(name, cfg.model)
        hist = train.fit(model, toy.train, {}, cfg.train, device="cuda", progress=False)
        out[kind] = (_params(model), hist[-1]["train_loss"])
    monkeypatch.setattr(steps, "plan", real_plan)
    assert (out["static"][0] - out["captured"][0]).abs().max().item() <= 1e-6
    assert out["static"][1] == pytest.approx(out["captured"][1], abs=1e-6)


def test_a_run_resumes_on_the_gpu_as_if_never_stopped(toy, deterministic, tmp_path, monkeypatch):
    cfg = lambda: build_config("cnn-fast", sets=["epochs=3", "batch_size=32", "device=cuda"])  # noqa: E731
    whole = train.train_run(cfg(), tmp_path / "whole", dataset=toy, progress=False, figures=False)
    restore = kill_at_epoch(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train.train_run(cfg(), tmp_path / "cut", dataset=toy, progress=False, figures=False)
    restore()
    monkeypatch.setattr(train, "dataset_for", lambda *a, **k: toy)
    resumed = train.resume_run(tmp_path / "cut")
    for key, value in whole.summary.items():
        if key.startswith("test_"):
            assert resumed.summary[key] == pytest.approx(value, abs=1e-6), key


def test_a_step_that_cannot_be_captured_falls_back_with_one_line(toy, capsys):
    """A loss that reads a value on the host (.item()) cannot be captured: one notice, eager
    from there on, and the fit completes with finite figures."""
    cfg = build_config("cnn-fast", sets=["epochs=2", "batch_size=32", "graph=on", "device=cuda"])
    model = create_model("cnn-fast", cfg.model)
    loss = model.loss

    def syncing_loss(x, y):
        out = loss(x, y)
        if out["loss"].item() < 0:  # a host sync: illegal while capturing
            raise AssertionError
        return out

    model.loss = syncing_loss
    hist = train.fit(model, toy.train, {"test": toy.test}, cfg.train, device="cuda", progress=False)
    err = capsys.readouterr().err
    assert err.count("capturing the step failed") == 1, err
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in hist) and hist[-1]["test_acc"] > 0.5
