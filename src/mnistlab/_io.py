"""The one writer and the one defensive reader.

Every file the project writes goes through ``atomic_open``: a reader never sees a half-written
file, a crash leaves the old one, and the target is checked first (``check_target``): never a
device, FIFO, socket or folder, never under /dev, /proc or /sys, and never a file a run folder
owns (its checkpoint, config, metrics, ...) unless the writer is that run's own (``run_file``).
Folders given by the user are made by ``make_folder`` under the same rules.

The reader takes only regular files, never more than a cap, and catches JSON depth errors."""

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


# ---------------------------------------------------------------- the one writer

SYSTEM_ROOTS = ("/dev", "/proc", "/sys")  # the kernel's: nothing of ours is ever made there
# the files a run folder owns: written only by the run's own code (run_file=True), never as the
# output of a command, where a typo would lose the run
RUN_FILES = frozenset(
    {"checkpoint.pt", "config.json", "metrics.jsonl", "env.json", "summary.json", "calibration.json", "exports.json"}
    | {"results.json", ".claim"}
)


class Refused(OSError):
    """A write refused before anything was written; str() is "path: why"."""

    def __init__(self, path: str | os.PathLike, why: str):
        super().__init__(errno.EPERM, why, str(path))


def kind_of(mode: int) -> str | None:
    """What a file that is not a regular one is, in words (None for a regular file)."""
    for test, what in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return None if stat.S_ISREG(mode) else "not a regular file"


def _system(path: Path) -> str | None:
    """The system root `path` lies under, followed through links (None when it lies under none)."""
    real = Path(os.path.realpath(path))
    for root in SYSTEM_ROOTS:
        if real == Path(root) or real.is_relative_to(root) or path.absolute().is_relative_to(root):
            return root
    return None


def is_run_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / f).exists() for f in ("checkpoint.pt", "metrics.jsonl", "results.json", ".claim")
    )


def check_target(path: str | os.PathLike, *, run_file: bool = False) -> Path:
    """`path` as a file we may write, or Refused saying why not (before anything is written)."""
    path = Path(path)
    if root := _system(path):
        raise Refused(path, f"under {root}, the system's: write somewhere else")
    try:
        st = os.stat(path)  # through links: a link to /dev/zero is a device
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise Refused(path, f"cannot be written ({e.strerror or e})") from None
    if st is not None and (what := kind_of(st.st_mode)):
        hint = "name a file in it" if stat.S_ISDIR(st.st_mode) else "name a regular file"
        raise Refused(path, f"{what}, not a file: {hint}")
    if not run_file and path.name in RUN_FILES and is_run_folder(Path(os.path.realpath(path.parent))):
        raise Refused(path, f"the {path.name} of the run in {path.parent}: not written over; name another file")
    return path


def make_folder(path: str | os.PathLike) -> Path:
    """A folder the user named for our outputs, made if missing; refused under /dev, /proc, /sys
    or where a file (or device, FIFO, ...) stands."""
    path = check_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise Refused(path, "a part of this path is a file, not a folder") from None
    return path


def check_folder(path: str | os.PathLike) -> Path:
    """`path` as a folder we may make or write in (make_folder's checks, nothing made)."""
    path = Path(path)
    if root := _system(path):
        raise Refused(path, f"under {root}, the system's: write somewhere else")
    if os.path.lexists(path) and not path.is_dir():
        try:
            what = kind_of(os.stat(path).st_mode) or "a file"
        except OSError:
            what = "a dangling link"
        raise Refused(path, f"{what}, not a folder")
    return path


SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: str | os.PathLike) -> Path:
    """A path a SQLite store may live at (a tracking store, a study): none yet, an empty file or
    a SQLite database, in a folder that is one or can be made; never a FIFO (opening one would
    hang), a device or a text file. Raises Refused saying which; checked before anything is made."""
    path = Path(path)
    if root := _system(path):
        raise Refused(path, f"under {root}, the system's: not a place for a database")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise Refused(path, f"cannot be opened ({e.strerror or e})") from None
    if st is not None:
        if what := kind_of(st.st_mode):
            raise Refused(path, f"{what}, not a SQLite database")
        if st.st_size:
            head = read_regular(path, 1 << 40)[:16] if st.st_size < 16 else _head(path, 16)
            if head != SQLITE_HEADER:
                raise Refused(path, "not a SQLite database (some other file is there)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise Refused(path, f"{parent} is a file, not a folder")
    return path


def _head(path: Path, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        return f.read(n)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, run_file: bool = False) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename. The
    target is checked before (and again just before the rename): see ``check_target``."""
    path = check_target(path, run_file=run_file)
    make_folder(path.parent)
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
        check_target(path, run_file=run_file)  # nothing swapped in while we wrote
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, run_file: bool = False) -> Path:
    with atomic_open(path, "wb", run_file=run_file) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, run_file: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), run_file=run_file)


def write_json(path: str | os.PathLike, obj: Any, *, run_file: bool = False) -> None:
    with atomic_open(path, "w", run_file=run_file) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def append_jsonl(path: str | os.PathLike, row: dict, *, run_file: bool = False) -> None:
    """Append one JSON line; rewrite atomically so a crash never leaves a torn last line."""
    path = check_target(path, run_file=run_file)
    old = path.read_bytes() if path.exists() else b""
    with atomic_open(path, "wb", run_file=run_file) as f:
        f.write(old + (json.dumps(row) + "\n").encode())


def write_jsonl(path: str | os.PathLike, rows: list[dict], *, run_file: bool = False) -> None:
    with atomic_open(path, "w", run_file=run_file) as f:
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
    what = kind_of(st.st_mode)
    return None if what is None else what if what.startswith("not ") else f"{what}, not a file"


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


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the key {twice[:40]!r} is given twice")
    return dict(pairs)


def parse_json(text: str, where) -> object:
    """JSON as we write it: a key given twice is refused (never the last one silently taken)."""
    try:
        return json.loads(text, object_pairs_hook=_no_repeats)
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
