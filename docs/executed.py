"""The tutorials, executed once per change: tests/test_notebooks.py runs each notebook and keeps
the result in build/tutorials/, keyed by the notebook's source and the package's code; the docs
build renders what was kept and executes a notebook itself only when nothing is kept for its
current source and code. So CI runs each tutorial once (in `make test`), not again in `make docs`."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEPT = ROOT / "build" / "tutorials"
KEY = "mnistlab_executed_from"


def key(source: Path) -> str:
    """The notebook's source and every file of the package it runs, hashed."""
    h = hashlib.sha256(Path(source).read_bytes())
    for p in sorted((ROOT / "src" / "mnistlab").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(ROOT).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def keep(nb, source: Path) -> Path:
    """Write the executed notebook `nb` (nbformat) for `source`, atomically."""
    import nbformat

    nb.metadata[KEY] = key(source)
    KEPT.mkdir(parents=True, exist_ok=True)
    target = KEPT / f"{Path(source).stem}.ipynb"
    fd, tmp = tempfile.mkstemp(dir=KEPT, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        nbformat.write(nb, f)
    os.replace(tmp, target)
    return target


def kept(source: Path):
    """The executed notebook kept for `source` as it is now, or None."""
    import nbformat

    path = KEPT / f"{Path(source).stem}.ipynb"
    if not path.is_file():
        return None
    nb = nbformat.read(path, as_version=4)
    return nb if nb.metadata.get(KEY) == key(source) else None


def execute(source: Path, cwd: Path, timeout: int = 600):
    """Run the jupytext notebook `source` in a fresh kernel, as a reader would; returns it."""
    import jupytext
    import nbclient

    nb = jupytext.read(source)
    nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb
