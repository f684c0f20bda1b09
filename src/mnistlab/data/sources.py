"""MNIST-style datasets as uint8 tensors.

A dataset is found by name, trying in order: an explicit data directory (IDX raw or gz,
CSV with the label first, Keras NPZ), the user cache (``$MNISTLAB_CACHE``, default
``~/.cache/mnistlab``), system copies (Debian's ``dataset-fashion-mnist``), then the
listed mirrors. Downloads are verified against known checksums and written atomically,
so a killed download never leaves a file that later passes as valid.

    >>> ds = load_dataset("mnist-sample")
    >>> ds.train.images.shape, ds.train.images.dtype
    (torch.Size([8000, 28, 28]), torch.uint8)
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_open, not_regular
from ..errors import DataError
from ..names import AUTO  # noqa: F401  (data's API; the parser's copy, torch-free)

ROWS = COLS = 28
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
FILE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class FileCheck:
    """Known checksums of one file: md5 of the upstream gz, sha256 of the decompressed bytes.

    Either matching is enough, so a recompressed copy (Debian's) passes on its content.
    """

    gz_md5: str | None = None
    raw_sha256: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    mirrors: tuple[str, ...] = ()
    checks: dict = field(default_factory=dict)  # FILE_KEYS -> FileCheck
    system_dirs: tuple[str, ...] = ()
    sizes: tuple[int, int] | None = None  # (train, test) counts when known
    bundled: bool = False
    description: str = ""


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "mnist",
            DIGITS,
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
            checks={
                "train_images": FileCheck(gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                "train_labels": FileCheck(gz_md5="d53e105ee54ea40749a09fcbcd1e9432"),
                "test_images": FileCheck(gz_md5="9fb629c4189551a2d022fa330f9573f3"),
                "test_labels": FileCheck(gz_md5="ec29112dd5afa0611ce80d1b7f02629c"),
            },
            sizes=(60000, 10000),
            description="MNIST handwritten digits, 60k train / 10k test",
        ),
        DatasetInfo(
            "fashion-mnist",
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            checks={
                "train_images": FileCheck(
                    gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    raw_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
                "train_labels": FileCheck(
                    gz_md5="25c81989df183df01b3e8a0aad5dffbe",
                    raw_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
                "test_images": FileCheck(
                    gz_md5="bef4ecab320f06d8554ea6380940ec79",
                    raw_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
                "test_labels": FileCheck(
                    gz_md5="bb300cfdad3c16e7a12a480ee83cd310",
                    raw_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
            },
            system_dirs=("/usr/share/datasets/fashion-mnist",),
            sizes=(60000, 10000),
            description="Zalando Fashion-MNIST clothing images, 60k train / 10k test",
        ),
        DatasetInfo(
            "kmnist",
            ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            checks={
                "train_images": FileCheck(gz_md5="bdb82020997e1d708af4cf47b453dcf7"),
                "train_labels": FileCheck(gz_md5="e144d726b3acfaa3e44228e80efcd344"),
                "test_images": FileCheck(gz_md5="5c965bf0a639b31b8f53240b1b52f4d7"),
                "test_labels": FileCheck(gz_md5="7320c461ea6c1c855c0b718fb2a4b134"),
            },
            sizes=(60000, 10000),
            description="Kuzushiji-MNIST cursive Japanese characters, 60k train / 10k test",
        ),
        DatasetInfo(
            "mnist-sample",
            DIGITS,
            bundled=True,
            sizes=(8000, 2000),
            description="10,000 real MNIST training digits bundled with mnistlab, "
            "split 8,000 train / 2,000 held-out test by a fixed seed",
        ),
    ]
}


def dataset_classes(name: str | None) -> tuple[str, ...]:
    """A catalogued dataset's class names, without reading it; the digits for any other (the
    user's own files)."""
    info = DATASETS.get(name or "")
    return info.classes if info else DIGITS


@dataclass
class Split:
    """One split held whole: images (N, 28, 28) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> Split:
        return Split(self.images[index], self.labels[index])

    def to(self, device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    source: str  # where it was read from, for the run record

    def split(self, train: bool) -> Split:
        return self.train if train else self.test

    def split_validation(self, fraction: float, seed: int = 0) -> tuple[Split, Split]:
        """Carve a validation split off the training set with a fixed seed."""
        n = len(self.train)
        n_val = int(round(n * fraction))
        if not 0 < n_val < n:
            raise DataError(f"validation fraction {fraction} leaves no train or no validation digits")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.train.subset(perm[n_val:]), self.train.subset(perm[:n_val])


# ---------------------------------------------------------------- formats

MAX_ITEMS = 100_000_000  # images or labels in one file: far beyond any MNIST-like set


def parse_idx(raw: bytes, path: Path | str, expect_magic: int) -> np.ndarray:
    """Parse IDX bytes (big-endian header, uint8 payload), checking magic, shape and length."""
    kind = "images" if expect_magic == IMAGE_MAGIC else "labels"
    dims, header = _idx_header(raw, path, expect_magic)
    expected = _idx_size(dims, path, kind)
    if len(raw) - header != expected:
        raise DataError(f"{path}: truncated or padded: header says {dims[0]:,} {kind} "
                        f"({expected:,} bytes), file holds {len(raw) - header:,}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _idx_header(raw: bytes, path, expect_magic: int) -> tuple[tuple[int, ...], int]:
    kind = "images" if expect_magic == IMAGE_MAGIC else "labels"
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX {kind} file ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expect_magic:  # two zero bytes, the type (unsigned bytes), the dimensions
        raise DataError(f"{path}: bad magic number {magic}, expected {expect_magic} for IDX {kind} "
                        f"(the header says {raw[3]} dimension{'s' if raw[3] != 1 else ''})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if kind == "images" and dims[1:] != (ROWS, COLS):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    return dims, header


def _idx_size(dims, path, kind: str) -> int:
    if dims[0] > MAX_ITEMS:
        raise DataError(f"{path}: the header says {dims[0]:,} {kind}; more than {MAX_ITEMS:,} is no dataset "
                        "this reads")
    return int(np.prod(dims, dtype=object))


def read_idx(path: Path | str, expect_magic: int) -> np.ndarray:
    """Read an IDX file, raw or gzip, streaming: the header is checked first and no more than
    it announces is ever read or inflated (a gzip bomb costs nothing)."""
    path = Path(path)
    kind = "images" if expect_magic == IMAGE_MAGIC else "labels"
    _regular(path)
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with (gzip.GzipFile(fileobj=raw) if gz else raw) as f:
                head = f.read(4)
                head += f.read(4 * head[3]) if len(head) == 4 else b""
                dims, _ = _idx_header(head, path, expect_magic)
                expected = _idx_size(dims, path, kind)
                held = os.fstat(raw.fileno()).st_size - len(head)
                if not gz and held != expected:
                    raise DataError(f"{path}: truncated or padded: header says {dims[0]:,} {kind} "
                                    f"({expected:,} bytes), file holds {held:,}")
                body = f.read(expected + 1)
    except DataError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: corrupt or truncated gzip ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(body) > expected:
        raise DataError(f"{path}: padded: more data than the header's {dims[0]:,} {kind}")
    return parse_idx(head + body, path, expect_magic)


def _regular(path: Path) -> None:
    """A DataError naming what `path` is when it is no regular file (a FIFO would hang the read,
    a link to /dev/zero would never end)."""
    why = not_regular(path)
    if why:
        raise DataError(f"{path}: {why}")


def _check_labels(labels: np.ndarray, path, num_classes: int = 10) -> np.ndarray:
    labels = _whole_numbers(np.asarray(labels).reshape(-1), path, "labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise DataError(f"{path}: label {bad} out of range 0..{num_classes - 1}")
    return labels


def _pair(images: np.ndarray, labels: np.ndarray, img_path, lbl_path) -> Split:
    labels = _check_labels(labels, lbl_path)
    if len(images) != len(labels):
        raise DataError(f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels))


def _whole_numbers(a: np.ndarray, where, what: str) -> np.ndarray:
    """`a` as int64, refusing what is not a whole real number: strings, complex, NaN, 3.7."""
    if a.dtype.kind not in "uif" or a.dtype.fields is not None:
        raise DataError(f"{where}: {what} of dtype {a.dtype}; expected whole numbers")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{where}: {what} hold NaN or infinite values")
        if (a != np.round(a)).any():
            raise DataError(f"{where}: {what} hold a fraction ({a[a != np.round(a)].flat[0]:g}); "
                            "expected whole numbers")
        if a.size and (a.min() < -2 ** 62 or a.max() > 2 ** 62):
            raise DataError(f"{where}: {what} out of range")
    return a.astype(np.int64)


def read_csv(paths: list[Path]) -> Split:
    """One image a row: label, then 784 grey values 0-255; an optional header row is skipped."""
    images, labels = [], []
    for path in paths:
        _regular(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read as CSV text ({e})") from None
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines and not lines[0].split(",")[0].strip().lstrip("-").isdigit():
            lines = lines[1:]  # header such as "label,1x1,1x2,..."
        for lineno, line in enumerate(lines, start=1):
            cells = line.split(",")
            if len(cells) != 1 + ROWS * COLS:
                raise DataError(f"{path}: row {lineno} has {len(cells)} values, expected 785 "
                                "(label then 784 pixels)")
            try:
                values = np.array(cells, dtype=np.float64)
            except ValueError:
                raise DataError(f"{path}: row {lineno} holds a value that is not a number") from None
            values = _whole_numbers(values, f"{path}: row {lineno}", "values")
            if values[1:].min() < 0 or values[1:].max() > 255:
                raise DataError(f"{path}: row {lineno} has a pixel outside 0..255")
            labels.append(values[0])
            images.append(values[1:])
    if not labels:
        raise DataError(f"{', '.join(map(str, paths))}: no rows")
    lab = _check_labels(np.asarray(labels, np.int64), paths[0])
    img = np.asarray(images, np.uint8).reshape(-1, ROWS, COLS)
    return Split(torch.from_numpy(img), torch.from_numpy(lab))


def read_npz(path: Path) -> tuple[Split, Split]:
    """Keras' mnist.npz: x_train, y_train, x_test, y_test (uint8)."""
    arrays = _load_arrays(path)
    missing = {"x_train", "y_train", "x_test", "y_test"} - arrays.keys()
    if missing:
        raise DataError(f"{path}: missing arrays {sorted(missing)} (expected Keras mnist.npz layout)")
    splits = []
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        img, lab = _check_images(arrays[x], f"{path}:{x}"), arrays[y]
        splits.append(_pair(img, lab, f"{path}:{x}", f"{path}:{y}"))
    return splits[0], splits[1]


# ---------------------------------------------------------------- finding files

def _find_idx(directory: Path) -> dict[str, Path] | None:
    """Standard IDX names, raw or gz, possibly with a prefix (``emnist-digits-...``)."""
    found = {}
    for key, stem in IDX_NAMES.items():
        # by name, whatever they are: a FIFO or a link to a device with a dataset's name is
        # named in the error rather than passed over (then "missing") or read without end
        hits = sorted(p for p in directory.iterdir() if p.name.endswith(stem) or p.name.endswith(stem + ".gz"))
        if len(hits) > 1:
            # prefer the raw file when both raw and gz are there: it is what the gz unpacks to
            raw = [p for p in hits if not p.name.endswith(".gz")]
            hits = raw if len(raw) == 1 else hits
        if len(hits) > 1:
            raise DataError(f"{directory}: several files could be the {key.replace('_', ' ')}: "
                            + ", ".join(p.name for p in hits))
        if hits:
            _regular(hits[0])
            found[key] = hits[0]
    if not found:
        return None
    missing = [IDX_NAMES[k] for k in FILE_KEYS if k not in found]
    if missing:
        raise DataError(f"{directory}: IDX files incomplete, missing {', '.join(missing)}[.gz]")
    return found


def _load_idx_files(files: dict[str, Path]) -> tuple[Split, Split]:
    train = _pair(read_idx(files["train_images"], IMAGE_MAGIC), read_idx(files["train_labels"], LABEL_MAGIC),
                  files["train_images"], files["train_labels"])
    test = _pair(read_idx(files["test_images"], IMAGE_MAGIC), read_idx(files["test_labels"], LABEL_MAGIC),
                 files["test_images"], files["test_labels"])
    return train, test


def load_directory(directory: str | os.PathLike) -> tuple[Split, Split]:
    """Read a directory holding IDX files, a Keras NPZ, or CSV files (names with train/test)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    try:
        return _load_directory(directory)
    except OSError as e:  # a folder or file we may not read
        raise DataError(f"{directory}: cannot read ({e.strerror or e})") from None


def _load_directory(directory: Path) -> tuple[Split, Split]:
    idx = _find_idx(directory)
    if idx:
        return _load_idx_files(idx)
    npz = sorted(directory.glob("*.npz"))
    for p in npz:
        _regular(p)
    if len(npz) == 1:
        return read_npz(npz[0])
    if len(npz) > 1:
        raise DataError(f"{directory}: several NPZ files, point --data-dir at one of them alone")
    csvs = sorted(directory.glob("*.csv"))
    train = [p for p in csvs if "train" in p.name.lower()]
    test = [p for p in csvs if "test" in p.name.lower()]
    if train and test:
        return read_csv(train), read_csv(test)
    if csvs:
        raise DataError(f"{directory}: CSV files need 'train' and 'test' in their names")
    raise DataError(f"{directory}: no dataset files (expected IDX {IDX_NAMES['train_images']}[.gz] "
                    "and friends, a Keras .npz, or train/test .csv)")


def load_path(path: str | os.PathLike) -> tuple[Split, Split]:
    """A directory, or a single .npz file."""
    path = Path(path)
    if path.suffix == ".npz" and not path.is_dir():
        return read_npz(path)
    return load_directory(path)


# ---------------------------------------------------------------- files by path

FROM_FILES = "files"  # the dataset name of files given by path with no --dataset
UNLABELLED = -1  # the label of every image when no labels were given (autoencoders need none)
TEST_FRACTION = 0.1  # held out by a seeded split when no test images are given


MAX_ARRAY_BYTES = 8 << 30  # one array in an NPZ/NPY file


def _read_npy(f, size: int, where: str) -> np.ndarray:
    """One .npy stream of `size` bytes, its header checked before anything is allocated:
    no objects (pickles), and a shape that the bytes really hold."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"NPY format version {version} is not read")
        shape, fortran, dtype = read_header(f, max_header_size=10_000)
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise DataError(f"{where}: not a readable NPY array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects, which are never loaded")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES or nbytes > size - f.tell():
        raise DataError(f"{where}: the header claims shape {shape} ({nbytes:,} bytes), the file holds "
                        f"{max(0, size - f.tell()):,}")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise DataError(f"{where}: truncated array")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """An NPZ's arrays by name, or a lone NPY's array under its file stem."""
    _regular(path)
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                f.seek(0)
                return {path.stem: _read_npy(f, os.fstat(f.fileno()).st_size, str(path))}
        arrays = {}
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".npy"):
                    with z.open(info) as member:
                        arrays[info.filename[:-4]] = _read_npy(member, info.file_size, f"{path}:{info.filename}")
        return arrays
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError,
            NotImplementedError) as e:
        raise DataError(f"{path}: not a readable NPZ/NPY file ({e})") from None


