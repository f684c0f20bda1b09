"""The training step, eager or as the captured step's function (steps.py), on the CPU: the
plan each model gets, the static step's hyper-parameter tensors, and that runs and resumes
go the same either way. The CUDA-graph replay itself is checked in test_gpu.py."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

from conftest import kill_at_epoch
from mnistlab.config import build_config
from mnistlab.models import create_model
from mnistlab.train import loop, steps
from mnistlab.train import run as train


def _cfg(model="cnn-fast", **sets):
    return build_config(model, sets=[f"{k}={v}" for k, v in {"epochs": 1, **sets}.items()])


@pytest.mark.parametrize("verified", [False, True])
@pytest.mark.parametrize(
    "model,device,graph,step,amp",
    [
        ("cnn", "cpu", "auto", "eager", "fp32"),
        ("cnn", "cpu", "on", "static", "fp32"),
        ("cnn", "cuda", "auto", "captured", "bf16"),  # bf16 measured faster inside a graph for cnn
        ("cnn-fast", "cuda", "auto", "captured", "fp32"),  # ... and slower for cnn-fast
        ("cnn", "cuda", "on", "captured", "bf16"),
        ("cnn", "cuda", "off", "eager", "fp32"),  # eagerly fp32 won for every model
        ("loop-parity", "cuda", "auto", "eager", "fp32"),  # coupled optimisers: eager, said so
        ("ae-reencode", "cpu", "on", "eager", "fp32"),
    ],
)
def test_each_model_gets_a_plan(monkeypatch, model, device, graph, step, amp, verified):
    """Until the captured step has passed on a GPU (CAPTURE_VERIFIED), graph=auto runs eagerly
    on CUDA, in fp32, and graph=on captures saying it is unverified."""
    monkeypatch.setattr(steps, "CAPTURE_VERIFIED", verified)
    if not verified and (device, graph, step) == ("cuda", "auto", "captured"):
        step, amp = "eager", "fp32"
    cfg = _cfg(model, graph=graph)
    how = steps.plan(create_model(model, cfg.model), cfg.train, torch.device(device))
    assert (how.graph, how.amp) == (step, amp)
    asked = graph == "on" or (graph == "auto" and device == "cuda" and verified)
    assert bool(how.why) == (asked and (step != "captured" or not verified)), how
    if model in ("loop-parity", "ae-reencode") and asked:
        assert "coupled optimisers" in how.why
    assert (how.why == steps.UNVERIFIED) == (step == "captured" and not verified)


@pytest.mark.parametrize(
    "sets,reason",
    [
        ({"optimizer": "sgd"}, "sgd has no capturable form"),
        ({"compile": "true"}, "train.compile is on"),
        ({"channels_last": "off"}, "channels_last is off"),
        ({"amp": "bf16"}, None),
    ],
)
def test_what_keeps_a_step_from_being_captured_is_named(sets, reason, monkeypatch):
    monkeypatch.setattr(steps, "CAPTURE_VERIFIED", True)
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
    s_plain, s_static = loop.make_scheduler(plain, cfg, 20), loop.make_scheduler(static, cfg, 20)
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


@pytest.mark.outcome
def test_the_static_step_trains_as_the_eager_one(toy):
    """Same seed, same batches: the first step is the same to float rounding, and after a short
    fit the two reach the same accuracy (Adam amplifies rounding differences step by step)."""
    out = {}
    for graph in ("off", "on"):
        for limit in (1, 0):
            cfg = _cfg("cnn-fast", graph=graph, epochs=3, batch_size=32, limit_batches=limit)
            torch.manual_seed(0)
            model = create_model("cnn-fast", cfg.model)
            hist = loop.fit(model, toy.train, {"test": toy.test}, cfg.train, progress=False)
            out[graph, limit] = (torch.cat([p.detach().flatten() for p in model.parameters()]), hist)
    first = (out["off", 1][0] - out["on", 1][0]).abs().max().item()
    assert first < 1e-6, first
    off, on = out["off", 0][1], out["on", 0][1]
    assert on[-1]["test_acc"] > 0.9 and abs(on[-1]["test_acc"] - off[-1]["test_acc"]) <= 0.05
    assert [r["lr"] for r in on] == pytest.approx([r["lr"] for r in off])  # the schedule, through the tensor
    assert isinstance(on[-1]["lr"], float)


@pytest.mark.outcome
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


def test_env_json_is_written_once_saying_how_the_steps_ran(toy, tmp_path, monkeypatch, device):
    """A step that falls back mid-fit (as a failed CUDA-graph capture does) is what env.json
    says, with its note; env.json is written once, when fit knows how its steps run, with the
    run's environment beside it."""
    real_run = steps.Step.run

    def failing_capture(self, idx):
        if self.plan.graph != "eager":
            self.plan = steps.Plan(
                "eager", self.plan.amp, "capturing the step failed (RuntimeError: test); running eagerly"
            )
        return real_run(self, idx)

    cfg = _cfg("cnn-fast", graph="on", epochs=2, batch_size=32)
    writes = []
    real_write = train.write_json
    monkeypatch.setattr(
        train, "write_json", lambda path, obj, **kw: writes.append(path.name) or real_write(path, obj, **kw)
    )
    monkeypatch.setattr(steps.Step, "run", failing_capture)
    train.train_run(cfg, tmp_path / "r", dataset=toy, progress=False, figures=False)
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    assert writes.count("env.json") == 1
    assert env["step"] == "eager" and "capturing the step failed" in env["step_note"]
    assert env["seed"] == 0 and env["device"] == str(device) and env["data_source"] == "synthetic"


