"""Where datasets come from: the catalogue of named sets, and the places each is found.

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
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .._io import atomic_open
from ..errors import DataError
from ..names import AUTO, FILE_KEYS
from .formats import (
    IDX_NAMES,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    _find_idx,
    _load_idx_files,
    _pair,
    load_files,
    load_path,
    parse_idx,
    read_idx,
    read_npz,
)
from .splits import DIGITS, Dataset, Split


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
            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            checks={
                "train_images": FileCheck(
                    gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    raw_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                ),
                "train_labels": FileCheck(
                    gz_md5="25c81989df183df01b3e8a0aad5dffbe",
                    raw_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                ),
                "test_images": FileCheck(
                    gz_md5="bef4ecab320f06d8554ea6380940ec79",
                    raw_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                ),
                "test_labels": FileCheck(
                    gz_md5="bb300cfdad3c16e7a12a480ee83cd310",
                    raw_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
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


# ---------------------------------------------------------------- files by path

FROM_FILES = "files"  # the dataset name of files given by path with no --dataset


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
            raise DataError("corrupt or truncated gzip", subject=path) from None
        if _digest(content, "sha256") == check.raw_sha256:
            return
    raise DataError("checksum mismatch (corrupt, truncated or a different file)", subject=path)


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
            read_idx(tmp, magic)  # the bytes just written, parsed as the loader will
        except DataError as e:
            errors.append(f"{url}: {e.detail}")
            tmp.unlink(missing_ok=True)
            continue
        os.replace(tmp, dest)
        return dest
    raise DataError("; ".join(errors) or "no mirrors")


SESSION_S = 3600  # how long "MNIST is unavailable" holds for one shell


def _said_unavailable(mark: bool = False) -> bool:
    """Whether this session (the shell that runs us, for an hour) was already told MNIST is
    unavailable; `mark` records that it now was. A marker file in the cache; any failure to
    read or write it just means the notice (and the try) comes again."""
    marker = cache_root() / "sessions" / f"mnist-unavailable-{os.getppid()}"
    try:
        if mark:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            return True
        return marker.is_file() and time.time() - marker.stat().st_mtime < SESSION_S
    except OSError:
        return False


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
            np.savez(
                f,
                x_train=train.images.numpy(),
                y_train=train.labels.numpy().astype(np.uint8),
                x_test=test.images.numpy(),
                y_test=test.labels.numpy().astype(np.uint8),
            )
    except OSError:
        pass  # a read-only cache is no reason to fail a load


def _from_system(info: DatasetInfo) -> tuple[Split, Split, str] | None:
    for folder in info.system_dirs:
        d = Path(folder)
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
    return (
        f"put the four IDX files ({IDX_NAMES['train_images']}.gz, ...) in a folder and pass "
        f"--data-dir FOLDER, or copy them to {cache_root() / name}"
    )


def load_dataset(
    name: str = AUTO,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    notice=None,
    files: dict | None = None,
) -> Dataset:
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
        if _said_unavailable():  # this session already heard it: not tried (nor said) again
            return load_dataset("mnist-sample")
        try:
            return load_dataset("mnist", download=download, notice=notice)
        except DataError as e:
            notice(
                f"MNIST unavailable ({_first_reason(e)}); using the bundled mnist-sample "
                "(8,000 train / 2,000 held-out test digits); said once this session"
            )
            _said_unavailable(mark=True)
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
            if Path(data_dir).exists() and e.reason != "no dataset files":
                raise  # the user's own files are broken: say so, never load something else
            reasons.append(f"--data-dir: {e}")
    finders = [("cache", lambda: _from_cache(info)), ("system", lambda: _from_system(info))]
    for label, find in finders:
        try:
            got = find()
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
            looked = str(cache_root() / name) if label == "cache" else ", ".join(info.system_dirs)
            reasons.append(f"{label}: no copy in {looked}")
    if download and info.mirrors and not _offline():
        try:
            train, test, where = _from_mirrors(info)
            _write_array_cache(info, train, test)
            return Dataset(name, train, test, info.classes, where)
        except DataError as e:
            reasons.append(f"download: {e}")
    elif info.mirrors:
        reasons.append("download: disabled (offline)")
    offline = bool(info.mirrors) and (not download or _offline())
    raise DataError(
        f"dataset {name!r} not found: " + " | ".join(reasons) + f". To fix: {how_to_provide(name)}",
        reason="offline" if offline else "not found",
    )


def _first_reason(e: DataError) -> str:
    if e.reason == "offline":
        return "no local copy, and offline: no download tried"
    if e.reason == "not found":
        return "no local copy, download failed"
    return str(e)


def dataset_for(source, notice=None) -> Dataset:
    """The dataset a config describes: anything with ``dataset``, ``data_dir`` and the four
    file paths (a run's DataConfig, an experiment's config). A held-out split of files given
    by path is always seed 0's, so a run reloaded later is scored on the same images."""
    return load_dataset(
        source.dataset, source.data_dir, notice=notice, files={k: getattr(source, k, None) for k in FILE_KEYS}
    )


__all__ = [
    "DATASETS",
    "DatasetInfo",
    "FileCheck",
    "cache_root",
    "dataset_classes",
    "dataset_for",
    "download_file",
    "load_dataset",
    "verify_file",
]
