"""What the hostile tests share: special files made in the test's own folder (never a real
device: as root a failing test would replace it), a trained two-class model, a copy of the
session's classifier to tamper with."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from conftest import shared


def device_node(path: Path) -> Path:
    """A character device made in a temporary folder, with /dev/null's numbers (1, 3): writing
    through it would be harmless, replacing it is what the tests look for. Skips without root."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (mknod)")
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture(scope="session")
def loop_parity_run(tmp_path_factory):
    """A loop-parity model (classes "no loop", "loop"), trained three batches: its classes, not
    its skill, are what the tests look at. Read it only."""
    from mnistlab.cli import main

    def make(run):
        argv = ["train", "loop-parity", "--dataset", "mnist-sample", "--epochs", "1", "--set", "limit_batches=3"]
        assert main([*argv, "--figures", "none", "--no-progress", "--run-dir", str(run)]) == 0

    return shared(tmp_path_factory, "loop-parity-run", make)


@pytest.fixture
def run_copy(cnn_run_dir, tmp_path):
    """A copy of the session's trained classifier, free to tamper with."""
    return Path(shutil.copytree(cnn_run_dir, tmp_path / "run"))
