"""Hyperparameter sweeps: every combination of a grid, each its own run, one comparison table.

    mnistlab sweep ae-convbn --grid filters="16,32,32|32,64,64" --grid pool7=false,true

A value list is split on '|' when it has one (for list-valued keys), else on ','.
A combination that fails is recorded as failed and the sweep carries on.
"""
from __future__ import annotations

import csv
import io
import itertools
import re
import time
from pathlib import Path

from ._io import atomic_open, write_json
from .config import build_config
from .errors import ConfigError
from .runs import runs_root


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    grid = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2,...")
        key, values = item.split("=", 1)
        parts = [v.strip() for v in values.split("|" if "|" in values else ",")]
        if not all(parts):
            raise ConfigError(f"--grid {item!r}: empty value")
        grid.append((key.strip(), parts))
    if not grid:
        raise ConfigError("a sweep needs at least one --grid key=v1,v2")
    return grid


def combinations(grid: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    keys = [k for k, _ in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]


def _slug(combo: dict[str, str]) -> str:
    return "_".join(f"{k.split('.')[-1]}-{re.sub(r'[^A-Za-z0-9.]+', '-', v)}" for k, v in combo.items())


def run_sweep(model: str, grid_items: list[str], *, flags: dict | None = None, sets: list[str] | None = None,
              out_dir: str | Path | None = None, progress=None, notice=None) -> tuple[Path, list[dict]]:
    from .data import dataset_for
    from .train import train_run

    grid = parse_grid(grid_items)
    combos = combinations(grid)
    base = build_config(model, flags=flags, sets=sets)  # fail early on a bad base config
    ds = dataset_for(base.data, notice=notice)
    out = Path(out_dir or runs_root() / f"sweep-{model}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for combo in combos:
        row = {**combo, "status": "ok", "error": ""}
        try:
            cfg = build_config(model, flags=flags, sets=[*(sets or []), *(f"{k}={v}" for k, v in combo.items())])
            run = train_run(cfg, out / _slug(combo), dataset=ds, progress=progress, notice=notice)
            s = run.summary
            row.update(test_acc=s.get("test_acc"), test_mse=s.get("test_mse"), params=s["params"],
                       train_time_s=s["train_time_s"], run=str(run.path))
        except Exception as e:  # a failed combination is a result, not the end of the sweep
            row.update(status="failed", error=str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
        rows.append(row)
    keys = [k for k, _ in grid]
    write_tables(out, model, keys, rows)
    write_json(out / "sweep.json", {"kind": "sweep", "model": model, "dataset": ds.name, "grid": dict(grid),
                                    "combinations": len(rows), "failed": sum(r["status"] != "ok" for r in rows)})
    return out, rows


def _columns(keys, rows):
    metric = [m for m in ("test_acc", "test_mse") if any(r.get(m) is not None for r in rows)]
    return [*keys, *metric, "params", "train_time_s", "status", "error"]


def write_tables(out: Path, model: str, keys: list[str], rows: list[dict]) -> None:
    cols = _columns(keys, rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    with atomic_open(out / "table.csv", "w") as f:
        f.write(buf.getvalue())

    def cell(r, c):
        v = r.get(c)
        if v is None or v == "":
            return ""
        if c == "test_acc":
            return f"{v:.2%}"
        if c == "test_mse":
            return f"{v:.5f}"
        if c == "params":
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    with atomic_open(out / "table.md", "w") as f:
        f.write(f"# Sweep of {model}\n\n" + "\n".join(lines) + "\n")
    _plot(out, model, keys, rows)


def _plot(out: Path, model: str, keys, rows) -> None:
    from .viz import _plt, save_figure

    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return
    metric = "test_acc" if ok[0].get("test_acc") is not None else "test_mse"
    plt = _plt()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 0.5 * len(ok) + 2))
    labels = [", ".join(f"{k}={r[k]}" for k in keys) for r in ok]
    a0.barh(labels, [r[metric] for r in ok], color="tab:blue")
    a0.set_xlabel(metric)
    a0.invert_yaxis()
    a1.scatter([r["params"] for r in ok], [r[metric] for r in ok])
    for lab, r in zip(labels, ok):
        a1.annotate(lab, (r["params"], r[metric]), fontsize=7)
    a1.set_xscale("log")
    a1.set_xlabel("parameters")
    a1.set_ylabel(metric)
    fig.suptitle(f"sweep of {model}")
    fig.tight_layout()
    save_figure(fig, out / "comparison.png")
