"""The package's layout, read from its code: the import graph (every import, function-local ones
too), the rooms (a top-level module, or a package as one room) and the floors they stand on.
``FLOORS`` is the intended layering, lowest first: a room imports only from rooms on lower
floors (tests/test_imports.py holds the code to it); ``draw`` pictures it for the docs."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mnistlab"

FLOORS: list[tuple[str, ...]] = [
    ("errors", "names", "_io", "calibrate"),  # plumbing with no mnistlab import
    ("checks", "runtime", "data"),
    ("models",),
    ("config", "distributed"),
    ("runs", "infer", "summaries"),
    ("viz", "export", "reading", "attribution", "interactive"),
    ("train",),
    ("web",),
    ("studies",),
    ("cli",),
    ("__main__",),
]


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    names = {}
    for path in package.rglob("*.py"):
        parts = ("mnistlab", *path.relative_to(package).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _resolve(target: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the mnistlab modules it imports (a package's own __init__ and a module's parent
    package are not edges)."""
    mods = modules(package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package_name
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
                targets = [mod, *(f"{mod}.{alias.name}" for alias in node.names)]
            else:
                continue
            for t in targets:
                hit = _resolve(t, mods)
                if hit and hit != name and hit != "mnistlab" and not name.startswith(hit + "."):
                    graph[name].add(hit)
    return graph


def room(module: str) -> str:
    """The room a module is in: its top-level module, or the package it belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mnistlab"


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {room(m): set() for m in graph if m != "mnistlab"}
    for a, targets in graph.items():
        for b in targets:
            if room(a) != room(b) and room(a) in out:
                out[room(a)].add(room(b))
    return out


def floor_of() -> dict[str, int]:
    return {r: i for i, rooms in enumerate(FLOORS) for r in rooms}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def draw(path: Path) -> Path:
    """The rooms on their floors (lowest at the bottom), packages in bold, each import an arrow
    going down; written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rooms = room_graph(import_graph())
    floors = floor_of()
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    where = {}
    for f, names in enumerate(FLOORS):
        for i, r in enumerate(names):
            where[r] = ((i + 1) / (len(names) + 1), f)
    fig, ax = plt.subplots(figsize=(11, 8))
    for a, targets in rooms.items():
        for b in targets:
            (x0, y0), (x1, y1) = where[a], where[b]
            ax.annotate(
                "",
                xy=(x1, y1 + 0.18),
                xytext=(x0, y0 - 0.18),
                arrowprops=dict(arrowstyle="-|>", color="tab:blue", alpha=0.25, lw=0.8),
            )
    for r, (x, y) in where.items():
        ax.text(
            x,
            y,
            r + ("/" if r in packages else ""),
            ha="center",
            va="center",
            fontsize=10,
            fontweight="bold" if r in packages else "normal",
            bbox=dict(boxstyle="round,pad=0.3", fc="#eef3fb" if r in packages else "white", ec="0.6"),
        )
    ax.set_yticks(range(len(FLOORS)), [f"floor {i}" for i in range(len(FLOORS))])
    ax.set_xticks([])
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(FLOORS) - 0.4)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ups = sum(floors[b] >= floors[a] for a, t in rooms.items() for b in t)
    ax.set_title(
        f"mnistlab: {len(rooms)} rooms ({len(packages)} packages, bold) on {len(FLOORS)} floors; "
        f"{len(cycles(rooms))} cycles, {ups} imports up or across",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
