"""Each hostile input found in the adversarial pass (issue 12), reproduced: one
`mnistlab: error:` line and a non-zero exit, or the documented behaviour; never a
traceback, never a run that is mistaken for a finished one."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistlab.cli import main
from mnistlab.data.formats import load_files, parse_idx
from mnistlab.errors import MnistlabError


def fails_cleanly(argv, capsys, *message) -> str:
    """main(argv) exits 1 with exactly one `mnistlab: error:` line holding each `message`."""
    capsys.readouterr()
    assert main(argv) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    lines = [ln for ln in err if ln.startswith("mnistlab: error:")]
    assert len(lines) == 1, err
    for m in message:
        assert m in lines[0], lines[0]
    return lines[0]


SMALL = ["--dataset", "mnist-sample", "--epochs", "1", "--set", "limit_batches=2", "--no-progress"]


# ---------------------------------------------------------------- training and config


@pytest.mark.parametrize(
    "sets, key",
    [
        (["lr=inf"], "train.lr"),
        (["weight_decay=inf"], "train.weight_decay"),
        (["optimizer=sgd", "momentum=nan"], "train.momentum"),
        (["lr=-nan"], "train.lr"),
        (["lr=" + "9" * 400], "train.lr"),
        (["epochs=" + "9" * 5000], "train.epochs"),
    ],
)
def test_non_finite_or_huge_numbers_are_refused(sets, key, capsys, tmp_path):
    argv = ["train", "cnn", *SMALL, "--run-dir", str(tmp_path / "r")]
    for s in sets:
        argv += ["--set", s]
    fails_cleanly(argv, capsys, key)
    assert not (tmp_path / "r").exists()


def test_a_toml_epochs_of_ten_to_the_twenty_is_refused(capsys, tmp_path):
    (tmp_path / "c.toml").write_text("[train]\nepochs = 100000000000000000000\n")
    fails_cleanly(["train", "cnn", "--config", str(tmp_path / "c.toml")], capsys, "train.epochs")
    (tmp_path / "c.toml").write_text("[train]\nepochs = 1000000\n")
    fails_cleanly(["train", "cnn", "--config", str(tmp_path / "c.toml")], capsys, "train.epochs", "100,000")


def test_a_seed_of_two_to_the_seventy_fails_before_anything_is_written(capsys, tmp_path):
    fails_cleanly(["train", "cnn", *SMALL, "--seed", str(2**70), "--run-dir", str(tmp_path / "r")], capsys, "seed")
    assert not (tmp_path / "r").exists()


def test_a_diverging_run_fails_and_is_never_the_default(capsys, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("MNISTLAB_RUNS", str(runs))
    assert main(["train", "cnn", *SMALL, "--run-dir", str(runs / "good")]) == 0
    # (a learning rate of 1e30 is refused by its range; 10 with SGD's momentum diverges an MLP)
    diverge = ["--set", "optimizer=sgd", "--set", "lr=10", "--set", "momentum=0.99", "--set", "limit_batches=10"]
    fails_cleanly(["train", "mlp", *SMALL, *diverge, "--run-dir", str(runs / "nan")], capsys, "diverged")
    assert not (runs / "nan" / "summary.json").exists()
    capsys.readouterr()
    assert main(["predict", "0", "--dataset", "mnist-sample", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)  # strict JSON: no bare NaN
    assert Path(row["run"]).name == "good"
    assert 0 <= row["confidence"] <= 1


# ---------------------------------------------------------------- run folders


def test_bad_folders_under_runs_break_nothing(capsys, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("MNISTLAB_RUNS", str(runs))
    assert main(["train", "cnn", *SMALL, "--run-dir", str(runs / "good")]) == 0
    (runs / "dangling").symlink_to(tmp_path / "nowhere")
    for name, text in (("list", b"[1, 2]"), ("latin", b"\xff\xfe{}"), ("empty", b"")):
        (runs / name).mkdir()
        (runs / name / "config.json").write_bytes(text)
    (runs / "listsummary").mkdir()
    for f in ("config.json", "checkpoint.pt"):
        (runs / "listsummary" / f).write_bytes((runs / "good" / f).read_bytes())
    (runs / "listsummary" / "summary.json").write_text("[]")
    capsys.readouterr()
    assert main(["runs"]) == 0
    capsys.readouterr()
    assert main(["predict", "3", "--dataset", "mnist-sample", "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["run"]).name == "good"
    fails_cleanly(["predict", "3", "--run", str(runs / "listsummary")], capsys, "summary.json")
    fails_cleanly(["predict", "3", "--run", str(runs / "list")], capsys, "config.json")


@pytest.mark.slow("starts mnistlab in child processes")
def test_a_killed_run_is_never_complete_nor_reused(capsys, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("MNISTLAB_RUNS", str(runs))
    assert main(["train", "cnn", *SMALL, "--run-dir", str(runs / "good")]) == 0
    assert main(["train", "cnn", *SMALL, "--run-dir", str(runs / "killed")]) == 0
    (runs / "killed" / "summary.json").unlink()  # as if killed after the last checkpoint
    figures = sorted(p.name for p in (runs / "killed" / "figures").iterdir())
    capsys.readouterr()
    assert main(["runs", "--json"]) == 0
    rows = {Path(r["path"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["good"]["complete"] and not rows["killed"]["complete"]
    assert main(["predict", "0", "--dataset", "mnist-sample", "--json"]) == 0
    assert Path(json.loads(capsys.readouterr().out)["run"]).name == "good"
    fails_cleanly(["train", "cnn", "--reuse", "--run-dir", str(runs / "killed")], capsys, "never finished")
    assert sorted(p.name for p in (runs / "killed" / "figures").iterdir()) == figures


def test_two_processes_never_both_get_one_run_dir(tmp_path):
    """Claims race through a pool of processes; each folder goes to exactly one of them."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(4) as pool:
        for k in range(20):
            target = tmp_path / f"r{k}"
            results = list(pool.map(_claim, [str(target)] * 4))
            assert results.count("ok") == 1, results