def _read_images_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """One images file of any name: IDX (raw or gz), CSV (label first), NPZ or NPY.

    Returns the images and, where the format carries them (CSV, NPZ), the labels."""
    _regular(path)
    suffix = path.name.lower().removesuffix(".gz").rsplit(".", 1)[-1] if "." in path.name else ""
    if suffix == "csv":
        split = read_csv([path])
        return split.images.numpy(), split.labels.numpy()
    if suffix in ("npz", "npy"):
        arrays = _load_arrays(path)
        if not arrays:
            raise DataError(f"{path}: holds no arrays")
        key = next((k for k in ("x_train", "x_test", "x", "images") if k in arrays), next(iter(arrays)))
        labels = next((arrays[k] for k in ("y_train", "y_test", "y", "labels") if k in arrays), None)
        return _check_images(arrays[key], f"{path}:{key}"), labels
    return read_idx(path, IMAGE_MAGIC), None


def _check_images(a: np.ndarray, where) -> np.ndarray:
    """(N, 28, 28) images as uint8: whole numbers 0..255, or floats within [0, 1] (scaled by 255)."""
    if a.ndim != 3 or a.shape[1:] != (ROWS, COLS):
        raise DataError(f"{where}: images have shape {a.shape}, expected (N, 28, 28)")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "c":
        raise DataError(f"{where}: complex image values; expected real numbers within 0..255")
    if a.dtype.kind == "f" and a.size and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1:
        return np.rint(a * 255).astype(np.uint8)  # floats in [0, 1], as many pipelines keep them
    a = _whole_numbers(a, where, "image values")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise DataError(f"{where}: image values must be within 0..255 (or floats within [0, 1])")
    return a.astype(np.uint8)


