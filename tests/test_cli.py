"""The CLI end to end on the bundled sample: train, predict, layers, show, listings, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main
from mnistlab.data.sources import load_dataset
from test_images import photo_of

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cnn_run_dir):
    """One CNN trained for two epochs on mnist-sample through the CLI (the session's, copied:
    --reuse writes its figures again)."""
    return Path(shutil.copytree(cnn_run_dir, tmp_path_factory.mktemp("cli") / "cnn-run"))


@pytest.mark.outcome
def test_train_writes_the_run_and_prints_accuracy(trained, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["dataset"] == "mnist-sample" and summary["epochs"] == 2 and summary["n_test"] == 2000
    assert summary["test_acc"] > 0.9
    for f in ("curves.png", "confusion.png"):
        assert (trained / "figures" / f).read_bytes()[:8] == PNG
    cm = (trained / "confusion.csv").read_text().splitlines()
    assert len(cm) == 11 and sum(int(v) for line in cm[1:] for v in line.split(",")[1:]) == 2000


def test_reuse_prints_the_same_accuracy_without_training(trained, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    mtime = (trained / "checkpoint.pt").stat().st_mtime_ns
    assert main(["train", "cnn", "--reuse", "--run-dir", str(trained)]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {summary['test_acc']:.2%}" in out and "reused" in out
    assert (trained / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_predict_by_id_json(trained, capsys):
    assert main(["predict", "0", "1", "2", "--run", str(trained), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ds = load_dataset("mnist-sample")
    assert [r["id"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["label"] == str(int(ds.test.labels[r["id"]]))
        assert len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-4
        assert r["digit"] == int(np.argmax(r["probabilities"]))


@pytest.mark.outcome
def test_predict_own_png_files(trained, tmp_path, capsys):
    ds = load_dataset("mnist-sample")
    files, labels = [], []
    for i in range(8):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(photo_of(ds.test.images[i].numpy()).astype(np.uint8)).save(p)
        files.append(str(p))
        labels.append(int(ds.test.labels[i]))
    assert main(["predict", *files, "--run", str(trained), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == files
    hits = sum(r["digit"] == lab for r, lab in zip(rows, labels))
    assert hits >= 7, (hits, [r["digit"] for r in rows], labels)


def test_predict_bad_files_fail_per_file(trained, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"nope")
    code = main(["predict", "0", str(tmp_path / "bad.png"), str(tmp_path / "missing.png"), "--run", str(trained)])
    cap = capsys.readouterr()
    assert code == 1
    assert "mnist-sample test #0: predicted" in cap.out  # the good input still answered
    assert "bad.png: not a readable image" in cap.err and "missing.png: no such file" in cap.err


def test_predict_display_writes_a_picture(trained, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["predict", "4", "--run", str(trained), "--display", "--save", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG


def test_predict_out_of_range_id(trained, capsys):
    assert main(["predict", "5000", "--run", str(trained)]) == 1
    assert "id 5000 out of range" in capsys.readouterr().err


def test_layers_picture(trained, tmp_path, capsys):
    out = tmp_path / "layers.png"
    assert main(["layers", "3", "--run", str(trained), "--save", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 500 and img.shape[1] > 1000  # eight panels, not an empty figure
    assert "predicted" in capsys.readouterr().out


def test_show_annotated_and_headless_default(tmp_path, capsys, monkeypatch):
    out = tmp_path / "d.png"
    assert main(["show", "7", "--dataset", "mnist-sample", "--annotate", "--save", str(out)]) == 0
    assert out.read_bytes()[:8] == PNG
    label = int(load_dataset("mnist-sample").test.labels[7])
    assert f"mnist-sample test #7: label {label}" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    assert main(["show", "--train", "--dataset", "mnist-sample"]) == 0  # random id, no display: saves
    saved = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("saved ")
    assert saved.startswith("digit-mnist-sample-train-") and (tmp_path / saved).exists()


def test_models_and_runs_listings(trained, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "cnn" in out and "classify" in out and "34,826" in out  # the Keras MNIST convnet's count
    assert main(["runs", "--root", str(trained.parent)]) == 0
    out = capsys.readouterr().out
    assert "cnn-run" in out and "mnist-sample" in out and "acc " in out


def test_dry_run_and_existing_run_dir(tmp_path, capsys):
    r = tmp_path / "r"
    assert main(["train", "cnn", "--dataset", "mnist-sample", "--dry-run", "--run-dir", str(r)]) == 0
    assert len((r / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["train", "cnn", "--dataset", "mnist-sample", "--dry-run", "--run-dir", str(r)]) == 1
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "nosuch"], "unknown model 'nosuch'"),
        (["train", "cnn", "--set", "epochs=abc"], "train.epochs: expected an integer"),
        (["train", "cnn", "--dataset", "mnist"], "--data-dir"),
        (["predict", "--run", "/nonexistent/run"], "no such run folder"),
        (["show", "99999", "--dataset", "mnist-sample"], "out of range"),
        (["train", "cnn", "--train-images", "/nonexistent/imgs.idx"], "/nonexistent/imgs.idx: no such file"),
        (["train", "ae-dense", "--test-images", "/nonexistent/t.idx"], "--train-images is required"),
        (["experiment", "reencode", "--train-images", "/nonexistent/i.gz"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(argv, message, tmp_path, capfd, monkeypatch):
    """A clear line on stderr (whatever writes to the process's stderr: capfd), no traceback (an
    exception would end the test), nothing written; the real entry point is checked below."""
    monkeypatch.setenv("MNISTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    assert main(argv) != 0
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("mnistlab: error:")]
    assert len(lines) == 1 and message in lines[0] and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_input_through_the_real_entry_point(tmp_path):
    """`python -m mnistlab`: exit status 1 and the one line, no traceback."""
    env = {**os.environ, "MNISTLAB_RUNS": str(tmp_path / "runs")}
    p = subprocess.run(
        [sys.executable, "-m", "mnistlab", "train", "cnn", "--set", "epochs=abc"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 1 and p.stderr.strip() == "mnistlab: error: train.epochs: expected an integer, got abc"


def test_corrupt_data_dir_names_the_file(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text("1,2,3\n")
    (tmp_path / "d" / "test.csv").write_text("1,2,3\n")
    assert (
        main(
            ["train", "cnn", "--dataset", "mnist", "--data-dir", str(tmp_path / "d"), "--run-dir", str(tmp_path / "r")]
        )
        == 1
    )
    assert "train.csv: row 1 has 3 values" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_autoencoder_from_a_lone_images_file(tmp_path, capsys):
    """The seed's `-d PATH`: one images file of any name, no labels, no test set."""
    from conftest import idx_bytes

    images = load_dataset("mnist-sample").train.images[:200].numpy()
    (tmp_path / "scans.ubyte").write_bytes(idx_bytes(images, 2051))
    assert (
        main(
            [
                "train",
                "ae-dense",
                "--train-images",
                str(tmp_path / "scans.ubyte"),
                "--epochs",
                "1",
                "--run-dir",
                str(tmp_path / "ae"),
                "--no-progress",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "holding out a seeded 10% of the training images (20)" in err
    assert "ae-dense on files: reconstruction error (mse)" in out
    cfg = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert cfg["data"]["train_images"].endswith("scans.ubyte") and cfg["data"]["dataset"] == "files"


def test_show_and_predict_read_the_same_digit_by_default(cnn_run_dir, tmp_path, monkeypatch, capsys):
    """`show 17` once read MNIST (or tried to, with a notice each time) while `predict 17` read
    the run's dataset: with internet, two different digits."""
    monkeypatch.setenv("MNISTLAB_RUNS", str(cnn_run_dir.parent))
    monkeypatch.chdir(tmp_path)  # show saves its PNG here (no display)
    capsys.readouterr()
    assert main(["show", "17"]) == 0
    shown = capsys.readouterr()
    assert main(["predict", "17", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert shown.out.startswith(f"mnist-sample test #17: label {predicted['label']}")
    assert "unavailable" not in shown.err


def test_mnist_unavailable_is_said_once_a_session(capsys):
    from mnistlab.data.sources import load_dataset

    notices = []
    for _ in range(3):
        assert load_dataset("auto", notice=notices.append).name == "mnist-sample"
    assert len([n for n in notices if "unavailable" in n]) == 1
