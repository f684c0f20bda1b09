"""Accuracy on generated photos of digits, per condition, for one or more classifier runs.

    python benchmarks/photos.py --run runs/cnn --run runs/cnn-robust --out benchmarks/photos

Sets come from ``mnistlab.photos`` (no MNIST in them); each condition has its own seeded set
of single digits, ``numbers`` holds 3-5 digit numbers read whole. Writes photos.md and
photos.json to --out and prints the table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mnistlab.photos import CONDITIONS, make_set
from mnistlab.reading import score
from mnistlab.runs import load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, help="classifier run folder (repeatable)")
    p.add_argument("--per-condition", type=int, default=200, help="single-digit photos per condition")
    p.add_argument("--numbers", type=int, default=200, help="photos of numbers")
    p.add_argument("--seed", type=int, default=1000, help="seed of the generated sets")
    p.add_argument("--only", nargs="*", help="conditions to run (default: all and numbers)")
    p.add_argument("--out", type=Path, help="folder for photos.md and photos.json")
    args = p.parse_args()
    runs = {Path(r).name: load_run(r) for r in args.run}
    conditions = args.only or [*CONDITIONS, "numbers"]
    table = {}
    for c in conditions:
        t0 = time.perf_counter()
        items = make_set(c, args.numbers if c == "numbers" else args.per_condition, seed=args.seed)
        table[c] = {name: score(run.model, c, items) for name, run in runs.items()}
        print(f"{c:14s} " + "  ".join(f"{n}: {r['accuracy']:.1%} (unsure {r['low_confidence']:.0%})"
                                      for n, r in table[c].items()) + f"  [{time.perf_counter() - t0:.0f} s]",
              flush=True)
    lines = ["| condition | n | " + " | ".join(runs) + " |", "|---|---|" + "---|" * len(runs)]
    for c, row in table.items():
        n = next(iter(row.values()))["n"]
        lines.append(f"| {c} | {n} | " + " | ".join(f"{r['accuracy']:.1%}" for r in row.values()) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "photos.md").write_text(md)
        models = {k: v.config.model_name for k, v in runs.items()}  # run names and models, no machine paths
        (args.out / "photos.json").write_text(json.dumps({"seed": args.seed, "models": models, "table": table},
                                                         indent=1))


if __name__ == "__main__":
    main()
