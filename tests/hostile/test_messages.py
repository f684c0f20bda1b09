"""Messages (issue 32): whatever came from the user or from disk is shown escaped and short
(one formatter, ``checks.brief``, for every command), ranges in errors are the model's own,
and special files are named as what they are."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main

from .conftest import device_node, fifo
from .test_inputs import SMALL, fails_cleanly

TITLE = "\x1b]0;owned\x07"  # an OSC sequence: sets the terminal's title, then BEL


def _clean(text: str) -> bool:
    return "\x1b" not in text and "\x07" not in text


@pytest.mark.parametrize("command", ["predict", "read", "explain", "export"])
def test_file_names_with_escape_sequences_are_shown_escaped(command, cnn_run_dir, tmp_path, capsys):
    if command == "explain":
        pytest.importorskip("captum", reason="the 'explain' extra is not installed")
    missing = str(tmp_path / f"x{TITLE}.png")
    argv = {
        "predict": ["predict", missing, "--run", str(cnn_run_dir)],
        "read": ["read", missing, "--run", str(cnn_run_dir)],
        "explain": ["explain", missing, "--run", str(cnn_run_dir)],
        "export": ["export", missing],
    }[command]
    capsys.readouterr()
    assert main(argv) == 1
    out = capsys.readouterr()
    assert _clean(out.out + out.err) and "\\x1b]0;owned\\x07" in out.err


def test_an_existing_image_with_such_a_name_is_echoed_escaped(cnn_run_dir, tmp_path, capsys):
    img = np.full((40, 30), 255, np.uint8)
    img[8:32, 13:17] = 0
    path = tmp_path / f"one{TITLE}.png"
    Image.fromarray(img).save(path)
    capsys.readouterr()
    assert main(["predict", str(path), "--run", str(cnn_run_dir)]) == 0
    out = capsys.readouterr().out
    assert _clean(out) and "\\x1b]0;owned\\x07" in out


def test_conv_ranges_are_the_models_own(cnn_run_dir):
    starlette = pytest.importorskip("starlette.testclient")
    from mnistlab.web.app import create_app

    client = starlette.TestClient(create_app([cnn_run_dir]), base_url="http://localhost")
    ink = np.zeros((28, 28), int)
    ink[5:23, 12:16] = 255
    pixels = {"pixels": ink.tolist()}
    r = client.post("/api/conv?layer=-1", json=pixels)
    assert r.status_code == 400 and "layer: 0..1" in r.json()["error"]  # cnn has two convolutions, not 64
    r = client.post("/api/conv?layer=0&channel=-1", json=pixels)
    assert r.status_code == 400 and "channel: 0..31" in r.json()["error"]  # 32 filters, not 65,537


@pytest.mark.parametrize("make, said", [(fifo, "a FIFO"), (device_node, "a character device")])
def test_special_files_are_named_as_what_they_are(make, said, run_copy, tmp_path, capsys):
    """Once: a FIFO as calibration.json was "corrupt", as --run "no such run folder", as
    --run-dir "is a file"."""
    (run_copy / "calibration.json").unlink()
    make(run_copy / "calibration.json")
    fails_cleanly(["predict", "3", "--run", str(run_copy)], capsys, "calibration.json", said)
    node = make(tmp_path / "node")
    fails_cleanly(["predict", "3", "--run", str(node)], capsys, said, "not a run folder")
    fails_cleanly(["train", "cnn", *SMALL, "--run-dir", str(node)], capsys, said, "not a run folder")


def test_runs_lists_edited_and_special_folders_in_short_cells(cnn_run_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    big = shutil.copytree(cnn_run_dir, root / "big")
    summary = json.loads((big / "summary.json").read_text())
    (big / "summary.json").write_text(json.dumps({**summary, "epochs": list(range(100_000))}))
    (root / "zero").mkdir()
    (root / "zero" / "config.json").symlink_to(device_node(tmp_path / "zero-node"))
    capsys.readouterr()
    assert main(["runs", "--root", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) < 300, max(map(len, lines))
    assert any("zero" in ln and "unreadable" in ln for ln in lines), lines  # listed, not left out silently


def test_a_long_study_name_is_cut_in_the_error(capsys):
    pytest.importorskip("optuna", reason="the 'sweep' extra is not installed")
    line = fails_cleanly(["sweep", "cnn", "--grid", "lr=0.001", "--study", "x/" * 2500], capsys, "--study")
    assert len(line) < 300


def test_the_size_estimate_never_says_zero_activations():
    from mnistlab.config import build_config
    from mnistlab.errors import ConfigError
    from mnistlab.models.sizing import check_fits

    cfg = build_config("cnn")
    with pytest.raises(ConfigError) as e:
        check_fits("cnn", cfg.model, 128, memory=1000)  # not even the parameters fit
    assert "0 activations" not in str(e.value) and "parameters alone" in str(e.value)
    with pytest.raises(ConfigError, match="activations a batch of 128"):
        check_fits("cnn", cfg.model, 128, memory=2_000_000)  # the parameters fit, the batch does not


def test_serve_without_its_extra_names_the_extra(monkeypatch, capsys):
    """Once a ModuleNotFoundError traceback; every other extra was named in one line."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    fails_cleanly(["serve"], capsys, "'web' extra", "uvicorn", "pip install")
