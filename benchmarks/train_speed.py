"""Training images/s and 1-epoch test accuracy of `cnn-fast` variants, measured in one run.

    python benchmarks/train_speed.py --dataset fashion-mnist --repeats 2 \
        --variant base= --variant bf16=amp=bf16 --variant b512=batch_size=512,lr=0.03

Each variant is a name and --set overrides (comma-separated) of the `cnn-fast` preset. The
variants alternate `repeats` times so that a noisy machine slows each alike; the table gives
the median images/s of training alone (fit, no evaluation), the ratio to the first variant,
and the test accuracy after one epoch (mean over repeats, which use seeds 0, 1, ...).
Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnistlab.config import build_config
from mnistlab.data.sources import load_dataset
from mnistlab.infer import evaluate
from mnistlab.models._registry import create_model
from mnistlab.train.loop import fit


def one(model: str, sets: list[str], ds, seed: int, epochs: int) -> tuple[float, float]:
    cfg = build_config(model, sets=[*sets, f"seed={seed}", f"epochs={epochs}"])
    torch.manual_seed(seed)
    net = create_model(model, cfg.model)
    t0 = time.perf_counter()
    fit(net, ds.train, {}, cfg.train, device=torch.device("cpu"), progress=False)
    seconds = time.perf_counter() - t0
    return len(ds.train) * epochs / seconds, evaluate(net, ds.test)["acc"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="cnn-fast")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=V,KEY=V")
    args = p.parse_args()
    variants = [(v.split("=", 1)[0], [s for s in v.split("=", 1)[1].split(",") if s]) for v in args.variant]
    variants = variants or [("base", [])]
    ds = load_dataset(args.dataset)
    one(args.model, variants[0][1] + ["limit_batches=20"], ds, 0, 1)  # warm-up: first-call costs out of the table
    speed = {name: [] for name, _ in variants}
    acc = {name: [] for name, _ in variants}
    for r in range(args.repeats):
        for name, sets in variants:
            s, a = one(args.model, sets, ds, r, args.epochs)
            speed[name].append(s)
            acc[name].append(a)
    base = statistics.median(speed[variants[0][0]])
    print(
        f"{args.model} on {args.dataset}, {args.epochs} epoch(s), {torch.get_num_threads()} threads, "
        f"median of {args.repeats} alternating runs\n"
    )
    print("| variant | --set | train images/s | vs first | test acc |")
    print("|---|---|---|---|---|")
    for name, sets in variants:
        m = statistics.median(speed[name])
        print(f"| {name} | {' '.join(sets) or '-'} | {m:,.0f} | {m / base:.2f}x | {statistics.mean(acc[name]):.2%} |")


if __name__ == "__main__":
    main()
