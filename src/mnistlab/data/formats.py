"""Reading the formats users bring, each checked before it is trusted: IDX (raw or gzip,
streamed, the header's claim checked against the bytes), CSV (label first, 784 grey values),
Keras NPZ and lone NPY (no pickles; a header's shape against the bytes there); a folder of such
files found by name; files given one by one by path, labels optional."""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .._io import not_regular
from ..errors import DataError
from ..names import FILE_KEYS
from .splits import UNLABELLED, Split

ROWS = COLS = 28
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ---------------------------------------------------------------- formats

MAX_ITEMS = 100_000_000  # images or labels in one file: far beyond any MNIST-like set


def parse_idx(raw: bytes, path: Path | str, expect_magic: int) -> np.ndarray:
    """Parse IDX bytes (big-endian header, uint8 payload), checking magic, shape and length."""
    kind = "images" if expect_magic == IMAGE_MAGIC else "labels"
    dims, header = _idx_header(raw, path, expect_magic)
    expected = _idx_size(dims, path, kind)
    if len(raw) - header != expected:
        raise DataError(
            f"truncated or padded: header says {dims[0]:,} {kind} "
            f"({expected:,} bytes), file holds {len(raw) - header:,}",
            subject=path,
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _idx_header(raw: bytes, path, expect_magic: int) -> tuple[tuple[int, ...], int]:
    kind = "images" if expect_magic == IMAGE_MAGIC else "labels"
    if len(raw) < 4:
        raise DataError(f"too short to be an IDX {kind} file ({len(raw)} bytes)", subject=path)
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expect_magic:  # two zero bytes, the type (unsigned bytes), the dimensions
        raise DataError(
            f"bad magic number {magic}, expected {expect_magic} for IDX {kind} "
            f"(the header says {raw[3]} dimension{'s' if raw[3] != 1 else ''})",
            subject=path,
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError("truncated IDX header", subject=path)
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if kind == "images" and dims[1:] != (ROWS, COLS):
        raise DataError(f"images are {dims[1]}x{dims[2]}, expected 28x28", subject=path)
    return dims, header


def _idx_size(dims, path, kind: str) -> int:
    if dims[0] > MAX_ITEMS:
        raise DataError(
            f"the header says {dims[0]:,} {kind}; more than {MAX_ITEMS:,} is no dataset this reads", subject=path
        )
    return int(np.prod(dims, dtype=object))


def read_idx(path: Path | str, expect_magic: int) -> np.ndarray:
    """Read an IDX file, raw or gzip, streaming: the header is checked first and no more than
    it announces is ever read or inflated (a gzip bomb costs nothing)."""
    path = Path(path)
    _regular(path)
    return _idx_from(path, expect_magic)


def _idx_from(path: Path, expect_magic: int) -> np.ndarray:
    """read_idx on a path already known to be a regular file."""
    kind = "images" if expect_magic == IMAGE_MAGIC else "labels"
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) if gz else raw as f:
                head = f.read(4)
                head += f.read(4 * head[3]) if len(head) == 4 else b""
                dims, _ = _idx_header(head, path, expect_magic)
                expected = _idx_size(dims, path, kind)
                held = os.fstat(raw.fileno()).st_size - len(head)
                if not gz and held != expected:
                    raise DataError(
                        f"truncated or padded: header says {dims[0]:,} {kind} "
                        f"({expected:,} bytes), file holds {held:,}",
                        subject=path,
                    )
                body = _read_upto(f, expected + 1)
    except DataError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"corrupt or truncated gzip ({e})", subject=path) from None
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror or e})", subject=path) from None
    if len(body) > expected:
        raise DataError(f"padded: more data than the header's {dims[0]:,} {kind}", subject=path)
    if len(body) < expected:  # a header's claim is checked against the bytes there, never allocated
        raise DataError(
            f"truncated: the header says {dims[0]:,} {kind} ({expected:,} bytes), the data holds {len(body):,}",
            subject=path,
        )
    return parse_idx(head + body, path, expect_magic)


CHUNK = 1 << 20  # bytes read (or inflated) at a time


