"""How classifier runs read generated photos of digits, per condition: per-digit and exact
accuracy, how many misreadings carry ``low_confidence`` (and how many right readings do), and
the expected calibration error with and without the run's fitted temperature.

    python benchmarks/photos.py --run runs/cnn --run runs/cnn-robust --out benchmarks/photos

Sets come from ``mnistlab.reading.photos`` (no MNIST in them, and none of their fonts or of
scikit-learn's digits in any training set); each condition has its own seeded set of single
digits, ``numbers`` and ``numbers-<condition>`` hold 3-5 digit numbers read whole. Writes
photos.md and photos.json to --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from mnistlab.calibrate import ece
from mnistlab.reading.photos import CONDITIONS, NUMBER_SETS, make_set
from mnistlab.reading.reader import LOW_CONFIDENCE, score
from mnistlab.runs import load_run


def uncalibrated_ece(records, temperature: float) -> float:
    """The ECE the same readings would have at temperature 1: softmax(T log p) = softmax(z)."""
    if not records:
        return 0.0
    p = torch.tensor([r for r, _ in records], dtype=torch.float64).clamp_min(1e-300)
    return ece(torch.softmax(temperature * p.log(), 1), torch.tensor([t for _, t in records]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, help="classifier run folder (repeatable)")
    p.add_argument("--per-condition", type=int, default=200, help="single-digit photos per condition")
    p.add_argument("--numbers", type=int, default=200, help="photos of numbers per number set")
    p.add_argument("--seed", type=int, default=1000, help="seed of the generated sets")
    p.add_argument("--only", nargs="*", help="conditions to run (default: all and every number set)")
    p.add_argument("--out", type=Path, help="folder for photos.md and photos.json")
    p.add_argument(
        "--render",
        choices=["grey", "mask"],
        default="grey",
        help="mask: the 0/1 rendering of before issue 23, for comparison",
    )
    p.add_argument("--gamma", type=float, help="contrast of the grey rendering (default: the library's)")
    args = p.parse_args()
    import numpy as np

    from mnistlab.reading import images

    if args.render == "mask":
        images.grey_ink = lambda mask, darkness: mask.astype(np.float32)
    if args.gamma is not None:
        images.GREY_GAMMA = args.gamma
    runs = {Path(r).name: load_run(r) for r in args.run}
    conditions = args.only or [*CONDITIONS, *NUMBER_SETS]
    table: dict = {}
    pooled: dict[str, list] = {}  # every digit read in place, per run: for the threshold sweep
    for c in conditions:
        t0 = time.perf_counter()
        items = make_set(c, args.numbers if c.startswith("numbers") else args.per_condition, seed=args.seed)
        table[c] = {}
        for name, run in runs.items():
            r = score(run.model, c, items)
            t = float(getattr(run.model, "temperature", 1.0))
            records = r.pop("records")
            r["ece_uncalibrated"] = uncalibrated_ece(records, t)
            pooled.setdefault(name, []).extend(records)
            table[c][name] = r
        print(
            f"{c:16s} "
            + "  ".join(
                f"{n}: {r['digit_accuracy']:.1%} digits, {r['accuracy']:.1%} exact, "
                f"flagged {r['wrong_flagged']:.0%}/{r['right_flagged']:.0%}"
                for n, r in table[c].items()
            )
            + f"  [{time.perf_counter() - t0:.0f} s]",
            flush=True,
        )
    sweep = {name: threshold_sweep(recs) for name, recs in pooled.items()}
    md = to_markdown(table, runs) + sweep_markdown(sweep)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "photos.md").write_text(md)
        models = {
            k: {"model": v.config.model_name, "temperature": getattr(v.model, "temperature", 1.0)}
            for k, v in runs.items()
        }  # run names and models, no machine paths
        (args.out / "photos.json").write_text(
            json.dumps(
                {
                    "seed": args.seed,
                    "low_confidence": LOW_CONFIDENCE,
                    "models": models,
                    "table": table,
                    "threshold_sweep": sweep,
                },
                indent=1,
            )
        )


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)


def threshold_sweep(records) -> list[dict]:
    """For each candidate threshold: the shares of misread and of right digits it would flag."""
    if not records:
        return []
    p = torch.tensor([r for r, _ in records], dtype=torch.float64)
    truth = torch.tensor([t for _, t in records])
    conf, pred = p.max(1)
    ok = pred == truth
    return [
        {
            "threshold": th,
            "wrong_flagged": float((conf[~ok] < th).double().mean()) if (~ok).any() else 0.0,
            "right_flagged": float((conf[ok] < th).double().mean()),
            "n_wrong": int((~ok).sum()),
            "n_right": int(ok.sum()),
        }
        for th in THRESHOLDS
    ]


def sweep_markdown(sweep: dict) -> str:
    lines = [
        "",
        "Flagging threshold, all conditions pooled (digits read in place): share of misread / of right digits below it",
        "",
        "| run | " + " | ".join(f"{t:.2f}" for t in THRESHOLDS) + " |",
        "|---|" + "---|" * len(THRESHOLDS),
    ]
    for name, rows in sweep.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{r['wrong_flagged']:.0%} / {r['right_flagged']:.1%}" for r in rows) + " |"
        )
    return "\n".join(lines) + "\n"


def to_markdown(table: dict, runs: dict) -> str:
    names = list(runs)
    head = " | ".join(
        f"{n} digits | {n} exact | {n} wrong flagged | {n} right flagged | {n} ECE (T=1 → fitted)" for n in names
    )
    lines = [f"| condition | n | {head} |", "|---|---|" + "---|" * (5 * len(names))]
    for c, row in table.items():
        n = next(iter(row.values()))["n"]
        cells = []
        for r in row.values():
            exact = f"{r['accuracy']:.1%}" if c.startswith("numbers") else "-"
            flagged = f"{r['wrong_flagged']:.0%} of {r['n_wrong']}" if r["n_wrong"] else "-"
            cells += [
                f"{r['digit_accuracy']:.1%}",
                exact,
                flagged,
                f"{r['right_flagged']:.1%}",
                f"{r['ece_uncalibrated']:.3f} → {r['ece']:.3f}",
            ]
        lines.append(f"| {c} | {n} | " + " | ".join(cells) + " |")
    wrong = {n: sum(row[n]["n_wrong"] for row in table.values()) for n in names}
    flagged = {n: sum(row[n]["wrong_flagged"] * row[n]["n_wrong"] for row in table.values()) for n in names}
    lines += [
        "",
        "All conditions together: "
        + "; ".join(f"{n}: {flagged[n] / max(1, wrong[n]):.0%} of {wrong[n]} misread digits flagged" for n in names)
        + f" (low_confidence: below {LOW_CONFIDENCE:.0%} after the temperature).",
    ]
    assert all(math.isfinite(v) for v in flagged.values())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
