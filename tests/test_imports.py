"""The package's import graph: no circle (every import counts, function-local ones too: a local
import only hides a circle from the interpreter, not from the reader), and every import goes
down the floors docs/layout.py declares."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "docs"))
import layout  # noqa: E402


def test_the_checker_finds_a_circle():
    assert layout.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layout.cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_mnistlab():
    graph = layout.import_graph()
    assert "mnistlab.models" in graph["mnistlab.config"]  # the graph is really read
    assert layout.cycles(graph) == []


def test_every_import_goes_down_a_floor():
    rooms = layout.room_graph(layout.import_graph())
    floors = layout.floor_of()
    assert set(rooms) == set(floors), set(rooms) ^ set(floors)  # every room has its floor, and no more
    up = [(a, b) for a, targets in rooms.items() for b in targets if floors[b] >= floors[a]]
    assert up == []


def test_the_registry_is_a_leaf():
    graph = layout.import_graph()
    assert graph["mnistlab.models._registry"] <= {"mnistlab.checks", "mnistlab.errors"}
    assert graph["mnistlab.checks"] <= {"mnistlab.errors", "mnistlab.names"}
    assert not any(m.startswith("mnistlab.train") for m in graph["mnistlab.viz"])
