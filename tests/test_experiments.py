"""The three experiments end to end on small budgets, their reuse, and their pieces."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import mnistlab.studies.experiments.dream as dream
import mnistlab.studies.experiments.unbiased as unbiased
import mnistlab.train.run as train
from mnistlab._io import read_jsonl
from mnistlab.cli import main
from mnistlab.data.sources import load_dataset
from mnistlab.errors import ConfigError, RunError
from mnistlab.models import create_model
from mnistlab.models.coupled import conditional_mmd, loop_of, parity_of
from mnistlab.studies.experiments import build_experiment_config, run_experiment
from mnistlab.train.loop import fit

PNG = b"\x89PNG\r\n\x1a\n"


def test_loop_only_floor_on_hand_made_labels():
    labels = torch.tensor([0, 0, 9, 1, 3, 2, 8, 7])
    loop, parity = loop_of(labels), parity_of(labels)
    assert loop.tolist() == [1, 1, 1, 0, 0, 0, 1, 0]
    assert parity.tolist() == [0, 0, 1, 1, 1, 0, 0, 1]
    # loop digits {0,0,9,8}: 3 even of 4; no-loop {1,3,2,7}: 3 odd of 4 -> 6/8
    assert unbiased.loop_only_floor(loop, parity) == pytest.approx(6 / 8)


def test_conditional_mmd_sees_parity_inside_a_loop_class():
    g = torch.Generator().manual_seed(0)
    loop = torch.tensor([1] * 40 + [0] * 40)
    parity = torch.tensor(([0] * 20 + [1] * 20) * 2)
    same = torch.randn(80, 4, generator=g)
    shifted = same.clone()
    shifted[parity == 1] += 3.0
    assert conditional_mmd(shifted, loop, parity) > 5 * conditional_mmd(same, loop, parity)


def test_normalized_code_cannot_shrink_to_a_point():
    torch.manual_seed(0)
    net = create_model("loop-parity", code_dim=8, adversary_hidden=4, normalize_code=True)
    plain = create_model("loop-parity", code_dim=8, adversary_hidden=4, normalize_code=False)
    plain.load_state_dict(net.state_dict(), strict=False)  # same weights, no BatchNorm
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        z0, p0 = net.encoder(x), plain.encoder(x)
        for model in (net, plain):
            model.encoder[5].weight.mul_(0.5)  # the code shrinks toward a point
            model.encoder[5].bias.mul_(0.5)
        z1, p1 = net.encoder(x), plain.encoder(x)
    assert z0.shape == p0.shape == (64, 8)
    assert torch.allclose(p1, 0.5 * p0, atol=1e-6)
    assert torch.allclose(z0.std(0, unbiased=False), torch.ones(8), atol=0.02)
    assert torch.allclose(z1, z0, rtol=0.1, atol=0.01)  # the plain code halved


@pytest.mark.outcome
def test_input_optimisation_raises_the_target_probability(toy):
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=11)
    fit(model, toy.train, {}, dream.Config(batch_size=32).train_config(6), progress=False)
    cfg = dream.Config(steps=60, jitter=1, blur_every=0, tv=0.0, l2=0.0)
    targets = torch.arange(10)
    x = dream.optimise_inputs(model, targets, cfg, torch.Generator().manual_seed(0))
    assert x.shape == (10, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    noise = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.no_grad():
        p_opt = torch.softmax(model.eval()(x), 1)[targets, targets]
        p_noise = torch.softmax(model(noise), 1)[targets, targets]
    assert p_opt.mean() > 0.5 > p_noise.mean()
    assert all(p.requires_grad for p in model.parameters())  # the model is left trainable


def test_experiment_config_errors():
    with pytest.raises(ConfigError, match="experiment.rounds: must be in 1..1,000"):
        build_experiment_config("dream", sets=["rounds=0"])
    with pytest.raises(ConfigError, match="unknown key experiment.nope"):
        build_experiment_config("unbiased", sets=["nope=1"])
    with pytest.raises(ConfigError, match="experiment.model: must be an autoencoder"):
        build_experiment_config("reencode", sets=["model=cnn"])


@pytest.fixture(scope="module")
def sample():
    return load_dataset("mnist-sample")


@pytest.fixture(scope="module")
def small(sample):
    """The sample's first 1,024 training and 300 held-out digits: for tests of an experiment's
    record, not of how well it learns."""
    return dataclasses.replace(
        sample, train=sample.train.subset(slice(0, 1024)), test=sample.test.subset(slice(0, 300))
    )


def _no_training(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("--reuse must not train")

    for mod in (train, dream):  # the one loop, wherever it is called from
        monkeypatch.setattr(mod, "fit", fail)
    monkeypatch.setattr(dream, "optimise_inputs", fail)


@pytest.mark.slow("trains on the whole sample for seconds")
@pytest.mark.outcome
def test_dream_end_to_end_and_reuse(tmp_path, sample, monkeypatch):
    cfg = build_experiment_config(
        "dream", sets=["rounds=2", "steps=15", "epochs=1", "judge_epochs=1", "epochs_per_round=1", "per_digit=2"]
    )
    path, m = run_experiment("dream", cfg, run_dir=tmp_path / "d", dataset=sample, progress=False)
    for f in ("figures/rounds.png", "figures/judge.png"):
        assert (path / f).read_bytes()[:8] == PNG
    assert [r["round"] for r in m["rounds"]] == [1, 2]
    for r in m["rounds"]:
        assert 0 <= r["recognised_of_10"] <= 10 and 0 <= r["mean_confidence"] <= 1
        assert len(r["judged_as"]) == 10 and r["model_test_acc_real"] > 0.8
    assert m["judge_test_acc"] > 0.85
    # a second judge of another family (an MLP) reads every round too; copies of a digit differ
    assert m["mlp_judge_test_acc"] > 0.85 and (path / "judge-mlp" / "summary.json").is_file()
    for r in m["rounds"]:
        assert 0 <= r["mlp_recognised_of_10"] <= 10 and 0 <= r["mlp_mean_confidence"] <= 1
        assert 0 < r["within_digit_distance"] < 1
    assert json.loads((path / "results.json").read_text())["final_recognised_of_10"] == m["final_recognised_of_10"]
    _no_training(monkeypatch)
    _, again = run_experiment("dream", cfg, run_dir=path, reuse=True, dataset=sample, progress=False)
    assert again["rounds"] == m["rounds"]


def test_dream_finishes_when_its_model_calls_real_digits_optimised(tmp_path, small, monkeypatch):
    """The 11-class model may call a real test digit "optimised image" (on some CPUs' rounding a
    small one did, and the 10x10 confusion crashed the run): forced here on every digit, the run
    finishes with a 10-row, 11-column confusion and its figures."""
    real_fit = dream.fit

    def fit_then_prefer_optimised(model, *args, **kwargs):
        history = real_fit(model, *args, **kwargs)
        if model.num_outputs == 11:
            with torch.no_grad():
                model.fc.bias[dream.OPTIMISED] += 1e3  # every input scored "optimised image"
        return history

    monkeypatch.setattr(dream, "fit", fit_then_prefer_optimised)
    cfg = build_experiment_config(
        "dream", sets=["rounds=1", "steps=2", "epochs=1", "judge_epochs=1", "epochs_per_round=1", "per_digit=1"]
    )
    path, m = run_experiment("dream", cfg, run_dir=tmp_path / "d", dataset=small, progress=False)
    lines = (path / "model" / "confusion.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    assert header[1:] == [*small.classes, "optimised image"] and len(rows) == 10
    assert all(int(r[-1]) > 0 and sum(map(int, r[1:-1])) == 0 for r in rows)  # each digit read as class 10
    assert sum(int(r[-1]) for r in rows) == len(small.test)
    for f in ("figures/rounds.png", "figures/judge.png", "model/figures/confusion.png", "model/figures/curves.png"):
        assert (path / f).read_bytes()[:8] == PNG
    assert m["rounds"][0]["model_test_acc_real"] == 0.0


@pytest.mark.slow("trains on the whole sample for seconds")
@pytest.mark.outcome
def test_unbiased_end_to_end_and_reuse(tmp_path, sample, monkeypatch):
    cfg = build_experiment_config("unbiased", sets=["lambdas=0,1", "epochs=2", "probe_epochs=3", "warmup_epochs=1"])
    path, m = run_experiment("unbiased", cfg, run_dir=tmp_path / "u", dataset=sample, progress=False)
    assert (path / "figures" / "tradeoff.png").read_bytes()[:8] == PNG
    assert "| λ | loop acc |" in (path / "table.md").read_text()
    test = sample.test.labels
    floor = unbiased.loop_only_floor(loop_of(test), parity_of(test))
    rows = m["rows"]
    assert [r["lambda"] for r in rows] == [0.0, 1.0]
    assert all(r["loop_only_floor"] == pytest.approx(floor) for r in rows)
    assert 0.75 < floor < 0.85  # looped digits are mostly even
    assert rows[0]["loop_acc"] > 0.9 and rows[0]["probe_parity_acc"] > floor
    assert all(0.5 <= r["probe2_parity_acc"] <= 1 for r in rows)  # the second, 2-hidden-layer probe
    assert "2-layer probe" in (path / "table.md").read_text()
    _no_training(monkeypatch)
    _, again = run_experiment("unbiased", cfg, run_dir=path, reuse=True, dataset=sample, progress=False)
    assert [r["loop_acc"] for r in again["rows"]] == [r["loop_acc"] for r in rows]


@pytest.mark.slow("trains on the whole sample for seconds")
@pytest.mark.outcome
def test_reencode_end_to_end_and_reuse_via_cli(tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    assert main(["experiment", "reencode", "--set", "epochs=1", "--run-dir", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "reencode: reconstruction MSE" in out and "plain   : reconstruction MSE" in out and "spread  :" in out
    m = json.loads((run / "results.json").read_text())
    assert m["reencode"]["code_dims"] == m["spread"]["code_dims"] == m["plain"]["code_dims"] == 32
    assert m["plain"]["test_mse"] < 0.1 and m["plain"]["code_var_mean"] > m["reencode"]["code_var_mean"]
    # the literal objective collapses the code; the spread variant keeps every dimension alive
    # and its code readable (a linear probe far above chance), even after one epoch
    assert m["reencode"]["dead_code_dims"] > 10 and m["spread"]["dead_code_dims"] == 0
    assert m["spread"]["linear_probe_acc"] > 0.5 > m["reencode"]["linear_probe_acc"]
    assert m["spread"]["reencode_error_relative"] < m["plain"]["reencode_error_relative"]
    assert (run / "spread" / "summary.json").is_file() and m["main"] == "spread"
    for f in ("reconstructions.png", "code_variance.png"):
        assert (run / "figures" / f).read_bytes()[:8] == PNG
    _no_training(monkeypatch)
    assert main(["experiment", "reencode", "--reuse", "--run-dir", str(run), "--quiet"]) == 0
    assert json.loads((run / "results.json").read_text())["plain"] == m["plain"]
    assert main(["experiment", "reencode", "--reuse", "--run-dir", str(tmp_path / "none")]) == 1
    assert "no reencode experiment here" in capsys.readouterr().err


@pytest.mark.slow("trains on the whole sample for seconds")
def test_runs_lists_every_kind_with_its_headline(tmp_path, small, capsys):
    """Experiments, a sweep and its trials show in `mnistlab runs` (and --json) beside trainings;
    a broken folder or a dangling link is listed or skipped, never a crash."""
    pytest.importorskip("optuna", reason="the sweep extra (mnistlab[sweep]) is not installed")
    dream_cfg = build_experiment_config(
        "dream", sets=["rounds=1", "steps=5", "epochs=1", "judge_epochs=1", "epochs_per_round=1", "per_digit=1"]
    )
    run_experiment("dream", dream_cfg, run_dir=tmp_path / "experiment-dream", dataset=small, progress=False)
    unb_cfg = build_experiment_config("unbiased", sets=["lambdas=0,1", "epochs=1", "probe_epochs=1", "warmup_epochs=0"])
    run_experiment("unbiased", unb_cfg, run_dir=tmp_path / "experiment-unbiased", dataset=small, progress=False)
    assert (
        main(
            [
                "sweep",
                "cnn",
                "--grid",
                "lr=0.001,0.002",
                "--dataset",
                "mnist-sample",
                "--epochs",
                "1",
                "--set",
                "limit_batches=3",
                "--out",
                str(tmp_path / "sweep-cnn"),
                "--no-progress",
            ]
        )
        == 0
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    capsys.readouterr()
    assert main(["runs", "--root", str(tmp_path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {Path(r["path"]).name: r for r in rows}
    # trial folders are named by trial number and values: tNNN-lr-0.001
    lr1, lr2 = (next(p.name for p in (tmp_path / "sweep-cnn").glob(f"t*-lr-{v}")) for v in ("0.001", "0.002"))
    assert set(by_name) == {
        "experiment-dream",
        "experiment-unbiased",
        "sweep-cnn",
        lr1,
        lr2,
        "broken",
        "judge",
        "judge-mlp",
        "model",
        "lambda-0",
        "lambda-1",
    }
    # an experiment's parts are runs, listed under it with their model and test figures
    for part, model in (
        ("judge", "cnn"),
        ("judge-mlp", "mlp"),
        ("model", "cnn"),
        ("lambda-0", "loop-parity"),
        ("lambda-1", "loop-parity"),
    ):
        row = by_name[part]
        assert row["kind"] == "part" and row["model"] == model and row["complete"], row
        assert 0 <= row["summary"]["test_acc"] <= 1 and row["dataset"] == "mnist-sample"
    for r in rows:
        assert set(r) >= {"path", "kind", "model", "dataset", "complete", "summary"}
    dream_row, unb_row = by_name["experiment-dream"], by_name["experiment-unbiased"]
    assert dream_row["kind"] == "experiment" and dream_row["complete"]
    assert 0 <= dream_row["summary"]["judge_recognised_of_10"] <= 10 and "judge" in dream_row["summary"]["headline"]
    assert unb_row["summary"]["lambda"] == 1.0 and "probe - floor" in unb_row["summary"]["headline"]
    sweep_row = by_name["sweep-cnn"]
    assert sweep_row["kind"] == "sweep" and sweep_row["summary"]["trials"] == 2 and sweep_row["complete"]
    assert sweep_row["summary"]["best_trial"] in (lr1, lr2)
    assert by_name[lr1]["kind"] == "trial" and by_name[lr1]["model"] == "cnn"
    assert by_name["broken"]["kind"] == "unreadable" and not by_name["broken"]["complete"]
    assert main(["runs", "--root", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "judge" in table and "2/2 trials, best acc" in table and f"  sweep-cnn/{lr2}" in table
    assert "  experiment-dream/judge" in table and "  experiment-unbiased/lambda-1" in table
    # load_run takes every kind: an experiment gives its main part, a sweep its best trial
    from mnistlab.runs import load_run

    assert load_run(tmp_path / "experiment-unbiased").path.name == "lambda-1"
    assert load_run(tmp_path / "sweep-cnn").path.name == sweep_row["summary"]["best_trial"]


def test_an_experiment_is_recorded_as_runs(tmp_path, small):
    """Sectioned config.json, metrics.jsonl rows, results.json, summary.json naming the main
    part; each part a run that load_run, the web server and resume understand."""
    from mnistlab.runs import load_run
    from mnistlab.train.run import resume_run
    from mnistlab.web.served import ServedRuns

    cfg = build_experiment_config(
        "dream", sets=["rounds=2", "steps=5", "epochs=1", "judge_epochs=1", "epochs_per_round=1", "per_digit=1"]
    )
    path, m = run_experiment("dream", cfg, run_dir=tmp_path / "d", dataset=small, progress=False)
    config = json.loads((path / "config.json").read_text())
    assert config["kind"] == "experiment" and config["name"] == "dream"
    assert config["experiment"]["rounds"] == 2 and config["data"]["dataset"] == "mnist-sample"
    assert [r["round"] for r in read_jsonl(path / "metrics.jsonl")] == [1, 2]
    summary = json.loads((path / "summary.json").read_text())
    assert summary["main"] == "model" and summary["judge_recognised_of_10"] == m["final_recognised_of_10"]
    # the 11-class model's record: one row per epoch, tagged with its round
    rows = read_jsonl(path / "model" / "metrics.jsonl")
    assert [(r["epoch"], r["round"]) for r in rows] == [(1, 0), (2, 1), (3, 2)]
    run = load_run(path)  # the experiment folder loads its main part
    assert run.path == path / "model" and run.model(torch.rand(2, 1, 28, 28)).shape == (2, 11)
    judge = load_run(path / "judge")
    assert judge.config.model_name == "cnn" and judge.summary["test_acc"] == pytest.approx(m["judge_test_acc"])
    served = ServedRuns([path, path / "judge"])
    assert {s.task for s in served.runs.values()} == {"classify"} and len(served.runs) == 2
    with pytest.raises(RunError, match="finished; nothing to resume"):
        resume_run(path / "judge")
    (path / "model" / "summary.json").unlink()  # as if killed mid-way: rounds can't be resumed
    with pytest.raises(RunError, match="part of a dream experiment"):
        resume_run(path / "model")


@pytest.mark.parametrize(
    "name,flags",
    [
        ("loop-parity", {"lam": 1.0, "warmup_epochs": 1, "code_dim": 32}),
        # an ensemble whose adversary 0 is renewed as epoch 3 starts
        ("loop-parity", {"lam": 1.0, "code_dim": 32, "adversaries": 2, "adversary_reset_epochs": 2}),
        ("ae-reencode", {"batch_size": 64}),
    ],
)
def test_coupled_models_resume_as_if_never_stopped(tmp_path, monkeypatch, name, flags):
    """Two optimisers, one loop: killed after epoch 2 of 3 and resumed, the same test figures."""
    from conftest import kill_at_epoch, synthetic_dataset
    from mnistlab.config import build_config

    ds = synthetic_dataset()
    # Exact resumption is a CPU claim (cuDNN's atomics differ run to run); the GPU's own test
    # (test_gpu.py) resumes under deterministic algorithms.
    cfg = lambda: build_config(name, flags={"epochs": 3, "device": "cpu", **flags})  # noqa: E731
    whole = train.train_run(cfg(), tmp_path / "whole", dataset=ds, progress=False, figures=False)
    restore = kill_at_epoch(monkeypatch, 3)  # stands in for a kill between epochs
    with pytest.raises(KeyboardInterrupt):
        train.train_run(cfg(), tmp_path / "cut", dataset=ds, progress=False, figures=False)
    restore()
    monkeypatch.setattr(train, "dataset_for", lambda *a, **k: ds)
    resumed = train.resume_run(tmp_path / "cut", model=name)
    assert resumed.summary["epochs"] == 3
    for key, value in whole.summary.items():
        if key.startswith("test_"):
            assert abs(resumed.summary[key] - value) <= 1e-6, key
    assert len({k for k in whole.metrics[-1] if k.startswith("train_")}) >= 2  # each optimiser's figures


def test_dream_distance_between_runs():
    a = torch.zeros(10, 28, 28, dtype=torch.uint8)
    b = torch.full((10, 28, 28), 255, dtype=torch.uint8)
    assert dream.pairwise_distance([a, a]) == 0 and dream.pairwise_distance([a, b]) == pytest.approx(1.0)


def test_spread_terms_punish_collapsed_and_copied_codes():
    from mnistlab.models.coupled import spread_terms

    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(512, 8, generator=g) * 2
    var_ok, cov_ok = spread_terms(healthy)
    var_const, _ = spread_terms(torch.ones(512, 8))
    copied = healthy[:, :1].repeat(1, 8)
    _, cov_copied = spread_terms(copied)
    assert var_ok.item() == 0 and var_const.item() > 0.95  # every dimension's spread below 1 costs
    assert cov_copied.item() > 10 * cov_ok.item()  # copies of one dimension cost


def test_adversary_ensemble_renews_one_head_at_a_time():
    from mnistlab.config import build_config
    from mnistlab.models import create_model
    from mnistlab.train.loop import make_optimizer

    cfg = build_config("loop-parity", flags={"lam": 1.0, "code_dim": 16, "adversaries": 3, "adversary_reset_epochs": 2})
    net = create_model("loop-parity", cfg.model)
    assert [len(h) for h in net.heads()] == [3, 5, 3]  # one hidden layer, two, one
    opts = net.optimizers(lambda params, lr_scale=1.0: make_optimizer(params, cfg.train, lr_scale))
    x, y = torch.rand(32, 1, 28, 28), torch.arange(32) % 10
    for epoch, renewed in ((1, None), (2, None), (3, 0), (4, None), (5, 1)):
        before = [[p.detach().clone() for p in h.parameters()] for h in net.heads()]
        net.start_epoch(epoch)
        if renewed is not None:
            net._renew(renewed, opts["adversary"])  # what the epoch's first step does first
            fresh = [p.detach().clone() for p in net.heads()[renewed].parameters()]
            net._renew(renewed, opts["adversary"])
            assert all(torch.equal(a, b) for a, b in zip(fresh, net.heads()[renewed].parameters()))  # seeded
            assert not any(torch.equal(a, b) for a, b in zip(before[renewed], fresh))
            assert all(p not in opts["adversary"].state for p in net.heads()[renewed].parameters())
            net._reset_pending = renewed
        assert net._reset_pending == renewed
        net.train_step(x, y, opts, net.loss)
        assert net._reset_pending is None
    with pytest.raises(ConfigError, match="adversaries"):
        build_config("loop-parity", sets=["model.adversaries=2", "model.method=reversal"])
