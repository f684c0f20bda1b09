"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would keep a shared run folder from teammates
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON line; rewrite atomically so a crash never leaves a torn last line."""
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    with atomic_open(path, "wb") as f:
        f.write(old + (json.dumps(row) + "\n").encode())


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    with atomic_open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