def _read_labels_file(path: Path) -> np.ndarray:
    _regular(path)
    if path.name.lower().endswith((".npy", ".npz")):
        arrays = _load_arrays(path)
        if not arrays:
            raise DataError(f"{path}: holds no arrays")
        return next(iter(arrays.values()))
    return read_idx(path, LABEL_MAGIC)


def _split_from_files(images: str | None, labels: str | None, which: str) -> Split | None:
    if images is None:
        if labels is not None:
            raise DataError(f"--{which}-labels given without --{which}-images")
        return None
    img, lab = _read_images_file(Path(images))
    if labels is not None:
        lab = _read_labels_file(Path(labels))
    if lab is None:
        return Split(torch.from_numpy(img.copy()), torch.full((len(img),), UNLABELLED, dtype=torch.int64))
    return _pair(img, lab, images, labels or images)


def load_files(train_images: str | None = None, train_labels: str | None = None, test_images: str | None = None,
               test_labels: str | None = None, *, seed: int = 0, notice=None) -> tuple[Split, Split]:
    """Datasets as users have them: each file by its own path, any name.

    Labels are optional (images get the label -1, which autoencoders ignore); with no test
    images a seeded 10% of the training images stands in, said in one notice."""
    train = _split_from_files(train_images, train_labels, "train")
    if train is None:
        raise DataError("--train-images is required when data files are given by path")
    test = _split_from_files(test_images, test_labels, "test")
    if test is not None and notice and _same_file(train_images, test_images):
        notice(f"{test_images} is also the training images file: the test figures will measure "
               "memory, not how the model reads digits it has not seen")
    if test is None:
        n_test = max(1, round(TEST_FRACTION * len(train)))
        if len(train) < 2:
            held = "no image" if len(train) == 0 else "one image"
            raise DataError(f"{train_images}: holds {held}; too few to hold some out as a test split")
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        train, test = train.subset(perm[n_test:]), train.subset(perm[:n_test])
        if notice:
            notice(f"no --test-images: holding out a seeded {TEST_FRACTION:.0%} of the training images "
                   f"({n_test:,}) as the test split")
    return train, test


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_labelled(split: Split) -> bool:
    return bool(len(split)) and bool((split.labels != UNLABELLED).all())


