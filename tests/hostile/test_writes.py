"""Writes (issue 32): every file a command writes to a path the user gave goes through one
writer (``mnistlab._io.check_target``), which refuses a device, a FIFO, a link to a device, a
folder and a file a run owns, and never makes anything under /dev, /proc or /sys. Each command
with an output path is tried against that matrix; the target is left as it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab._io import Refused, check_target, make_folder

from .conftest import device_node, fifo
from .test_inputs import fails_cleanly

# what each target is, how it is made in the test's folder, and the words its refusal names
TARGETS = {
    "device": (lambda tmp, run: device_node(tmp / "dev-node"), "a character device"),
    "fifo": (lambda tmp, run: fifo(tmp / "pipe"), "a FIFO"),
    "link-to-device": (lambda tmp, run: _link(tmp / "link", device_node(tmp / "dev-node")), "a character device"),
    "folder": (lambda tmp, run: _folder(tmp / "out"), "a folder"),
    "run-checkpoint": (lambda tmp, run: run / "checkpoint.pt", "checkpoint.pt of the run"),
    "run-config": (lambda tmp, run: run / "config.json", "config.json of the run"),
}


def _link(link: Path, to: Path) -> Path:
    link.symlink_to(to)
    return link


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _image(tmp: Path) -> Path:
    img = np.full((60, 40), 255, np.uint8)
    img[12:48, 17:23] = 0  # a dark "1" on white paper
    (tmp / "in").mkdir(exist_ok=True)
    Image.fromarray(img).save(tmp / "in" / "one.png")
    return tmp / "in" / "one.png"


def _commands(run: Path, tmp: Path) -> dict[str, list[str]]:
    """Every command that writes a file to a path it is given (the path goes last)."""
    return {
        "show": ["show", "3", "--dataset", "mnist-sample", "--save"],
        "predict": ["predict", "3", "--run", str(run), "--save"],
        "layers": ["layers", "3", "--run", str(run), "--save"],
        "read": ["read", str(_image(tmp)), "--run", str(run), "--save"],
        "explain": ["explain", "3", "--run", str(run), "--method", "saliency", "--save"],
        "explain-eval": [
            "explain",
            "--eval",
            "deletion",
            "--n",
            "4",
            "--method",
            "saliency",
            "--run",
            str(run),
            "--save",
        ],
        "export": ["export", str(run), "--out"],
    }


def _state(path: Path) -> tuple:
    """What stands at `path` (kind, and the bytes of a regular file): must not change."""
    st = os.lstat(path)
    return stat.S_IFMT(st.st_mode), path.read_bytes() if stat.S_ISREG(st.st_mode) else None


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("command", ["show", "predict", "layers", "read", "explain", "explain-eval", "export"])
def test_every_output_path_refuses_what_is_not_ours(command, target, run_copy, tmp_path, capsys):
    if command.startswith("explain"):
        pytest.importorskip("captum", reason="the 'explain' extra is not installed")
    if command == "export":
        pytest.importorskip("onnxruntime", reason="the 'export' extra is not installed")
    make, words = TARGETS[target]
    path = make(tmp_path, run_copy)
    before = _state(path)
    line = fails_cleanly([*_commands(run_copy, tmp_path)[command], str(path)], capsys, words)
    assert str(path) in line or path.name in line
    assert _state(path) == before  # the node, the folder, the run's file: as they were
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("**/*.tmp"))  # nothing beside it


def test_the_machines_dev_null_is_never_replaced():
    """The real /dev/null is only looked at, never written: whatever ran before in this session
    (every test above as root), it is still a character device."""
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("where", ["/dev/mnistlab-test.png", "/proc/mnistlab.png", "/sys/mnistlab.png"])
def test_nothing_is_ever_made_under_the_system_folders(where, capsys):
    """`--save /dev/full` once made /dev/full.png: the writer refuses the folder itself."""
    with pytest.raises(Refused, match="the system's"):
        check_target(where)
    fails_cleanly(["show", "3", "--dataset", "mnist-sample", "--save", where], capsys, "the system's")
    assert not os.path.lexists(where)
    with pytest.raises(Refused, match="the system's"):
        make_folder("/dev/mnistlab-folder")
    assert not os.path.lexists("/dev/mnistlab-folder")


def test_a_save_named_as_a_folder_is_refused_not_written_beside_it(cnn_run_dir, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    fails_cleanly(["predict", "3", "--run", str(cnn_run_dir), "--save", str(tmp_path / "out")], capsys, "a folder")
    assert not (tmp_path / "out.png").exists() and not any((tmp_path / "out").iterdir())


def test_another_runs_checkpoint_is_not_an_export_target(run_copy, cnn_run_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the 'export' extra is not installed")
    other = Path(str(run_copy) + "-other")
    other.mkdir()
    for f in ("config.json", "checkpoint.pt", "summary.json"):
        (other / f).write_bytes((cnn_run_dir / f).read_bytes())
    before = (other / "checkpoint.pt").read_bytes()
    fails_cleanly(["export", str(run_copy), "--out", str(other / "checkpoint.pt")], capsys, "checkpoint.pt of the run")
    assert (other / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("target", ["fifo", "device", "file"])
def test_output_folders_refuse_what_is_not_a_folder(target, tmp_path, capsys):
    """train --run-dir, report/bench --out: a FIFO, a device or a file where the folder goes."""
    path = {"fifo": lambda: fifo(tmp_path / "p"), "device": lambda: device_node(tmp_path / "d")}.get(
        target, lambda: (tmp_path / "f").write_text("x") and tmp_path / "f"
    )()
    words = {"fifo": "a FIFO", "device": "a character device", "file": "a file"}[target]
    small = ["--dataset", "mnist-sample", "--epochs", "1", "--set", "limit_batches=1", "--no-progress"]
    fails_cleanly(["train", "cnn", *small, "--run-dir", str(path)], capsys, words, "not a run folder")
    fails_cleanly(["bench", "--quick", "--out", str(path)], capsys, words, "not a folder")


@pytest.mark.parametrize("record", [b"\xff\xfe[", b"[" * 100_000 + b"]" * 100_000])
def test_a_broken_export_record_stops_the_export_before_anything_is_written(record, run_copy, capsys):
    """Once: a non-UTF-8 or 100,000-deep exports.json was a traceback, after model.onnx was written."""
    pytest.importorskip("onnxruntime", reason="the 'export' extra is not installed")
    (run_copy / "exports.json").write_bytes(record)
    fails_cleanly(["export", str(run_copy)], capsys, "exports.json", "move it aside")
    assert not (run_copy / "model.onnx").exists()
    assert (run_copy / "exports.json").read_bytes() == record