def _claim(path: str) -> str:
    from mnistlab.errors import RunError
    from mnistlab.runs import prepare_run_dir

    try:
        prepare_run_dir(Path(path))
        return "ok"
    except RunError:
        return "refused"


def test_run_dir_that_is_a_file_and_an_empty_checkpoint(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    fails_cleanly(["train", "cnn", *SMALL, "--run-dir", str(tmp_path / "f")], capsys, "is a file")
    assert main(["train", "cnn", *SMALL, "--run-dir", str(tmp_path / "r")]) == 0
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"")
    fails_cleanly(["predict", "0", "--run", str(tmp_path / "r")], capsys, "checkpoint.pt")


# ---------------------------------------------------------------- data files

# What the work itself added to the process's high-water mark (VmHWM starts afresh at exec;
# ru_maxrss may carry the parent's), in kB: the mark after the imports is taken off, so the
# CUDA libraries a GPU build loads (~300 MB resident) do not count against the reader.
HWM = "int([ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1])"
BASE = f"import torch; _base = {HWM}\n"
PEAK = f"print('peak', {HWM} - _base)"


def _idx(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


@pytest.mark.slow("measures memory in a child process")
def test_a_gzip_bomb_is_refused_in_bounded_memory(tmp_path):
    """1.5 GiB of zeros behind an IDX header claiming 3 images: refused before it is inflated."""
    import subprocess
    import sys

    bomb = tmp_path / "bomb-images.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(struct.pack(">IIII", 2051, 3, 28, 28))
        zeros = bytes(64 << 20)
        for _ in range(24):
            f.write(zeros)
    assert bomb.stat().st_size < 3 << 20
    code = (
        BASE + "import sys; from mnistlab.data import load_files\n"
        "try:\n    load_files(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n" + PEAK
    )
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120).stdout
    assert "DataError" in out and "bomb-images.gz" in out, out
    peak_mb = int(out.split("peak")[1]) / 1024
    assert peak_mb < 80, f"peak {peak_mb:.0f} MB above the imports"


@pytest.mark.parametrize(
    "raw, message",
    [
        (struct.pack(">IIIII", 2051 + 1, 2**31, 2**31, 2**31, 7), "bad magic"),  # 4-D, overflowing
        (struct.pack(">IIII", 2051, 2**31 - 1, 28, 28), "header says 2,147,483,647 images"),
        (struct.pack(">IIII", 2051, 2**31 - 1, 2**31 - 1, 2**31 - 1), "28x28"),
        (struct.pack(">III", 2051, 1, 28), "truncated"),
        (struct.pack(">IIII", 2051, 1, 28, 29) + bytes(28 * 29), "28x28"),
    ],
)
def test_idx_headers_that_lie(raw, message):
    with pytest.raises(MnistlabError, match=message):
        parse_idx(raw, "x.idx", 2051)


@pytest.mark.parametrize("cell", ["inf", "1e400", "nan", "-1", "256", "3.7", "x"])
def test_csv_cells_out_of_range_are_refused(tmp_path, cell):
    row = ",".join(["3"] + ["0"] * 783)
    bad = ",".join(["3", cell] + ["0"] * 782)
    (tmp_path / "t.csv").write_text(row + "\n" + bad + "\n")
    with pytest.raises(MnistlabError, match="t.csv"):
        load_files(str(tmp_path / "t.csv"))