# ---------------------------------------------------------------- checks and downloads

def _digest(data: bytes, algo: str) -> str:
    return hashlib.new(algo, data).hexdigest()


def verify_file(path: Path, check: FileCheck) -> None:
    """Raise unless the file matches a known checksum (gz md5, or decompressed sha256)."""
    if check.gz_md5 is None and check.raw_sha256 is None:
        return
    blob = path.read_bytes()
    if check.gz_md5 and _digest(blob, "md5") == check.gz_md5:
        return
    if check.raw_sha256:
        try:
            content = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        except (EOFError, OSError, zlib.error):
            raise DataError(f"{path}: corrupt or truncated gzip") from None
        if _digest(content, "sha256") == check.raw_sha256:
            return
    raise DataError(f"{path}: checksum mismatch (corrupt, truncated or a different file)")


def cache_root() -> Path:
    env = os.environ.get("MNISTLAB_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnistlab"


def download_file(urls: list[str], dest: Path, check: FileCheck, timeout: float = 30.0) -> Path:
    """Fetch the first mirror that answers with verified content; write `dest` atomically.

    The bytes go to a temporary file that is verified (checksum, then IDX structure)
    before the rename, so an interrupted or corrupt download never lands at `dest`.
    """
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                blob = resp.read()
        except urllib.error.HTTPError as e:
            errors.append(f"{url}: HTTP {e.code} {e.reason}")
            continue
        except (urllib.error.URLError, OSError, ValueError) as e:
            errors.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        tmp = dest.with_name(dest.name + ".part")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        try:
            verify_file(tmp, check)
            magic = IMAGE_MAGIC if "idx3" in dest.name else LABEL_MAGIC
            read_idx(tmp, magic)
        except DataError as e:
            errors.append(f"{url}: {str(e).split(': ', 1)[-1]}")
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, dest)
        return dest
    raise DataError("; ".join(errors) or "no mirrors")


