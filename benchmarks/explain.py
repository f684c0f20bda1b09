"""Faithfulness of every attribution method on trained classifiers (issue 24's table).

    python benchmarks/explain.py --run runs/cnn --run runs/cnn-robust --n 200 --out benchmarks/explain

For each run and method: deletion and insertion of ink against 5 random ink-first orders
(fraction of digits where the method's order wins), the randomisation check (median Spearman
over ink pixels, trained vs re-initialised weights, signed maps and |map|), and the seconds it
took. Writes explain.json, explain.md and one deletion-curve picture per run. With --api:
the time POST /api/explain takes for one digit (api.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mnistlab.attribution.faithfulness import deletion, randomization
from mnistlab.attribution.maps import METHODS
from mnistlab.data.sources import dataset_for
from mnistlab.runs import load_run
from mnistlab.studies.report import EXPLAIN_DELETION, EXPLAIN_SPEARMAN

TARGETS = {"deletion": EXPLAIN_DELETION, "randomization": EXPLAIN_SPEARMAN}


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a fraction p of n digits (what another 200 digits could give)."""
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="a classifier's run folder (repeat)")
    ap.add_argument("--n", type=int, default=200, help="held-out digits (the first N of the test split)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="benchmarks/explain")
    ap.add_argument(
        "--api",
        action="store_true",
        help="instead: time POST /api/explain for one digit per method (median of 20, after 3 warm-ups)",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.api:
        return _api(args.run, args.methods.split(","), out)
    rows = []
    for run_dir in args.run:
        run = load_run(run_dir)
        ds = dataset_for(run.config.data, notice=lambda m: None)
        x = ds.test.images[: args.n, None].float() / 255
        curves = {}
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            d = deletion(run.model, x, method)
            t1 = time.perf_counter()
            r = randomization(run.model, x, method)
            t2 = time.perf_counter()
            curves[method] = d.curve
            curves["random"] = d.curve_random
            row = {
                "model": run.config.model_name,
                "run": Path(run_dir).name,
                "dataset": run.config.data.dataset,
                "test_acc": run.summary.get("test_acc"),
                **d.to_dict(),
                **r.to_dict(),
                "seconds_deletion": round(t1 - t0, 1),
                "seconds_randomization": round(t2 - t1, 1),
            }
            row.pop("eval")
            rows.append(row)
            print(
                f"{row['model']:10s} {method:10s} deletion {d.beats_random:6.1%} insertion "
                f"{d.insertion_beats_random:6.1%} spearman {r.median:+.3f} |map| {r.abs_median:+.3f} "
                f"({t1 - t0:.0f} s + {t2 - t1:.0f} s)",
                flush=True,
            )
        _picture(curves, run.config.model_name, len(x), out / f"deletion-{run.config.model_name}.png")
    (out / "explain.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "explain.md").write_text(_table(rows))


def _api(run_dirs: list[str], methods: list[str], out: Path) -> None:
    """POST /api/explain through the app in this process (Starlette's test client: the
    handler, JSON and threads, no network), one held-out digit, each method and scrambled."""
    import statistics

    import torch
    from starlette.testclient import TestClient

    from mnistlab.web.app import create_app

    rows = []
    for run_dir in run_dirs:
        run = load_run(run_dir)
        client = TestClient(create_app([Path(run_dir)]))
        ds = dataset_for(run.config.data, notice=lambda m: None)
        body = json.dumps({"pixels": ds.test.images[0].tolist()})
        for method in methods:
            for scrambled in ("0", "1"):
                url = f"/api/explain?method={method}&scrambled={scrambled}"
                times = []
                for _ in range(23):
                    t0 = time.perf_counter()
                    r = client.post(url, content=body, headers={"content-type": "application/json"})
                    times.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                ms = statistics.median(times[3:]) * 1000
                rows.append(
                    {
                        "model": run.config.model_name,
                        "method": method,
                        "scrambled": scrambled == "1",
                        "median_ms": round(ms, 1),
                        "max_ms": round(max(times[3:]) * 1000, 1),
                        "threads": torch.get_num_threads(),
                    }
                )
                print(f"{run.config.model_name:10s} {method:10s} scrambled={scrambled} {ms:7.1f} ms", flush=True)
    (out / "api.json").write_text(json.dumps(rows, indent=1) + "\n")


def _picture(curves: dict, model: str, n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for name, c in curves.items():
        ax.plot(
            np.linspace(0, 1, len(c)),
            c,
            marker="o",
            ms=3,
            label=name,
            **({"color": "black", "ls": "--"} if name == "random" else {}),
        )
    ax.set_xlabel("fraction of the ink erased (most attributed first)")
    ax.set_ylabel("probability of the predicted class")
    ax.set_title(f"{model}: deletion curves, mean of {n} held-out digits", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _mark(value: float, method: str, kind: str) -> str:
    bar = TARGETS[kind].get(method)
    if bar is None:
        return ""
    ok = value >= bar if kind == "deletion" else value < bar
    return f" ({'meets' if ok else 'misses'} {'>=' if kind == 'deletion' else '<'} {bar:g})"


def _table(rows: list[dict]) -> str:
    lines = [
        "| model | method | deletion beats random [95% interval] | insertion beats random | "
        "deletion area (random) | Spearman, randomised | the same on abs(map) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = wilson(r["deletion_beats_random"], r["n"])
        lines.append(
            f"| {r['model']} | {r['method']} | {r['deletion_beats_random']:.1%} [{lo:.1%}, {hi:.1%}]"
            f"{_mark(r['deletion_beats_random'], r['method'], 'deletion')} | {r['insertion_beats_random']:.1%} | "
            f"{r['deletion_auc']:.3f} ({r['deletion_auc_random']:.3f}) | {r['median_spearman']:+.3f}"
            f"{_mark(r['median_spearman'], r['method'], 'randomization')} | {r['median_spearman_abs']:+.3f} | "
            f"{r['seconds_deletion'] + r['seconds_randomization']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