def test_graph_is_a_checked_config_key():
    from mnistlab.errors import ConfigError

    with pytest.raises(ConfigError, match="train.graph"):
        build_config("cnn", sets=["graph=maybe"])


def test_a_model_with_state_of_its_own_between_epochs_is_not_captured(monkeypatch):
    """A replayed graph never sees Python attributes start_epoch sets: such a model runs eagerly."""
    monkeypatch.setattr(steps, "CAPTURE_VERIFIED", True)
    model = create_model("cnn")
    model.start_epoch = lambda epoch: None  # not enough: the type's own method is what counts
    assert steps.plan(model, _cfg("cnn").train, torch.device("cuda")).graph == "captured"

    class Warming(type(model)):
        def start_epoch(self, epoch):
            self.warm = epoch < 3

    how = steps.plan(Warming(model.config), _cfg("cnn").train, torch.device("cuda"))
    assert how.graph == "eager" and "state of its own" in how.why


class _HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Every read of a tensor's value by the host (``.item()``, a 0-dim tensor passed where an op
    takes a Python number): on CUDA each is a device sync, which a graph capture refuses."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.ops.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name,optimizer", [("cnn", "adam"), ("cnn-fast", "adam"), ("cnn-robust", "adamw")])
def test_the_step_a_graph_captures_never_reads_a_value_back_to_the_host(toy, monkeypatch, name, optimizer):
    """The whole captured function (gather, augmentation, dropout, forward, loss, backward, the
    capturable optimiser with its tensor learning rate and beta1, the metric sums), run on the
    CPU with the optimisers set up exactly as on CUDA: no host read at all. Tensor betas on the
    foreach path made three a step, so every capture on a GPU would have failed."""
    _capturable_on_the_cpu(monkeypatch)
    real_prepare, real_call = steps.prepare_optimizers, steps.Step.__call__

    def as_on_cuda(optimizers, plan, device):
        real_prepare(optimizers, plan, device)
        for opt in optimizers.values():
            steps.make_capturable(opt)

    reads, calls = _HostReads(), []

    def watched(self, idx):
        calls.append(len(idx))
        with reads:
            real_call(self, idx)

    monkeypatch.setattr(steps, "prepare_optimizers", as_on_cuda)
    monkeypatch.setattr(steps.Step, "__call__", watched)
    cfg = _cfg(name, graph="on", optimizer=optimizer, epochs=2, batch_size=24, limit_batches=5)
    torch.manual_seed(0)
    model = create_model(name, cfg.model)
    hist = loop.fit(model, toy.train, {}, cfg.train, progress=False)
    assert len(calls) == 10 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in hist)
    assert reads.ops == [], f"{len(reads.ops)} host reads in {len(calls)} steps"


def _capturable_on_the_cpu(monkeypatch):
    """Let Adam run its capturable update on CPU tensors (it checks the device, nothing more)."""
    adam = importlib.import_module("torch.optim.adam")
    monkeypatch.setattr(adam, "_get_capturable_supported_devices", lambda *a, **k: ["cpu", "cuda"])


def test_after_a_failed_capture_the_optimiser_is_the_plain_one_again(monkeypatch):
    """make_plain: what graph=off would run (float lr and betas, not capturable, foreach as torch
    chooses, step counts on the host), so the eager steps after a fallback pay no device syncs."""
    _capturable_on_the_cpu(monkeypatch)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    steps.prepare_optimizers({"main": opt}, steps.Plan("static", "fp32"), "cpu")
    steps.make_capturable(opt)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    g = opt.param_groups[0]
    assert isinstance(g["lr"], torch.Tensor) and isinstance(g["betas"][0], torch.Tensor)
    assert isinstance(g["betas"][1], float) and g["capturable"] and g["foreach"] is False
    steps.make_plain(opt)
    assert isinstance(g["lr"], float) and all(isinstance(b, float) for b in g["betas"]) and "_beta1" not in g
    assert not g["capturable"] and g["foreach"] is None and not opt.defaults["capturable"]
    assert all(st["step"].device.type == "cpu" for st in opt.state.values())
    opt.step()  # the plain update takes the host-side step counts
    assert g["lr"] == pytest.approx(0.01, rel=1e-6)  # the float32 tensor, read back once


def test_the_cosine_schedule_is_closed_form_in_python_floats():
    """The values of torch's CosineAnnealingLR on a float lr, at every step, with the lr a tensor
    as the static and captured steps hold it (float32: 1e-6 relative), never drifting as the
    recursive form computed on the tensor would; an older CosineAnnealingLR state resumes."""
    w = [torch.nn.Parameter(torch.zeros(2))]
    ref_opt, ours_opt = torch.optim.Adam(w, lr=0.01), torch.optim.Adam(w, lr=0.01)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=500)
    ours = steps.CosineSchedule(ours_opt, 500)
    steps.tensor_hypers(ours_opt, "cpu")
    expected, got = [], []
    for _ in range(500):
        ref_opt.step()
        ours_opt.step()
        ref.step()
        ours.step()
        expected.append(ref_opt.param_groups[0]["lr"])
        got.append(float(ours_opt.param_groups[0]["lr"]))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-12) and got[-1] == 0.0
    again = steps.CosineSchedule(torch.optim.Adam(w, lr=0.01), 500)
    again.load_state_dict(ref.state_dict())
    assert again.last_epoch == 500