def _offline() -> bool:
    return os.environ.get("MNISTLAB_OFFLINE", "").lower() in ("1", "true", "yes")


def _from_cache(info: DatasetInfo) -> tuple[Split, Split, str] | None:
    d = cache_root() / info.name
    arrays = d / "arrays.npz"
    if arrays.exists():
        try:
            tr, te = read_npz(arrays)
            return tr, te, str(arrays)
        except DataError:
            arrays.unlink(missing_ok=True)  # our own decoded copy, corrupt: rebuilt from the files
    if d.is_dir():
        files = _find_idx(d)
        if files:
            tr, te = _load_idx_files(files)
            return tr, te, str(d)
    return None


def _write_array_cache(info: DatasetInfo, train: Split, test: Split) -> None:
    """Keep a decoded copy: loading it skips gunzip and parsing (a few ms instead of ~1 s)."""
    try:
        with atomic_open(cache_root() / info.name / "arrays.npz") as f:
            np.savez(f, x_train=train.images.numpy(), y_train=train.labels.numpy().astype(np.uint8),
                     x_test=test.images.numpy(), y_test=test.labels.numpy().astype(np.uint8))
    except OSError:
        pass  # a read-only cache is no reason to fail a load


def _from_system(info: DatasetInfo) -> tuple[Split, Split, str] | None:
    for d in info.system_dirs:
        d = Path(d)
        if d.is_dir():
            files = _find_idx(d)
            if files:
                for key, path in files.items():
                    verify_file(path, info.checks.get(key, FileCheck()))
                tr, te = _load_idx_files(files)
                return tr, te, str(d)
    return None


