"""Quality bars on the bundled sample's 2,000 held-out digits, over several seeds.

    python benchmarks/quality.py                      # all bars, seeds 0 1 2 (about 25 min on 2 CPU cores)
    python benchmarks/quality.py --models ae-dense --seeds 0 1
    python benchmarks/quality.py --out benchmarks/quality-cpu.md

Each model trains with its preset (defaults: 20 epochs, 20% validation for autoencoders);
the encoder classifier trains on top of each seed's `ae-convbn` run. Prints one row per
model: mean ± sd of the metric, worst seed, the bar, and whether every seed met it.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mnistlab.config import build_config
from mnistlab.data import load_dataset
from mnistlab.train import train_run

# model -> (metric, bar, lower is better)
BARS = {
    "cnn": ("test_acc", 0.96, False),
    "ae-convtranspose": ("test_mse", 0.015, True),
    "ae-upsample": ("test_mse", 0.015, True),
    "ae-dense": ("test_mse", 0.020, True),
    "ae-code3d": ("test_mse", 0.040, True),
    "ae-code4x4": ("test_mse", None, True),
    "ae-convbn": ("test_mse", None, True),
    "encoder-classifier": ("test_acc", 0.95, False),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(BARS), choices=list(BARS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = ap.parse_args()
    ds = load_dataset("mnist-sample")
    results: dict[str, list[float]] = {}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for model in args.models:
                sets = [f"seed={seed}", "dataset=mnist-sample"]
                if model == "encoder-classifier":
                    enc = Path(tmp) / f"ae-convbn-{seed}"
                    if not enc.exists():
                        train_run(build_config("ae-convbn", sets=sets), enc, dataset=ds, progress=False)
                    sets.append(f"encoder={enc}")
                path = Path(tmp) / f"{model}-{seed}"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                run = train_run(build_config(model, sets=sets), path, dataset=ds, progress=False)
                metric = BARS[model][0]
                results.setdefault(model, []).append(run.summary[metric])
                times.setdefault(model, []).append(time.perf_counter() - t0)
                print(f"{model} seed {seed}: {metric} {run.summary[metric]:.4f} ({times[model][-1]:.0f} s)", flush=True)
    lines = [f"Quality on mnist-sample's 2,000 held-out digits; seeds {args.seeds}; "
             f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, CPU.", "",
             "| model | metric | mean ± sd | worst | bar | met | train s (mean) |", "|---|---|---|---|---|---|---|"]
    for model, vals in results.items():
        metric, bar, lower = BARS[model]
        worst = max(vals) if lower else min(vals)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        fmt = (lambda v: f"{v:.4f}") if metric == "test_mse" else (lambda v: f"{v:.2%}")
        met = "-" if bar is None else ("yes" if (worst < bar if lower else worst >= bar) else "NO")
        bar_s = "-" if bar is None else (f"< {bar}" if lower else f">= {bar:.0%}")
        lines.append(f"| {model} | {metric} | {fmt(statistics.mean(vals))} ± {fmt(sd)} | {fmt(worst)} | {bar_s} "
                     f"| {met} | {statistics.mean(times[model]):.0f} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
