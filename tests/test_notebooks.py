"""The tutorials (issue 25) run: each jupytext notebook under docs/tutorials is executed in a
fresh kernel, as a reader would run it, and must show its figures inline."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="jupytext is installed with the dev extras")
nbclient = pytest.importorskip("nbclient", reason="nbclient is installed with the dev extras")

NOTEBOOKS = sorted((Path(__file__).parents[1] / "docs" / "tutorials").glob("*.py"))


def test_there_are_four_tutorials():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.slow("runs a notebook in a fresh kernel")
@pytest.mark.outcome
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_and_shows_its_figures(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = jupytext.read(path)
    t = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    took = time.perf_counter() - t
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    warned = [o["text"] for o in outputs if o.get("name") == "stderr" and "Warning" in o.get("text", "")]
    assert not warned, warned  # a reader sees no library warnings
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{path.name}: {len(images)} figures shown"
    print(f"\n{path.name}: executed in {took:.1f} s, {len(images)} figures")