def _from_mirrors(info: DatasetInfo, mirrors=None) -> tuple[Split, Split, str]:
    d = cache_root() / info.name
    files = {}
    for key in FILE_KEYS:
        name = IDX_NAMES[key] + ".gz"
        dest = d / name
        if not dest.exists():
            download_file([m + name for m in (mirrors or info.mirrors)], dest, info.checks.get(key, FileCheck()))
        files[key] = dest
    tr, te = _load_idx_files(files)
    return tr, te, str(d)


def _bundled() -> tuple[Split, Split, str]:
    root = resources.files("mnistlab") / "_data" / "mnist-sample"
    sums = {}
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    splits = []
    for prefix in ("train", "t10k"):
        arrays = []
        for kind, magic in (("images-idx3", IMAGE_MAGIC), ("labels-idx1", LABEL_MAGIC)):
            name = f"{prefix}-{kind}-ubyte"
            raw = gzip.decompress((root / (name + ".gz")).read_bytes())
            if _digest(raw, "sha256") != sums[name]:
                raise DataError(f"bundled {name}.gz fails its checksum: reinstall mnistlab")
            arrays.append(parse_idx(raw, name, magic))
        splits.append(_pair(arrays[0], arrays[1], prefix + " images", prefix + " labels"))
    return splits[0], splits[1], "bundled mnist-sample"


def how_to_provide(name: str) -> str:
    return (f"put the four IDX files ({IDX_NAMES['train_images']}.gz, ...) in a folder and pass "
            f"--data-dir FOLDER, or copy them to {cache_root() / name}")


