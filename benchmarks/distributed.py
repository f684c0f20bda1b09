"""Issue 13's measured bars, each against its baseline in the same run, on this machine.

    python benchmarks/distributed.py pruning      # 20-trial TPE search of cnn, with and without --prune
    python benchmarks/distributed.py ddp          # cnn: 1 process x N threads against N processes x 1 thread
    python benchmarks/distributed.py all --out benchmarks/cpu-2core/distributed.md

Nothing else should run meanwhile (two torch processes on 2 cores slow each other 5-7x).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEARCH = [
    "--search",
    "lr=0.00003:0.03:log",
    "--search",
    "model.dropout=0.0:0.7",
    "--search",
    "batch_size=32|64|128|256",
]


def mnistlab(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "mnistlab", *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"mnistlab {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0, p


def pruning(tmp: Path, trials: int, epochs: int) -> list[str]:
    rows = []
    for label, extra in (("no pruning", []), ("--prune (median)", ["--prune"])):
        out = tmp / label.split()[0].strip("-")
        wall, _ = mnistlab(
            "sweep",
            "cnn",
            *SEARCH,
            "--trials",
            str(trials),
            "--epochs",
            str(epochs),
            "--dataset",
            "mnist-sample",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        )
        table = list(csv.DictReader((out / "table.csv").open()))
        ok = [r for r in table if r["status"] == "ok"]
        epochs_run = sum(int(r["epochs"] or 0) for r in table)
        best = max(float(r["val_acc"]) for r in ok)
        best_test = max(ok, key=lambda r: float(r["val_acc"]))["test_acc"]
        rows.append((label, wall, sum(r["status"] == "pruned" for r in table), epochs_run, best, float(best_test)))
    base = rows[0][1]
    lines = [
        f"TPE search of cnn on the sample: {trials} trials of up to {epochs} epochs "
        "(lr 3e-5..3e-2 log, dropout 0..0.7, batch 32/64/128/256), one worker",
        "",
        "| search | wall s | trials pruned | epochs trained | best val acc | its test acc | time vs no pruning |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {lab} | {w:.0f} | {n} | {e} | {b:.2%} | {t:.2%} | {w / base:.2f}x |" for lab, w, n, e, b, t in rows]
    return lines


def ddp(tmp: Path, epochs: int, nproc: int) -> list[str]:
    cores = os.cpu_count() or 1
    rows = []
    for label, extra in (
        (f"1 process x {cores} threads", ["--set", f"threads={cores}"]),
        (f"{nproc} processes x {max(1, cores // nproc)} thread(s) (gloo)", ["--nproc", str(nproc)]),
    ):
        run = tmp / ("ddp" if "--nproc" in extra else "single")
        wall, _ = mnistlab(
            "train",
            "cnn",
            "--dataset",
            "mnist-sample",
            "--epochs",
            str(epochs),
            "--seed",
            "1",
            "--no-progress",
            "--run-dir",
            str(run),
            *extra,
        )
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
        steady = metrics[1:] or metrics  # the first epoch pays warm-up
        n_train = json.loads((run / "summary.json").read_text())["n_train"]
        ips = n_train * len(steady) / sum(m["train_time_s"] for m in steady)
        acc = json.loads((run / "summary.json").read_text())["test_acc"]
        rows.append((label, ips, wall, acc))
    base = rows[0][1]
    lines = [
        f"cnn on the sample (8,000 training images), {epochs} epochs, batch 128, seed 1; "
        "images/s over epochs 2.. (training steps only), wall time includes start-up and evaluation",
        "",
        "| layout | train images/s | vs 1 process | wall s | test acc |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {lab} | {ips:,.0f} | {ips / base:.2f}x | {w:.1f} | {a:.2%} |" for lab, ips, w, a in rows]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["pruning", "ddp", "all"])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4, help="epochs per trial (pruning) / training (ddp)")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--out", help="also write the tables to this markdown file")
    a = ap.parse_args()
    lines = [f"# Distributed bars ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)", ""]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MNISTLAB_RUNS"] = tmp
        if a.which in ("ddp", "all"):
            lines += ddp(Path(tmp), a.epochs, a.nproc) + [""]
            print("\n".join(lines), flush=True)
        if a.which in ("pruning", "all"):
            more = pruning(Path(tmp), a.trials, a.epochs)
            print("\n".join(more), flush=True)
            lines += more
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
