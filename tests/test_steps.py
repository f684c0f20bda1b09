"""The training step, eager or as the captured step's function (steps.py), on the CPU: the
plan each model gets, the static step's hyper-parameter tensors, and that runs and resumes
go the same either way. The CUDA-graph replay itself is checked in test_gpu.py."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import kill_at_epoch
from mnistlab import steps, train
from mnistlab.config import build_config
from mnistlab.models import create_model


def _cfg(model="cnn-fast", **sets):
    return build_config(model, sets=[f"{k}={v}" for k, v in {"epochs": 1, **sets}.items()])


@pytest.mark.parametrize("model,device,graph,step,amp", [
    ("cnn", "cpu", "auto", "eager", "fp32"),
    ("cnn", "cpu", "on", "static", "fp32"),
    ("cnn", "cuda", "auto", "captured", "bf16"),  # bf16 measured faster inside a graph for cnn
    ("cnn-fast", "cuda", "auto", "captured", "fp32"),  # ... and slower for cnn-fast
    ("cnn", "cuda", "off", "eager", "fp32"),  # eagerly fp32 won for every model
    ("loop-parity", "cuda", "auto", "eager", "fp32"),  # coupled optimisers: eager, said so
    ("ae-reencode", "cpu", "on", "eager", "fp32"),
])
def test_each_model_gets_a_plan(model, device, graph, step, amp):
    cfg = _cfg(model, graph=graph)
    how = steps.plan(create_model(model, cfg.model), cfg.train, torch.device(device))
    assert (how.graph, how.amp) == (step, amp)
    asked_and_refused = graph == "on" or (device == "cuda" and graph == "auto" and step == "eager")
    assert bool(how.why) == asked_and_refused, how
    if model in ("loop-parity", "ae-reencode"):
        assert "coupled optimisers" in how.why


@pytest.mark.parametrize("sets,reason", [({"optimizer": "sgd"}, "sgd has no capturable form"),
                                         ({"compile": "true"}, "train.compile is on"),
                                         ({"channels_last": "off"}, "channels_last is off"),
                                         ({"amp": "bf16"}, None)])
def test_what_keeps_a_step_from_being_captured_is_named(sets, reason):
    cfg = _cfg("cnn", graph="on", **sets)
    how = steps.plan(create_model("cnn", cfg.model), cfg.train, torch.device("cuda"))
    assert how.graph == ("eager" if reason else "captured") and (reason or "") in how.why
    # auto: bf16 for cnn only inside a graph; asked for, bf16 whatever the step
    assert how.amp == ("bf16" if sets.get("amp") == "bf16" or not reason else "fp32")


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_onecycle_momentum_reaches_the_tensor_a_graph_reads():
    """OneCycleLR writes beta1 back as a float each step; the static step's tensor follows it,
    and the learning rate is filled in place (the same tensor object all along)."""
    model = torch.nn.Linear(3, 2)
    plain = torch.optim.Adam(model.parameters(), lr=0.01)
    static = torch.optim.Adam(model.parameters(), lr=0.01)
    cfg = _cfg("cnn", schedule="onecycle", epochs=1).train
    s_plain, s_static = train.make_scheduler(plain, cfg, 20), train.make_scheduler(static, cfg, 20)
    steps.tensor_hypers(static, "cpu")
    lr_t, beta_t = static.param_groups[0]["lr"], static.param_groups[0]["_beta1"]
    for _ in range(7):
        s_plain.step()
        s_static.step()
        steps.sync_hypers(static)
    g = static.param_groups[0]
    assert g["lr"] is lr_t and g["betas"][0] is beta_t
    assert g["lr"].item() == pytest.approx(plain.param_groups[0]["lr"], rel=1e-6)
    assert beta_t.item() == pytest.approx(plain.param_groups[0]["betas"][0], rel=1e-6)
    assert plain.param_groups[0]["betas"][0] != pytest.approx(0.95)  # it did cycle
    saved = steps.float_hypers(static.state_dict())["param_groups"][0]
    assert isinstance(saved["lr"], float) and all(isinstance(b, float) for b in saved["betas"])
    assert "_beta1" not in saved


def test_the_static_step_trains_as_the_eager_one(toy):
    """Same seed, same batches: the first step is the same to float rounding, and after a short
    fit the two reach the same accuracy (Adam amplifies rounding differences step by step)."""
    out = {}
    for graph in ("off", "on"):
        for limit in (1, 0):
            cfg = _cfg("cnn-fast", graph=graph, epochs=3, batch_size=32, limit_batches=limit)
            torch.manual_seed(0)
            model = create_model("cnn-fast", cfg.model)
            hist = train.fit(model, toy.train, {"test": toy.test}, cfg.train, progress=False)
            out[graph, limit] = (torch.cat([p.detach().flatten() for p in model.parameters()]), hist)
    first = (out["off", 1][0] - out["on", 1][0]).abs().max().item()
    assert first < 1e-6, first
    off, on = out["off", 0][1], out["on", 0][1]
    assert on[-1]["test_acc"] > 0.9 and abs(on[-1]["test_acc"] - off[-1]["test_acc"]) <= 0.05
    assert [r["lr"] for r in on] == pytest.approx([r["lr"] for r in off])  # the schedule, through the tensor
    assert isinstance(on[-1]["lr"], float)


def test_a_static_run_records_its_plan_and_resumes_eagerly(toy, tmp_path, monkeypatch, capsys):
    """graph=on on a CPU: said once, recorded in env.json; its checkpoint (plain floats in the
    optimiser state) resumes under graph=off, and the other way round."""
    cfg = _cfg("cnn-fast", graph="on", epochs=2, batch_size=32)
    restore = kill_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train.train_run(cfg, tmp_path / "r", dataset=toy, progress=False, figures=False)
    restore()
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env["step"] == "static" and env["amp"] == "fp32" and "uncaptured" in env["step_note"]
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    group = state["extra"]["resume"]["optimizers"]["main"]["param_groups"][0]
    assert isinstance(group["lr"], float) and isinstance(group["betas"][0], float)
    stored = json.loads((tmp_path / "r" / "config.json").read_text())
    stored["train"]["graph"] = "off"
    (tmp_path / "r" / "config.json").write_text(json.dumps(stored))
    monkeypatch.setattr(train, "dataset_for", lambda *a, **k: toy)
    run = train.resume_run(tmp_path / "r")
    assert run.summary["epochs"] == 2 and run.summary["test_acc"] > 0.9


def test_env_json_follows_a_capture_that_falls_back_to_eager(toy, tmp_path, monkeypatch):
    """start_run records the plan (here static); a step that falls back mid-fit (as a failed
    CUDA-graph capture does) is what env.json says afterwards, with its note; nothing else in
    env.json changes."""
    real_run = steps.Step.run

    def failing_capture(self, idx):
        if self.plan.graph != "eager":
            self.plan = steps.Plan("eager", self.plan.amp, "capturing the step failed (RuntimeError: test); "
                                                           "running eagerly")
        return real_run(self, idx)

    cfg = _cfg("cnn-fast", graph="on", epochs=1, batch_size=32)
    written = []
    real_start = train.start_run
    monkeypatch.setattr(train, "start_run", lambda *a, **k: written.append(
        json.loads(((r := real_start(*a, **k)).path / "env.json").read_text())) or r)
    monkeypatch.setattr(steps.Step, "run", failing_capture)
    train.train_run(cfg, tmp_path / "r", dataset=toy, progress=False, figures=False)
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert written[0]["step"] == "static"  # what fit was going to do
    assert env["step"] == "eager" and "capturing the step failed" in env["step_note"]
    assert {k: v for k, v in env.items() if not k.startswith("step")} == \
        {k: v for k, v in written[0].items() if not k.startswith("step")}


def test_graph_is_a_checked_config_key():
    from mnistlab.errors import ConfigError

    with pytest.raises(ConfigError, match="train.graph"):
        build_config("cnn", sets=["graph=maybe"])