def test_csv_float_labels_are_refused(tmp_path):
    (tmp_path / "t.csv").write_text(",".join(["3.7"] + ["0"] * 784) + "\n")
    with pytest.raises(MnistlabError, match="label"):
        load_files(str(tmp_path / "t.csv"))


def _npz(tmp_path, **arrays) -> str:
    path = tmp_path / "a.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.array([["a"] * 28] * 28)[None].repeat(2, 0), "dtype"),
        (np.zeros((2, 28, 28), dtype=[("a", "u1")]), "dtype"),
        (np.full((2, 28, 28), np.nan), "NaN"),
        (np.ones((2, 28, 28), dtype=complex), "complex"),
        (np.full((2, 28, 28), 300.0), "0..255"),
    ],
)
def test_npz_images_of_the_wrong_kind(tmp_path, images, message):
    with pytest.raises(MnistlabError, match=message):
        load_files(_npz(tmp_path, x_train=images, y_train=np.zeros(len(images), dtype=np.int64)))


def test_npz_float_labels_and_non_zip(tmp_path):
    with pytest.raises(MnistlabError, match="label"):
        load_files(_npz(tmp_path, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.array([1.0, 3.7])))
    (tmp_path / "b.npz").write_bytes(b"not a zip at all")
    with pytest.raises(MnistlabError, match="b.npz"):
        load_files(str(tmp_path / "b.npz"))


def test_an_npz_header_claiming_a_billion_images_allocates_nothing(tmp_path):
    header = {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z:
        z.writestr("x_train.npy", buf.getvalue() + bytes(784 * 2))
    with pytest.raises(MnistlabError, match="big.npz"):
        load_files(str(tmp_path / "big.npz"))


def test_a_corrupt_cached_array_falls_back_to_the_files_beside_it():
    from conftest import write_idx_set
    from mnistlab.data.sources import cache_root, load_dataset

    write_idx_set(cache_root() / "mnist")
    assert len(load_dataset("mnist").train) == 30  # and a decoded copy is cached beside the files
    arrays = cache_root() / "mnist" / "arrays.npz"
    assert arrays.exists()
    arrays.write_bytes(b"PK\x03\x04 corrupt")
    again = load_dataset("mnist")
    assert len(again.train) == 30 and len(again.test) == 10


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder: cannot make one unreadable")
def test_an_unreadable_folder(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d").chmod(0)
    try:
        fails_cleanly(["train", "cnn", "--dataset", "mnist", "--data-dir", str(tmp_path / "d")], capsys, "d")
    finally:
        (tmp_path / "d").chmod(0o755)


def test_one_unreadable_image_does_not_stop_the_batch(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("MNISTLAB_RUNS", str(runs))
    assert main(["train", "cnn", *SMALL, "--run-dir", str(runs / "good")]) == 0
    digit = np.zeros((60, 60), np.uint8)
    digit[10:50, 27:33] = 255
    Image.fromarray(digit).save(tmp_path / "a.png")
    Image.fromarray(digit).save(tmp_path / "b.png")
    Image.new("LAB", (40, 40), (50, 0, 0)).save(tmp_path / "lab.tif")
    capsys.readouterr()
    rc = main(["predict", str(tmp_path / "a.png"), str(tmp_path / "lab.tif"), str(tmp_path / "b.png"), "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 1 and len(rows) == 3
    assert "digit" in rows[0] and "error" in rows[1] and "digit" in rows[2]


@pytest.mark.slow("measures memory in a child process")
def test_a_huge_rgba_png_is_read_in_bounded_memory(tmp_path):
    import subprocess
    import sys

    big = np.zeros((4096, 4096, 4), np.uint8)
    big[..., 3] = 255
    big[1000:3000, 1900:2200, :3] = 255
    Image.fromarray(big, "RGBA").save(tmp_path / "big.png")
    code = (
        BASE + "import sys; from mnistlab.reading.images import load_grey, preprocess\n"
        "g = load_grey(open(sys.argv[1], 'rb').read()); preprocess(g)\n" + PEAK
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big.png")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    peak_mb = int(out.stdout.split("peak")[1]) / 1024
    assert peak_mb < 180, f"peak {peak_mb:.0f} MB above torch"  # the file alone is 64 MB; was ~580 MB


def test_a_folder_whose_listing_is_refused(tmp_path, capsys, monkeypatch):
    """As root no folder is unreadable: the refusal is simulated where the listing happens."""

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    (tmp_path / "d").mkdir()
    monkeypatch.setattr(Path, "iterdir", refuse)
    fails_cleanly(
        ["train", "cnn", "--dataset", "mnist", "--data-dir", str(tmp_path / "d"), "--run-dir", str(tmp_path / "r")],
        capsys,
        "cannot read (Permission denied)",
    )
