"""Start-up cost: what a command imports, figures off the critical path, and the fast
paths (optimisers that skip torch's compile guard, one test pass for figures and numbers)
equal to the plain ones."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from mnistlab import runtime
from mnistlab.cli import main
from mnistlab.infer import evaluate, evaluate_and_predict, predict
from mnistlab.models._registry import create_model


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_and_parser_pull_in_no_torch():
    loaded = _python(
        "import sys, mnistlab; from mnistlab.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    assert loaded == "[]"


@pytest.mark.slow("starts mnistlab in child processes")
def test_a_dry_run_imports_no_dynamo(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "mnistlab",
            "train",
            "cnn-fast",
            "--dataset",
            "mnist-sample",
            "--dry-run",
            "--no-progress",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")}
    assert "torch" in imported and "torch.optim.adam" in imported  # the listing is whole: it trained
    assert not {m for m in imported if m.startswith("torch._dynamo")}
    assert (tmp_path / "run" / "figures" / "confusion.png").is_file()


@pytest.mark.slow("starts mnistlab in child processes")
def test_deferred_optimisers_become_torch_s_own_once_dynamo_is_imported():
    """In a fresh process: no torch._dynamo through a whole training step; once something
    imports it, the methods take torch's real dynamo-disabled form."""
    code = """
import sys, torch
from mnistlab import runtime
assert runtime.defer_dynamo() > 0
m = torch.nn.Linear(4, 2)
opt = runtime.plain_optimizer(torch.optim.AdamW)(m.parameters(), lr=0.1)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4)
m(torch.ones(3, 4)).sum().backward(); opt.step(); sched.step(); opt.zero_grad(); opt.state_dict()
print('torch._dynamo' in sys.modules)
import torch._dynamo
m(torch.ones(3, 4)).sum().backward(); opt.step(); opt.zero_grad()
fn = torch.optim.Optimizer.zero_grad.__wrapped__
print(getattr(fn, '__dynamo_disable').__qualname__)
"""
    before, real = _python(code).splitlines()
    assert before == "False"
    assert "_deferred" not in real  # torch's disabled function now, not the deferring one


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (torch.optim.Adam, {"lr": 0.01, "weight_decay": 1e-4}),
        (torch.optim.AdamW, {"lr": 0.01}),
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ],
)
def test_plain_optimizer_steps_exactly_as_torch_s(cls, kwargs):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    fast = runtime.plain_optimizer(cls)(a.parameters(), **kwargs)
    plain = cls(b.parameters(), **kwargs)
    assert isinstance(fast, cls) and type(fast) is not cls
    scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=12) for o in (fast, plain)]
    for step in range(12):
        x = torch.randn(8, 6, generator=torch.Generator().manual_seed(step))
        for model, opt, sched in ((a, fast, scheds[0]), (b, plain, scheds[1])):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
            sched.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert json.dumps(fast.state_dict()["param_groups"]) == json.dumps(plain.state_dict()["param_groups"])


def test_one_test_pass_gives_the_figures_and_the_numbers(toy):
    net = create_model("cnn-fast")
    metrics, preds = evaluate_and_predict(net, toy.test, 25)
    assert metrics == evaluate(net, toy.test, 25)
    assert torch.equal(preds, predict(net, toy.test.images, 25).argmax(1))
    ae = create_model("ae-dense")
    assert evaluate_and_predict(ae, toy.test, 25) == (evaluate(ae, toy.test, 25), None)


@pytest.mark.parametrize("model", ["cnn-fast", "ae-dense"])
def test_figures_none_writes_everything_but_figures(tmp_path, capsys, model):
    for figures in ("none", "end"):
        run = tmp_path / figures
        assert (
            main(
                [
                    "train",
                    model,
                    "--dataset",
                    "mnist-sample",
                    "--dry-run",
                    "--no-progress",
                    "--figures",
                    figures,
                    "--run-dir",
                    str(run),
                ]
            )
            == 0
        )
        files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
        pngs = {f for f in files if f.endswith(".png")}
        assert {"config.json", "summary.json", "metrics.jsonl", "env.json", "checkpoint.pt"} <= files, files
        assert ("confusion.csv" in files) == (model == "cnn-fast")
        if figures == "none":
            assert not pngs
        else:
            want = (
                {"figures/curves.png", "figures/confusion.png"}
                if model == "cnn-fast"
                else {"figures/reconstructions_before.png", "figures/reconstructions_after.png", "figures/curves.png"}
            )
            assert want <= pngs, pngs
    out = capsys.readouterr().out
    assert out.count("run folder:") == 2 and out.count("figures:") == 1


def test_a_pass_in_channels_last_leaves_the_model_as_it_was(toy):
    net = create_model("cnn")  # default layout, training mode
    contiguous = evaluate(net, toy.test, 16)  # 64 images: laid out channels-last for the pass
    assert net.training and all(p.is_contiguous() and not p.is_inference() for p in net.parameters())
    x, y = toy.train.images[:8].float()[:, None] / 255, toy.train.labels[:8]
    net.loss(x, y)["loss"].backward()  # still trainable: no inference tensors among the weights
    net.to(memory_format=torch.channels_last)
    assert evaluate(net, toy.test, 16) == pytest.approx(contiguous, rel=1e-5)
