"""The tutorials run: each jupytext notebook under docs/tutorials is executed in a fresh kernel, as
a reader would run it, and must show its figures inline. The executed notebook is kept for the
docs build (docs/executed.py), which then need not run it again."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="jupytext is installed with the dev extras")
nbclient = pytest.importorskip("nbclient", reason="nbclient is installed with the dev extras")

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import executed  # noqa: E402

NOTEBOOKS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))
CAPPED = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def test_there_are_five_tutorials():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.outcome
@pytest.mark.slow("runs a notebook in a fresh kernel")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_and_shows_its_figures(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    t = time.perf_counter()
    nb = executed.execute(path, tmp_path, timeout=300)
    took = time.perf_counter() - t
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    warned = [o["text"] for o in outputs if o.get("name") == "stderr" and "Warning" in o.get("text", "")]
    assert not warned, warned  # a reader sees no library warnings
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{path.name}: {len(images)} figures shown"
    if not any(os.environ.get(k) for k in CAPPED):  # the docs show the run on the machine's own kernels
        executed.keep(nb, path)
    print(f"\n{path.name}: executed in {took:.1f} s, {len(images)} figures")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_tutorial_is_a_lesson(path):
    """Goals and time first, exercises with answers a teacher can hide (a collapsed block) last,
    public names only, lines that fit the rendered column, and every figure captioned."""
    text = path.read_text()
    assert "**You will**" in text and "**Time**" in text
    assert "## Exercises" in text and "<details><summary>Answers" in text and "</details>" in text
    assert "noqa" not in text and not re.search(r"\b(viz|mnistlab|infer)\._[a-z]", text)
    assert max(len(line) for line in text.splitlines()) <= 100
    figures = text.count("viz.shown(") + text.count("show(path,")
    captions = text.count("*Figure") + text.count("*Figures")
    assert figures >= 2 and captions >= 2
