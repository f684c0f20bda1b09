"""The fast path against the conventional pipeline, device augmentation, and a bench smoke run."""

from __future__ import annotations

import json

import pytest
import torch

from mnistlab.cli import main
from mnistlab.config import build_config
from mnistlab.data.augment import random_affine, random_shift
from mnistlab.data.batches import batch_indices
from mnistlab.data.splits import images_to_float
from mnistlab.models._registry import create_model
from mnistlab.models.layers import Dropout
from mnistlab.studies.bench import tutorial_loader
from mnistlab.train.loop import fit


def test_fast_path_and_tutorial_pipeline_give_the_same_batches(toy):
    seed, bs = 5, 50  # 256 digits: batches of 50, the last of 6
    loader = tutorial_loader(toy.train, bs, seed)
    ours = batch_indices(len(toy.train), bs, torch.Generator().manual_seed(seed), "cpu")
    theirs = list(loader)
    assert len(ours) == len(theirs) == 6
    for idx, (x, y) in zip(ours, theirs):
        assert torch.equal(toy.train.labels[idx], y)
        # the tutorial's normalised tensor, mapped back, is our [0, 1] batch
        assert torch.allclose(images_to_float(toy.train.images[idx]), x * 0.3081 + 0.1307, atol=1e-6)


def test_random_shift_moves_whole_pixels_and_keeps_shapes():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.equal(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    pos = y[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 28, pos % 28
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # each image its own shift


def test_random_affine_is_small_and_batched():
    from mnistlab.data.sources import load_dataset

    x = images_to_float(load_dataset("mnist-sample").test.images[:32])
    y = random_affine(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    corr = torch.nn.functional.cosine_similarity(x.flatten(1), y.flatten(1))
    assert corr.mean() > 0.5 and (y - x).abs().sum() > 0  # thin strokes: a 2 px shift lowers overlap a lot


@pytest.mark.outcome
def test_augmented_training_keeps_labels_and_learns(toy):
    cfg = build_config("cnn", sets=["epochs=3", "batch_size=32", "augment=shift"]).train
    torch.manual_seed(0)
    hist = fit(create_model("cnn"), toy.train, {"test": toy.test}, cfg, progress=False)
    assert hist[-1]["test_acc"] > 0.8


def test_cpu_dropout_is_inverted_dropout():
    torch.manual_seed(0)
    drop = Dropout(0.25)
    x = torch.ones(200, 500)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01  # a quarter dropped
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))  # survivors rescaled
    assert abs(y.mean().item() - 1.0) < 0.02  # the expectation kept
    assert not torch.equal(drop(x), y)  # a fresh mask each call
    assert torch.equal(drop.eval()(x), x)


def test_fit_trains_channels_last_and_hands_back_the_default_layout(toy):
    model = create_model("cnn")
    cfg = build_config("cnn", sets=["epochs=1", "batch_size=64"]).train
    assert cfg.channels_last == "auto"
    seen = []
    model.conv2.register_forward_hook(
        lambda m, inp, out: seen.append(m.training and inp[0].is_contiguous(memory_format=torch.channels_last))
    )
    fit(model, toy.train, {}, cfg, progress=False)
    assert seen and all(seen)  # every training step's activations were NHWC
    assert model.conv2.weight.is_contiguous()


def test_compile_option_falls_back_or_trains(toy, monkeypatch):
    def broken(fn):
        def fail(*a, **k):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    cfg = build_config("cnn", sets=["epochs=1", "batch_size=64", "compile=true"]).train
    hist = fit(create_model("cnn"), toy.train, {}, cfg, progress=False)
    assert hist[0]["train_loss"] > 0


@pytest.mark.slow("runs the whole quick benchmark")
def test_bench_quick_smoke(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["pipeline"]["ratio"] > 0 and res["pipeline"]["mnistlab_img_s"] > 0
    assert {t["model"] for t in res["time_to_accuracy"]} == {"cnn", "cnn-fast"}
    assert res["inference"]["single_p95_ms"] >= res["inference"]["single_p50_ms"] > 0
    assert res["memory"]["peak_rss_mb"] > 50
    whole = res["whole_process"]
    assert [r["what"] for r in whole["rows"]] == ["cnn-fast, 1 epoch", "92% preset", "conventional script, 1 epoch"]
    for row in whole["rows"]:  # each a real process that trained and was tested
        assert row["error"] is None and row["wall_s"] > 0.5 and 0 <= row["test_acc"] <= 1, row
        assert row["peak_rss_mb"] > 50
    assert whole["ratio"] == pytest.approx(whole["rows"][2]["wall_s"] / whole["rows"][0]["wall_s"])
    md = (tmp_path / "bench.md").read_text()
    assert "## 1. Pipeline" in md and "## 7. Whole process" in md and "python -m mnistlab.studies.baseline" in md
    machine = res["machine"]  # every figure says where it was measured
    assert machine["cpu"] and machine["isa"] == torch.backends.cpu.get_cpu_capability() and machine["cores"] >= 1
    assert f"Measured on {machine['cpu']}, {machine['isa']} kernels" in md


def test_a_bench_that_fails_midway_keeps_the_sections_before(tmp_path, monkeypatch):
    from mnistlab.studies import bench

    monkeypatch.setattr(
        bench,
        "pipeline_ratio",
        lambda *a, **k: {"images": 1, "mnistlab_img_s": 2.0, "tutorial_img_s": 1.0, "ratio": 2.0},
    )
    monkeypatch.setattr(
        bench,
        "time_to_accuracy",
        lambda name, *a, **k: {"model": name, "target": 0.97, "seeds": 1, "reached": 1, "mean_s": 1.0, "sd_s": 0.0},
    )

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(bench, "ae_throughput", broken)
    with pytest.raises(RuntimeError):
        bench.run_bench(quick=True, device="cpu", out=tmp_path)
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["pipeline"]["ratio"] == 2.0 and len(res["time_to_accuracy"]) == 2 and "ae_throughput" not in res
    md = (tmp_path / "bench.md").read_text()
    assert "## 2. Time to accuracy" in md and "## 3-4" not in md


@pytest.mark.slow("starts mnistlab in child processes")
@pytest.mark.outcome
def test_conventional_script_trains_and_reports(capsys):
    from mnistlab.studies import baseline as tutorial

    assert tutorial.main(["--dataset", "mnist-sample", "--limit-batches", "30", "--quiet"]) == 0
    words = capsys.readouterr().out.split()
    assert words[0] == "test_acc" and float(words[1]) > 0.5  # 30 batches of 64 already learn digits
