"""The layout docs/development.md draws is the package's real one: every module and package is
listed with a line on what it does, and nothing is listed that is not there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "mnistlab"


def _listed() -> dict[str, str]:
    """path (relative to src/mnistlab) -> its line, from the tree after <!-- layout -->."""
    text = (ROOT / "docs" / "development.md").read_text()
    block = text.split("<!-- layout -->", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert lines[0].strip() == "src/mnistlab/"
    out, stack = {}, []
    for ln in lines[1:]:
        depth = (len(ln) - len(ln.lstrip())) // 2 - 1
        name, _, about = ln.strip().partition(" ")
        stack[depth:] = [name.rstrip("/")]
        out["/".join(stack) + ("/" if name.endswith("/") else "")] = about.strip()
    return out


def _real() -> set[str]:
    out = set()
    for p in PACKAGE.rglob("*.py"):
        rel = p.relative_to(PACKAGE)
        if p.name == "__init__.py" and rel.parent != Path("."):
            out.add(rel.parent.as_posix() + "/")  # a package stands for its __init__
        else:
            out.add(rel.as_posix())
    return out


def test_the_documented_tree_is_the_real_one():
    listed = _listed()
    assert set(listed) == _real(), sorted(set(listed) ^ _real())


def test_every_room_says_what_it_does():
    assert all(re.search(r"\w", about) for about in _listed().values())