def _read_upto(f, most: int) -> bytes:
    """At most `most` bytes of `f`, read in chunks: memory follows the bytes there, not the
    number asked for (a header may claim 20 million images over one megabyte of data)."""
    parts, got = [], 0
    while got < most:
        part = f.read(min(CHUNK, most - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _regular(path: Path) -> None:
    """A DataError naming what `path` is when it is no regular file (a FIFO would hang the read,
    a link to /dev/zero would never end)."""
    why = not_regular(path)
    if why:
        raise DataError(f"{why}", subject=path)


def _check_labels(labels: np.ndarray, path, num_classes: int = 10) -> np.ndarray:
    labels = _whole_numbers(np.asarray(labels).reshape(-1), path, "labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise DataError(f"label {bad} out of range 0..{num_classes - 1}", subject=path)
    return labels


def _pair(images: np.ndarray, labels: np.ndarray, img_path, lbl_path) -> Split:
    labels = _check_labels(labels, lbl_path)
    if len(images) != len(labels):
        raise DataError(f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels")
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels))


def _whole_numbers(a: np.ndarray, where, what: str) -> np.ndarray:
    """`a` as int64, refusing what is not a whole real number: strings, complex, NaN, 3.7."""
    if a.dtype.kind not in "uif" or a.dtype.fields is not None:
        raise DataError(f"{what} of dtype {a.dtype}; expected whole numbers", subject=where)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{what} hold NaN or infinite values", subject=where)
        if (a != np.round(a)).any():
            raise DataError(
                f"{what} hold a fraction ({a[a != np.round(a)].flat[0]:g}); expected whole numbers", subject=where
            )
        if a.size and (a.min() < -(2**62) or a.max() > 2**62):
            raise DataError(f"{what} out of range", subject=where)
    return a.astype(np.int64)


def read_csv(paths: list[Path]) -> Split:
    """One image a row: label, then 784 grey values 0-255; an optional header row is skipped."""
    for path in paths:
        _regular(path)
    return _csv_from(paths)


def _csv_from(paths: list[Path]) -> Split:
    """read_csv on paths already known to be regular files."""
    images, labels = [], []
    for path in paths:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read as CSV text ({e})", subject=path) from None
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if lines and not lines[0].split(",")[0].strip().lstrip("-").isdigit():
            lines = lines[1:]  # header such as "label,1x1,1x2,..."
        for lineno, line in enumerate(lines, start=1):
            cells = line.split(",")
            if len(cells) != 1 + ROWS * COLS:
                raise DataError(
                    f"row {lineno} has {len(cells)} values, expected 785 (label then 784 pixels)", subject=path
                )
            try:
                values = np.array(cells, dtype=np.float64)
            except ValueError:
                raise DataError(f"row {lineno} holds a value that is not a number", subject=path) from None
            values = _whole_numbers(values, f"{path}: row {lineno}", "values")
            if values[1:].min() < 0 or values[1:].max() > 255:
                raise DataError(f"row {lineno} has a pixel outside 0..255", subject=path)
            labels.append(values[0])
            images.append(values[1:])
    if not labels:
        raise DataError(f"{', '.join(map(str, paths))}: no rows")
    lab = _check_labels(np.asarray(labels, np.int64), paths[0])
    img = np.asarray(images, np.uint8).reshape(-1, ROWS, COLS)
    return Split(torch.from_numpy(img), torch.from_numpy(lab))


def read_npz(path: Path) -> tuple[Split, Split]:
    """Keras' mnist.npz: x_train, y_train, x_test, y_test (uint8)."""
    _regular(Path(path))
    return _npz_from(Path(path))


def _npz_from(path: Path) -> tuple[Split, Split]:
    """read_npz on a path already known to be a regular file."""
    arrays = _load_arrays(path)
    missing = {"x_train", "y_train", "x_test", "y_test"} - arrays.keys()
    if missing:
        raise DataError(f"missing arrays {sorted(missing)} (expected Keras mnist.npz layout)", subject=path)
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
            raise DataError(
                f"{directory}: several files could be the {key.replace('_', ' ')}: " + ", ".join(p.name for p in hits)
            )
        if hits:
            _regular(hits[0])
            found[key] = hits[0]
    if not found:
        return None
    missing = [IDX_NAMES[k] for k in FILE_KEYS if k not in found]
    if missing:
        raise DataError(f"IDX files incomplete, missing {', '.join(missing)}[.gz]", subject=directory)
    return found


def _load_idx_files(files: dict[str, Path]) -> tuple[Split, Split]:
    train = _pair(
        _idx_from(files["train_images"], IMAGE_MAGIC),
        _idx_from(files["train_labels"], LABEL_MAGIC),
        files["train_images"],
        files["train_labels"],
    )
    test = _pair(
        _idx_from(files["test_images"], IMAGE_MAGIC),
        _idx_from(files["test_labels"], LABEL_MAGIC),
        files["test_images"],
        files["test_labels"],
    )
    return train, test


def load_directory(directory: str | os.PathLike) -> tuple[Split, Split]:
    """Read a directory holding IDX files, a Keras NPZ, or CSV files (names with train/test)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("not a directory", subject=directory)
    try:
        return _load_directory(directory)
    except OSError as e:  # a folder or file we may not read
        raise DataError(f"cannot read ({e.strerror or e})", subject=directory) from None


def _load_directory(directory: Path) -> tuple[Split, Split]:
    idx = _find_idx(directory)
    if idx:
        return _load_idx_files(idx)
    npz = sorted(directory.glob("*.npz"))
    for p in npz:
        _regular(p)
    if len(npz) == 1:
        return _npz_from(npz[0])
    if len(npz) > 1:
        raise DataError("several NPZ files, point --data-dir at one of them alone", subject=directory)
    csvs = sorted(directory.glob("*.csv"))
    train = [p for p in csvs if "train" in p.name.lower()]
    test = [p for p in csvs if "test" in p.name.lower()]
    if train and test:
        return read_csv(train), read_csv(test)  # each file checked as it is read
    if csvs:
        raise DataError("CSV files need 'train' and 'test' in their names", subject=directory)
    raise DataError(
        f"no dataset files (expected IDX {IDX_NAMES['train_images']}[.gz] "
        "and friends, a Keras .npz, or train/test .csv)",
        subject=directory,
        reason="no dataset files",
    )


def load_path(path: str | os.PathLike) -> tuple[Split, Split]:
    """A directory, or a single .npz file."""
    path = Path(path)
    if path.suffix == ".npz" and not path.is_dir():
        return read_npz(path)
    return load_directory(path)


TEST_FRACTION = 0.1  # held out by a seeded split when no test images are given


MAX_ARRAY_BYTES = 8 << 30  # one array in an NPZ/NPY file


def _read_npy(f, size: int, where: str) -> np.ndarray:
    """One .npy stream of `size` bytes, its header checked before anything is allocated:
    no objects (pickles), and a shape that the bytes really hold."""
    try:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(
            version
        )
        if read_header is None:
            raise ValueError(f"NPY format version {version} is not read")
        shape, fortran, dtype = read_header(f, max_header_size=10_000)
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise DataError(f"not a readable NPY array ({e})", subject=where) from None
    if dtype.hasobject:
        raise DataError("holds Python objects, which are never loaded", subject=where)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES or nbytes > size - f.tell():
        raise DataError(
            f"the header claims shape {shape} ({nbytes:,} bytes), the file holds {max(0, size - f.tell()):,}",
            subject=where,
        )
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise DataError("truncated array", subject=where)
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """An NPZ's arrays by name, or a lone NPY's array under its file stem (a regular file)."""
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
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as e:
        raise DataError(f"not a readable NPZ/NPY file ({e})", subject=path) from None


def _read_images_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """One images file of any name: IDX (raw or gz), CSV (label first), NPZ or NPY.

    Returns the images and, where the format carries them (CSV, NPZ), the labels."""
    _regular(path)
    suffix = path.name.lower().removesuffix(".gz").rsplit(".", 1)[-1] if "." in path.name else ""
    if suffix == "csv":
        split = _csv_from([path])
        return split.images.numpy(), split.labels.numpy()
    if suffix in ("npz", "npy"):
        arrays = _load_arrays(path)
        if not arrays:
            raise DataError("holds no arrays", subject=path)
        key = next((k for k in ("x_train", "x_test", "x", "images") if k in arrays), next(iter(arrays)))
        labels = next((arrays[k] for k in ("y_train", "y_test", "y", "labels") if k in arrays), None)
        return _check_images(arrays[key], f"{path}:{key}"), labels
    return _idx_from(path, IMAGE_MAGIC), None


def _check_images(a: np.ndarray, where) -> np.ndarray:
    """(N, 28, 28) images as uint8: whole numbers 0..255, or floats within [0, 1] (scaled by 255)."""
    if a.ndim != 3 or a.shape[1:] != (ROWS, COLS):
        raise DataError(f"images have shape {a.shape}, expected (N, 28, 28)", subject=where)
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "c":
        raise DataError("complex image values; expected real numbers within 0..255", subject=where)
    if a.dtype.kind == "f" and a.size and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1:
        return np.rint(a * 255).astype(np.uint8)  # floats in [0, 1], as many pipelines keep them
    a = _whole_numbers(a, where, "image values")
    if a.size and (a.min() < 0 or a.max() > 255):
        raise DataError("image values must be within 0..255 (or floats within [0, 1])", subject=where)
    return a.astype(np.uint8)


def _read_labels_file(path: Path) -> np.ndarray:
    _regular(path)
    if path.name.lower().endswith((".npy", ".npz")):
        arrays = _load_arrays(path)
        if not arrays:
            raise DataError("holds no arrays", subject=path)
        return next(iter(arrays.values()))
    return _idx_from(path, LABEL_MAGIC)


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


def load_files(
    train_images: str | None = None,
    train_labels: str | None = None,
    test_images: str | None = None,
    test_labels: str | None = None,
    *,
    seed: int = 0,
    notice=None,
) -> tuple[Split, Split]:
    """Datasets as users have them: each file by its own path, any name.

    Labels are optional (images get the label -1, which autoencoders ignore); with no test
    images a seeded 10% of the training images stands in, said in one notice."""
    train = _split_from_files(train_images, train_labels, "train")
    if train is None:
        raise DataError("--train-images is required when data files are given by path")
    test = _split_from_files(test_images, test_labels, "test")
    if test is not None and notice and _same_file(train_images, test_images):
        notice(
            f"{test_images} is also the training images file: the test figures will measure "
            "memory, not how the model reads digits it has not seen"
        )
    if test is None:
        n_test = max(1, round(TEST_FRACTION * len(train)))
        if len(train) < 2:
            held = "no image" if len(train) == 0 else "one image"
            raise DataError(f"holds {held}; too few to hold some out as a test split", subject=train_images)
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        train, test = train.subset(perm[n_test:]), train.subset(perm[:n_test])
        if notice:
            notice(
                f"no --test-images: holding out a seeded {TEST_FRACTION:.0%} of the training images "
                f"({n_test:,}) as the test split"
            )
    return train, test


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