def load_dataset(name: str = AUTO, data_dir: str | os.PathLike | None = None, *,
                 download: bool = True, notice=None, files: dict | None = None) -> Dataset:
    """Load a dataset by name. 'auto' is MNIST when it can be had, else the bundled sample.

    `files` ({"train_images": PATH, ...}, see ``load_files``) names the files directly; the
    dataset name then only gives the class names. `notice` receives one-line messages
    (default: printed to stderr).
    """
    notice = notice or (lambda msg: print(f"mnistlab: {msg}", file=sys.stderr))
    files = {k: v for k, v in (files or {}).items() if v is not None}
    if files:
        given = name not in (AUTO, None, FROM_FILES)
        info = DATASETS.get(name if given else "mnist")  # a named dataset lends its class names
        if info is None:
            raise DataError(f"unknown dataset {name!r}; choose from {', '.join(list(DATASETS) + [AUTO])}")
        train, test = load_files(**files, notice=notice)
        where = ", ".join(str(v) for v in files.values())
        return Dataset(info.name if given else FROM_FILES, train, test, info.classes, where)
    if name == AUTO:
        if data_dir is not None:
            return load_dataset("mnist", data_dir, download=download, notice=notice)
        try:
            return load_dataset("mnist", download=download, notice=notice)
        except DataError as e:
            notice(f"MNIST unavailable ({_first_reason(e)}); using the bundled mnist-sample "
                   "(8,000 train / 2,000 held-out test digits)")
            return load_dataset("mnist-sample")
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(list(DATASETS) + [AUTO])}")
    if info.bundled and data_dir is None:
        train, test, source = _bundled()
        return Dataset(name, train, test, info.classes, source)

    reasons = []
    if data_dir is not None:
        try:
            train, test = load_path(data_dir)
            return Dataset(name, train, test, info.classes, str(data_dir))
        except DataError as e:
            if Path(data_dir).exists() and "no dataset files" not in str(e):
                raise  # the user's own files are broken: say so, never load something else
            reasons.append(f"--data-dir: {e}")
    sources = [("cache", lambda: _from_cache(info)), ("system", lambda: _from_system(info))]
    for label, source in sources:
        try:
            got = source()
        except DataError as e:
            reasons.append(f"{label}: {e}")
            continue
        if got:
            train, test, where = got
            if label != "cache" or not where.endswith(".npz"):
                _write_array_cache(info, train, test)
            return Dataset(name, train, test, info.classes, where)
        if label == "system" and not info.system_dirs:
            reasons.append("system: no system package holds it")
        else:
            where = cache_root() / name if label == "cache" else ", ".join(info.system_dirs)
            reasons.append(f"{label}: no copy in {where}")
    if download and info.mirrors and not _offline():
        try:
            train, test, where = _from_mirrors(info)
            _write_array_cache(info, train, test)
            return Dataset(name, train, test, info.classes, where)
        except DataError as e:
            reasons.append(f"download: {e}")
    elif info.mirrors:
        reasons.append("download: disabled (offline)")
    raise DataError(f"dataset {name!r} not found: " + " | ".join(reasons) + f". To fix: {how_to_provide(name)}")


def _first_reason(e: Exception) -> str:
    text = str(e)
    if "not found" not in text:
        return text.split(" | ")[0]
    if "disabled (offline)" in text:
        return "no local copy, and offline: no download tried"
    return "no local copy, download failed"


@dataclass(frozen=True)
class Digit:
    """One dataset image picked by id, with where it came from."""

    image: np.ndarray  # (28, 28) uint8
    label: str | None  # its class name; None for unlabelled images
    index: int
    split: str  # "train" or "test"
    dataset: str

    @property
    def name(self) -> str:
        return f"{self.dataset} {self.split} #{self.index}"


def pick_digit(ds: Dataset, train: bool = False, index: int | None = None) -> Digit:
    """The image `index` of a split (a random one when None); an id out of range is an error."""
    split = ds.split(train)
    if index is None:
        index = int(np.random.default_rng().integers(len(split)))
    if not 0 <= index < len(split):
        raise DataError(f"id {index} out of range: {ds.name} {'train' if train else 'test'} "
                        f"has ids 0..{len(split) - 1}")
    label = int(split.labels[index])
    return Digit(split.images[index].numpy(), ds.classes[label] if label != UNLABELLED else None, index,
                 "train" if train else "test", ds.name)


def dataset_for(source, notice=None) -> Dataset:
    """The dataset a config describes: anything with ``dataset``, ``data_dir`` and the four
    file paths (a run's DataConfig, an experiment's config). A held-out split of files given
    by path is always seed 0's, so a run reloaded later is scored on the same images."""
    return load_dataset(source.dataset, source.data_dir, notice=notice,
                        files={k: getattr(source, k, None) for k in FILE_KEYS})


def split_counts(ds: Dataset) -> str:
    return f"{len(ds.train):,} train / {len(ds.test):,} test"


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float in [0, 1], on the images' device."""
    return images.unsqueeze(1).float().div_(255.0)


__all__ = ["DATASETS", "Dataset", "Split", "load_dataset", "load_path", "load_files", "read_idx", "read_csv",
           "read_npz", "verify_file", "download_file", "cache_root", "images_to_float"]
