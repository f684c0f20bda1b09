"""Autoencoders: figures, denoising, interactive config, two-stage encoder classifier."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mnistlab.cli import main
from mnistlab.config import build_config
from mnistlab.errors import ConfigError
from mnistlab.interactive import ask_config, questions
from mnistlab.models._registry import create_model
from mnistlab.runs import load_run
from mnistlab.train.loop import fit
from mnistlab.train.run import train_run

PNG = b"\x89PNG\r\n\x1a\n"


def _quick(model, **sets):
    base = {"epochs": 1, "limit_batches": 3, "dataset": "mnist-sample", **sets}
    return build_config(model, sets=[f"{k}={v}" for k, v in base.items()])


@pytest.mark.parametrize(
    "model, figures",
    [
        (
            "ae-code3d",
            ["code3d_before.png", "code3d_after.png", "code3d_projections_before.png", "code3d_projections_after.png"],
        ),
        ("ae-code2d", ["code2d_before.png", "code2d_after.png"]),
        ("ae-code4x4", []),
        ("ae-upsample", []),
    ],
)
def test_autoencoder_run_writes_its_pictures_and_metrics(model, figures, tmp_path):
    run = train_run(_quick(model), tmp_path / "r", progress=False)
    expected = ["reconstructions_before.png", "reconstructions_after.png", "curves.png", "interpolation.png", *figures]
    for f in expected:
        assert (tmp_path / "r" / "figures" / f).read_bytes()[:8] == PNG, f
    s = run.summary
    assert 0 < s["test_mse"] < 0.3 and s["test_mse_sum_per_image"] == pytest.approx(s["test_mse"] * 784)
    assert "val_mse" in run.metrics[0] and s["n_train"] == 6400  # 20% of 8,000 held for validation


def test_denoising_feeds_noisy_input_and_scores_the_clean_image():
    model = create_model("ae-dense", noise=0.3).train()
    seen = {}
    forward = model.forward

    def spy(x):
        seen["x"] = x
        return forward(x)

    model.forward = spy
    x = torch.rand(8, 1, 28, 28)
    out = model.loss(x)
    assert not torch.equal(seen["x"], x) and seen["x"].min() >= 0 and seen["x"].max() <= 1
    assert out["loss"].item() == pytest.approx(F.mse_loss(forward(seen["x"]), x).item())
    model.eval()
    model.loss(x)
    assert torch.equal(seen["x"], x)  # no noise at evaluation


def test_bce_option():
    model = create_model("ae-dense", loss="bce")
    out = model.loss(torch.rand(4, 1, 28, 28))
    assert out["loss"] > out["mse"]  # BCE of [0,1] targets is far above their MSE


def test_convbn_shapes_follow_the_sets():
    m = create_model("ae-convbn", filters=(8, 16, 32), kernels=(3, 5, 3))
    assert m.code_shape == (32, 7, 7)
    m = create_model("ae-convbn", filters=(8, 16, 32, 4), kernels=(3, 3, 3, 1), pool7=True)
    assert m.code_shape == (4, 1, 1)
    assert m(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)
    with pytest.raises(ConfigError, match="model.kernels: must give one kernel size per set"):
        create_model("ae-convbn", filters=(8, 16), kernels=(3,))


# ---------------------------------------------------------------- interactive


def test_interactive_from_a_file_applies_answers():
    cfg = build_config("ae-convbn", validate=False)
    n = len(questions(cfg))
    answers = ["16,32", "3,5", "", "", "", ""] + [""] * (n - 9) + ["2", "64", "0.002"]
    out = io.StringIO()
    got = ask_config(cfg, io.StringIO("\n".join(answers) + "\n"), out, from_terminal=False)
    assert got.model.filters == (16, 32) and got.model.kernels == (3, 5)
    assert got.train.epochs == 2 and got.train.batch_size == 64 and got.train.lr == 0.002
    assert "model.filters [32,64,64]:" in out.getvalue()  # the default is shown


def test_interactive_file_invalid_answer_names_the_line():
    cfg = build_config("ae-convbn", validate=False)
    with pytest.raises(ConfigError, match=r"answers line 2: model.kernels\[0\]: expected an integer"):
        ask_config(cfg, io.StringIO("16,32\nbig\n"), io.StringIO(), from_terminal=False)
    with pytest.raises(ConfigError, match=r"answers ended at line 3"):
        ask_config(cfg, io.StringIO("16,32\n3,3\n"), io.StringIO(), from_terminal=False)


def test_interactive_terminal_asks_again():
    cfg = build_config("ae-dense", validate=False)
    n = len(questions(cfg))
    # code: an invalid answer, then a valid one; the rest defaults
    got = ask_config(cfg, io.StringIO("zero\n-3\n7\n" + "\n" * (n - 1)), io.StringIO(), from_terminal=True)
    assert got.model.code == 7


@pytest.mark.slow("starts mnistlab in child processes")
def test_interactive_cli_saves_answers_in_the_run(tmp_path):
    cfg = build_config("ae-dense", validate=False)
    answers = ["12"] + [""] * (len(questions(cfg)) - 4) + ["1", "64", ""]
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistlab",
            "train",
            "ae-dense",
            "--interactive",
            "--dataset",
            "mnist-sample",
            "--set",
            "limit_batches=2",
            "--run-dir",
            str(tmp_path / "r"),
        ],
        input="\n".join(answers) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model"]["code"] == 12 and saved["train"]["epochs"] == 1 and saved["train"]["batch_size"] == 64


# ---------------------------------------------------------------- encoder classifier


def test_two_stage_training_freezes_then_finetunes(toy, tmp_path):
    ae = train_run(_quick("ae-convbn", filters="4,8", kernels="3,3"), tmp_path / "ae", progress=False)
    cfg = build_config(
        "encoder-classifier", sets=[f"encoder={ae.path}", "epochs=1", "finetune_epochs=1", "batch_size=32"]
    )
    model = create_model("encoder-classifier", cfg.model, load_run=load_run)  # the factory reads the run
    # the encoder's weights came from the autoencoder run
    ae_state = ae.model.encoder.state_dict()  # on the device it trained on: compare on the CPU
    assert all(torch.equal(v.cpu(), model.encoder.state_dict()[k]) for k, v in ae_state.items())
    frozen, tuned = model.stages(cfg.train)
    assert tuned.train.lr == pytest.approx(cfg.train.lr * 0.1)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = [p.clone() for p in model.head.parameters()]
    frozen.setup()
    fit(model, toy.train, {}, frozen.train, progress=False)
    after1 = model.encoder.state_dict()
    assert all(torch.equal(before[k], after1[k]) for k in before)  # weights and BatchNorm statistics
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.head.parameters()))
    tuned.setup()
    fit(model, toy.train, {}, tuned.train, progress=False)
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())


def test_encoder_classifier_run_records_both_stages(tmp_path, capsys):
    ae = tmp_path / "ae"
    assert main(["train", "ae-convtranspose", "--dataset", "mnist-sample", "--dry-run", "--run-dir", str(ae)]) == 0
    r = tmp_path / "clf"
    assert (
        main(
            [
                "train",
                "encoder-classifier",
                "--encoder",
                str(ae),
                "--dataset",
                "mnist-sample",
                "--epochs",
                "1",
                "--set",
                "finetune_epochs=1",
                "--set",
                "limit_batches=5",
                "--run-dir",
                str(r),
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
    assert [(x["epoch"], x["stage"]) for x in rows] == [(1, "frozen"), (2, "finetune")]
    from mnistlab.runs import load_run

    again = load_run(r)  # rebuilds from its own checkpoint, without the encoder's run
    assert again.model.config.encoder_model == "ae-convtranspose"
    capsys.readouterr()
    # a classifier run is no encoder; a missing run folder is a clear error
    assert main(["train", "encoder-classifier", "--encoder", str(r), "--dataset", "mnist-sample"]) == 1
    assert "not an autoencoder" in capsys.readouterr().err
    assert main(["train", "encoder-classifier", "--encoder", str(tmp_path / "nope")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    assert main(["train", "encoder-classifier", "--dataset", "mnist-sample"]) == 1
    assert "model.encoder: is required" in capsys.readouterr().err
