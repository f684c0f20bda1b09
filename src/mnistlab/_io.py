"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one.
And one defensive reader: only regular files, never more than a cap, JSON depth errors caught."""

from __future__ import annotations

import errno
import json
import os
import stat
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
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file name to write", str(path))
    # the temporary name is kept short: a name near the file system's limit must not fail here
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # said of the file asked for, not of our temporary name
        raise OSError(e.errno, f"cannot write there ({e.strerror})", str(path)) from None
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


# ---------------------------------------------------------------- the defensive reader

MAX_JSON = 16 << 20  # a run's JSON files are kilobytes; a sweep's table a few megabytes at most
MAX_CONFIG = 1 << 20


class Unreadable(Exception):
    """A path that is no regular file we may read within the cap; the message says what it is.
    Callers turn it into their own error (DataError, RunError, ConfigError)."""


def not_regular(path: str | os.PathLike) -> str | None:
    """Why `path` is not a regular file to read (followed through links), or None when it is."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "a dangling link (its target is missing)" if os.path.islink(path) else "no such file"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        if e.errno == errno.ENAMETOOLONG:
            return "a name too long for this file system"
        return f"cannot be read ({e.strerror or e})"
    mode = st.st_mode
    for test, what in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return f"{what}, not a file"
    return None if stat.S_ISREG(mode) else "not a regular file"


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else raises Unreadable.
    Opened without blocking (a FIFO swapped in after the check cannot hang the read) and checked
    again on the open descriptor."""
    why = not_regular(path)
    if why:
        raise Unreadable(f"{path}: {why}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise Unreadable(f"{path}: cannot be read ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(f"{path}: not a regular file")
        if st.st_size > limit:
            raise Unreadable(f"{path}: {st.st_size:,} bytes, more than the {limit:,} such a file may hold")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Unreadable(f"{path}: more than the {limit:,} bytes such a file may hold")
    return data


def read_text(path: str | os.PathLike, limit: int) -> str:
    data = read_regular(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Unreadable(f"{path}: not UTF-8 text (byte {e.start})") from None


def parse_json(text: str, where) -> object:
    try:
        return json.loads(text)
    except RecursionError:
        raise Unreadable(f"{where}: JSON nested too deeply") from None
    except ValueError as e:
        raise Unreadable(f"{where}: not valid JSON ({str(e)[:120]})") from None


def read_json(path: str | os.PathLike, limit: int = MAX_JSON) -> object:
    """A JSON file's value: a regular file within `limit`, UTF-8, not nested too deeply."""
    return parse_json(read_text(path, limit), path)


def read_jsonl(path: str | os.PathLike, *, notice=None, limit: int = 256 << 20) -> list[dict]:
    """The JSON objects of a JSON-lines file ([] without one). A last line cut short (a kill can
    leave that) is dropped, with a line to `notice`; any other bad line raises Unreadable."""
    path = Path(path)
    if not os.path.lexists(path):
        return []
    lines = read_text(path, limit).split("\n")
    torn = bool(lines) and lines[-1].strip() != ""  # no newline after the last line
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = parse_json(line, f"{path}: line {n}")
        except Unreadable:
            if torn and n == len(lines):
                if notice:
                    notice(f"{path}: its last line was cut short (a kill mid-write?): dropped")
                break
            raise
        if not isinstance(row, dict):
            raise Unreadable(f"{path}: line {n} is not a JSON object")
        rows.append(row)
    return rows
