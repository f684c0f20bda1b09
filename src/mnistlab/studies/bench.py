"""``mnistlab bench``: speed figures, each against a baseline measured in the same run.

1. Pipeline ratio: the same ``cnn``, data, epochs and batch size through mnistlab's path
   (whole uint8 set on the device, batches by index) and through the conventional
   tutorial pipeline (a ``Dataset`` making one PIL image and one normalised tensor per
   item, a ``DataLoader``, a loss ``.item()`` per step). Images/s of each, and the ratio
   (median of alternating runs).
2. Time to accuracy: training seconds (evaluation excluded) for ``cnn-fast`` and ``cnn``
   to reach a target held-out accuracy, mean ± sd over seeds.
3. Autoencoder throughput: images/s of ``ae-convtranspose`` training.
4. Inference: images/s of batched prediction; single-image latency p50/p95.
5. Data: seconds to load each available dataset from its files and from the cache.
6. Memory: peak resident memory of a ``train cnn`` run (a child process) on fashion-mnist.
7. Whole process: wall time, test accuracy and peak memory of whole commands, start-up
   included: ``train cnn-fast --epochs 1``, the named 92% preset, and the conventional
   script (``python -m mnistlab.studies.baseline``) doing the same epochs; the ratio of the two.
8. Step (CUDA only): seconds per epoch of each classifier's training step run eagerly and
   replayed as a captured CUDA graph (``train.graph``), the second epoch of each (the first
   holds the warm-up and the capture), with the precision ``amp=auto`` chose.

Absolute times depend on the machine: quote ratios on CPUs, absolute times on GPUs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import runtime
from .._io import atomic_open, make_folder, write_json
from ..config import TrainConfig, build_config
from ..data.sources import DATASETS, cache_root, load_dataset
from ..data.splits import Split
from ..errors import DataError
from ..infer import predict
from ..models import create_model
from ..train.loop import fit

TARGETS = {"mnist-sample": 0.97, "fashion-mnist": 0.90, "mnist": 0.99}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- 1. the conventional pipeline


class TutorialDataset(torch.utils.data.Dataset):
    """What torchvision's MNIST + ToTensor + Normalize do, one item at a time."""

    def __init__(self, split: Split):
        self.images = split.images.numpy()
        self.labels = split.labels.numpy()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])  # torchvision's MNIST hands out PIL images
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).unsqueeze(0)  # ToTensor
        x = (x - 0.1307) / 0.3081  # Normalize
        return x, int(self.labels[i])


def tutorial_loader(split: Split, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    """shuffle=True as tutorials write it, with the sampler seeded so that its order is
    the permutation mnistlab's path draws for the same seed."""
    ds = TutorialDataset(split)
    sampler = torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler)


def tutorial_train(model, split: Split, cfg: TrainConfig, device) -> float:
    """Train like pytorch/examples' mnist: DataLoader, per-step .item(); returns seconds.

    The model standardises inside, so the already-normalised batch is mapped back to
    [0, 1] first (one cheap op) to keep both paths' models identical."""
    loader = tutorial_loader(split, cfg.batch_size, cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.to(device).train()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        for step, (x, y) in enumerate(loader):
            if cfg.limit_batches and step >= cfg.limit_batches:
                break
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(x * 0.3081 + 0.1307), y)
            loss.backward()
            opt.step()
            loss.item()  # the tutorial logs the loss: a host sync every step
    _sync(device)
    return time.perf_counter() - t0


def pipeline_ratio(ds, device, epochs: int, batch_size: int, limit_batches: int = 0, repeats: int = 1) -> dict:
    """Both paths train a fresh ``cnn`` from the same initial weights, alternating
    ``repeats`` times so that a noisy machine slows both alike; medians are reported."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, limit_batches=limit_batches)
    n = (min(len(ds.train), limit_batches * batch_size) if limit_batches else len(ds.train)) * epochs
    t_tut, t_ours = [], []
    for _ in range(repeats):
        torch.manual_seed(0)
        t_tut.append(tutorial_train(create_model("cnn"), ds.train, cfg, device))
        torch.manual_seed(0)
        model = create_model("cnn")
        _sync(device)
        t0 = time.perf_counter()
        fit(model, ds.train, {}, cfg, device=device, progress=False)
        _sync(device)
        t_ours.append(time.perf_counter() - t0)
    return {
        "images": n,
        "repeats": repeats,
        "mnistlab_img_s": n / statistics.median(t_ours),
        "tutorial_img_s": n / statistics.median(t_tut),
        "ratio": statistics.median(a / b for a, b in zip(t_tut, t_ours)),
        "ratios": [round(a / b, 3) for a, b in zip(t_tut, t_ours)],
    }


# ---------------------------------------------------------------- 2. time to accuracy


def time_to_accuracy(model_name: str, ds, device, target: float, seeds, max_epochs: int) -> dict:
    times, reached = [], []
    for seed in seeds:
        cfg = build_config(model_name, sets=[f"seed={seed}"]).train
        epochs = max_epochs if model_name == "cnn" else min(max(cfg.epochs, 1), max_epochs)
        cfg = dataclasses.replace(cfg, epochs=epochs)
        torch.manual_seed(seed)
        model = create_model(model_name).to(device)
        hit = {}

        def on_epoch(row, opt, hit=hit):
            hit["train_s"] = hit.get("train_s", 0.0) + row["train_time_s"]
            if row["test_acc"] >= target:
                hit["t"] = hit["train_s"]
                return True  # reached: stop training
            return False

        fit(model, ds.train, {"test": ds.test}, cfg, device=device, on_epoch=on_epoch, progress=False)
        times.append(hit.get("t", float("nan")))
        reached.append("t" in hit)
    ok = [t for t in times if t == t]
    return {
        "model": model_name,
        "target": target,
        "seeds": len(seeds),
        "reached": sum(reached),
        "mean_s": statistics.mean(ok) if ok else None,
        "sd_s": statistics.stdev(ok) if len(ok) > 1 else 0.0,
    }


# ---------------------------------------------------------------- 3-4. throughput, inference


def ae_throughput(ds, device, epochs: int = 1, limit_batches: int = 0) -> dict:
    cfg = build_config("ae-convtranspose", sets=[f"epochs={epochs}", f"limit_batches={limit_batches}"]).train
    model = create_model("ae-convtranspose")
    n = (min(len(ds.train), limit_batches * cfg.batch_size) if limit_batches else len(ds.train)) * epochs
    _sync(device)
    t0 = time.perf_counter()
    fit(model, ds.train, {}, cfg, device=device, progress=False)
    _sync(device)
    return {"images": n, "batch_size": cfg.batch_size, "img_s": n / (time.perf_counter() - t0)}


def inference(ds, device, single: int = 200) -> dict:
    model = create_model("cnn").to(device).eval()
    images = ds.test.images
    predict(model, images[:1000])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    predict(model, images)
    _sync(device)
    batched = len(images) / (time.perf_counter() - t0)
    lat = []
    for i in range(single):
        t = time.perf_counter()
        predict(model, images[i : i + 1])
        _sync(device)
        lat.append((time.perf_counter() - t) * 1000)
    return {
        "batched_img_s": batched,
        "single_p50_ms": float(np.percentile(lat, 50)),
        "single_p95_ms": float(np.percentile(lat, 95)),
    }


# ---------------------------------------------------------------- 5-6. data, memory


def data_loading(names) -> list[dict]:
    rows = []
    for name in names:
        arrays = cache_root() / name / "arrays.npz"
        if arrays.exists():
            arrays.unlink()  # measure the files first, then the cache this load writes
        t0 = time.perf_counter()
        try:
            ds = load_dataset(name, notice=lambda m: None)
        except DataError:
            continue
        t_files = time.perf_counter() - t0
        row = {"dataset": name, "source": ds.source, "images": len(ds.train) + len(ds.test), "files_s": t_files}
        if arrays.exists():
            t0 = time.perf_counter()
            load_dataset(name)
            row["cache_s"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def peak_memory(dataset: str, epochs: int, limit_batches: int = 0) -> dict:
    """Peak RSS of `mnistlab train cnn` in a child process (timed_process)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "mnistlab",
            "train",
            "cnn",
            "--dataset",
            dataset,
            "--epochs",
            str(epochs),
            "--run-dir",
            str(Path(tmp) / "r"),
            "--no-progress",
        ]
        if limit_batches:
            cmd += ["--set", f"limit_batches={limit_batches}"]
        r = timed_process(cmd)
    if r["rc"] != 0:
        return {"dataset": dataset, "error": r["stderr"].strip().splitlines()[-1] if r["stderr"] else "failed"}
    return {"dataset": dataset, "epochs": epochs, "peak_rss_mb": r["peak_rss_mb"]}


# ---------------------------------------------------------------- 7. whole processes

# The preset the README names for Fashion-MNIST 92% in under a minute.
PRESET_92 = ["train", "convnet-fast"]


# Started from a small Python of its own: on Linux a child's peak-memory figure starts at
# the RSS of the process it was forked from (exec keeps the forking process's high-water
# mark), so a child of the bench itself (datasets and models loaded) would read ~630 MB
# before doing anything. The launcher times the command and reports its own child's rusage.
_LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
scale = 1024 * 1024 if sys.platform == "darwin" else 1024
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": time.perf_counter() - t0, "rc": os.waitstatus_to_exitcode(status),
               "peak_rss_mb": usage.ru_maxrss / scale}, f)
"""


def timed_process(cmd: list[str], cwd: str | None = None) -> dict:
    """Wall seconds, exit status, output and peak resident memory of one child process
    (its own rusage, taken by a small launcher; see _LAUNCHER)."""
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        if hasattr(os, "wait4"):
            facts = Path(tmp) / "facts.json"
            proc = subprocess.run(
                [sys.executable, "-c", _LAUNCHER, str(facts), *cmd], stdout=out, stderr=err, text=True, cwd=cwd
            )
            r = (
                json.loads(facts.read_text())
                if facts.is_file()
                else {"wall_s": 0.0, "rc": proc.returncode, "peak_rss_mb": None}
            )
        else:  # no per-child rusage here
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, stdout=out, stderr=err, text=True, cwd=cwd)
            r = {"wall_s": time.perf_counter() - t0, "rc": proc.returncode, "peak_rss_mb": None}
        out.seek(0)
        err.seek(0)
        return {**r, "stdout": out.read(), "stderr": err.read()}


def whole_process(dataset: str, quick: bool = False) -> dict:
    """The commands a student types, timed as whole processes one after another."""
    limit = ["--set", "limit_batches=5"] if quick else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ours = [("cnn-fast, 1 epoch", ["train", "cnn-fast", "--epochs", "1"]), ("92% preset", PRESET_92)]
        for k, (what, args) in enumerate(ours):
            run = Path(tmp) / f"run{k}"
            shown = ["mnistlab", *args, "--dataset", dataset, *limit]
            r = timed_process([sys.executable, "-m", *shown, "--no-progress", "--run-dir", str(run)])
            summary = run / "summary.json"
            acc = json.loads(summary.read_text())["test_acc"] if r["rc"] == 0 and summary.is_file() else None
            rows.append({"what": what, "command": " ".join(shown), **_outcome(r, acc)})
        tut = ["--dataset", dataset, "--epochs", "1", "--quiet", *(["--limit-batches", "5"] if quick else [])]
        r = timed_process([sys.executable, "-m", "mnistlab.studies.baseline", *tut])
        acc = None
        if r["rc"] == 0 and r["stdout"].startswith("test_acc"):
            acc = float(r["stdout"].split()[1])
        rows.append(
            {
                "what": "conventional script, 1 epoch",
                "command": "python -m mnistlab.studies.baseline " + " ".join(tut),
                **_outcome(r, acc),
            }
        )
    ok = rows[0]["wall_s"] and rows[2]["wall_s"]
    return {"dataset": dataset, "rows": rows, "ratio": rows[2]["wall_s"] / rows[0]["wall_s"] if ok else None}


# ---------------------------------------------------------------- 8. eager vs captured step

STEP_MODELS = ("cnn", "cnn-fast", "convnet-fast", "cnn-robust")


def step_modes(ds, device, models=STEP_MODELS, limit_batches: int = 0) -> list[dict]:
    """Per model: the second epoch's training seconds with ``graph=off`` and ``graph=on`` (CUDA),
    each with the step kind and precision that ran (a capture that fell back says eager)."""
    rows = []
    for name in models:
        row = {"model": name, "images": len(ds.train)}
        for graph in ("off", "on"):
            cfg = build_config(name, sets=["epochs=2", f"graph={graph}", f"limit_batches={limit_batches}"])
            runtime.seed_everything(0)
            model = create_model(name, cfg.model)
            ran = []
            hist = fit(
                model,
                ds.train,
                {},
                cfg.train,
                device=device,
                progress=False,
                on_epoch=lambda r, state, ran=ran: ran.append(state.plan),
            )
            row[f"{graph}_s"] = hist[-1]["train_time_s"]
            row[f"{graph}_step"], row[f"{graph}_amp"] = ran[-1].graph, ran[-1].amp
        row["speedup"] = row["off_s"] / row["on_s"] if row["on_s"] else None
        rows.append(row)
    return rows


def _outcome(r: dict, acc) -> dict:
    failed = r["rc"] != 0
    return {
        "wall_s": None if failed else r["wall_s"],
        "test_acc": acc,
        "peak_rss_mb": r["peak_rss_mb"],
        "error": (r["stderr"].strip().splitlines() or ["failed"])[-1] if failed else None,
    }


# ---------------------------------------------------------------- the whole benchmark


def run_bench(
    quick: bool = False, device: str = "auto", seeds: int = 3, out: Path | None = None, log=lambda m: None
) -> dict:
    """Every section in turn; with `out`, bench.json and bench.md are rewritten after each one, so
    a section that fails keeps what came before it."""
    dev = runtime.resolve_device(device)
    runtime.seed_everything(0)
    sample = load_dataset("mnist-sample")
    available = [n for n in ("mnist-sample", "fashion-mnist", "mnist") if _available(n)]
    res: dict = {
        "machine": {
            "platform": platform.platform(),
            **runtime.hardware(dev),
            "threads": torch.get_num_threads(),
            "device": str(dev),
            "torch": torch.__version__,
            "quick": quick,
        }
    }
    mem_ds = "fashion-mnist" if "fashion-mnist" in available and not quick else "mnist-sample"

    def tta():
        rows = []
        for name in ["mnist-sample"] if quick else available:
            ds = sample if name == "mnist-sample" else load_dataset(name)
            for model in ("cnn-fast", "cnn"):
                row = time_to_accuracy(
                    model, ds, dev, TARGETS[name], range(1 if quick else seeds), max_epochs=1 if quick else 12
                )
                rows.append({"dataset": name, **row})
        return rows

    sections = [
        (
            "pipeline",
            "pipeline ratio",
            lambda: {
                "dataset": "mnist-sample",
                "model": "cnn",
                "batch_size": 128,
                **pipeline_ratio(
                    sample, dev, epochs=1, batch_size=128, limit_batches=10 if quick else 0, repeats=1 if quick else 3
                ),
            },
        ),
        ("time_to_accuracy", "time to accuracy", tta),
        (
            "ae_throughput",
            "autoencoder throughput",
            lambda: {
                "dataset": "mnist-sample",
                "model": "ae-convtranspose",
                **ae_throughput(sample, dev, limit_batches=20 if quick else 0),
            },
        ),
        (
            "inference",
            "inference",
            lambda: {"dataset": "mnist-sample", "model": "cnn", **inference(sample, dev, 50 if quick else 200)},
        ),
        (
            "data",
            "data loading",
            lambda: data_loading(["mnist-sample"] if quick else [n for n in DATASETS if _available(n)]),
        ),
        ("memory", "memory", lambda: peak_memory(mem_ds, 1, limit_batches=5 if quick else 0)),
        ("whole_process", "whole processes", lambda: whole_process(mem_ds, quick)),
    ]
    if dev.type == "cuda":
        sections.append(
            (
                "step",
                "eager vs captured step",
                lambda: {
                    "dataset": mem_ds,
                    "rows": step_modes(load_dataset(mem_ds), dev, limit_batches=20 if quick else 0),
                },
            )
        )
    for k, (key, what, section) in enumerate(sections, start=1):
        log(f"{k}/{len(sections)} {what}")
        res[key] = section()
        if out:
            make_folder(out)
            write_json(out / "bench.json", res)
            with atomic_open(out / "bench.md", "w") as f:
                f.write(to_markdown(res))
    return res


def _available(name: str) -> bool:
    try:
        load_dataset(name, download=False, notice=lambda m: None)
        return True
    except DataError:
        return False


def to_markdown(r: dict) -> str:
    """The figures as Markdown, each section that has run (a partial bench writes what it has)."""
    m = r["machine"]
    lines = [
        f"# mnistlab bench{' (quick)' if m['quick'] else ''}",
        "",
        f"Measured on {m['line']}; {m['threads']} torch threads, device {m['device']}, torch {m['torch']}, "
        f"{m['platform']}.",
        "",
    ]
    if p := r.get("pipeline"):
        lines += [
            "## 1. Pipeline: same cnn, data, epochs, batch size",
            "",
            "| path | images/s |",
            "|---|---|",
            f"| mnistlab (uint8 on device, batches by index) | {p['mnistlab_img_s']:,.0f} |",
            f"| tutorial (Dataset + PIL + per-item transforms + DataLoader) | {p['tutorial_img_s']:,.0f} |",
            f"| **ratio** | **{p['ratio']:.2f}x** |",
            "",
            f"{p['images']:,} training images of {p['dataset']}, batch {p['batch_size']}; median of "
            f"{p.get('repeats', 1)} alternating runs (ratios: "
            f"{', '.join(f'{x:.2f}' for x in p.get('ratios', []))}).",
            "",
        ]
    if "time_to_accuracy" in r:
        lines += [
            "## 2. Time to accuracy (training seconds, evaluation excluded)",
            "",
            "| dataset | model | target | reached | mean ± sd s |",
            "|---|---|---|---|---|",
        ]
        for t in r["time_to_accuracy"]:
            mean = "-" if t["mean_s"] is None else f"{t['mean_s']:.1f} ± {t['sd_s']:.1f}"
            lines.append(
                f"| {t['dataset']} | {t['model']} | {t['target']:.0%} | {t['reached']}/{t['seeds']} | {mean} |"
            )
        lines.append("")
    if "ae_throughput" in r and "inference" in r:
        a, i = r["ae_throughput"], r["inference"]
        lines += [
            "## 3-4. Throughput and inference",
            "",
            "| what | figure |",
            "|---|---|",
            f"| ae-convtranspose training (batch {a['batch_size']}) | {a['img_s']:,.0f} images/s |",
            f"| cnn batched prediction | {i['batched_img_s']:,.0f} images/s |",
            f"| cnn single image latency p50 / p95 | {i['single_p50_ms']:.2f} / {i['single_p95_ms']:.2f} ms |",
            "",
        ]
    if "data" in r:
        lines += ["## 5. Data loading", "", "| dataset | from files s | from cache s | images |", "|---|---|---|---|"]
        for d in r["data"]:
            cache = f"{d['cache_s']:.3f}" if "cache_s" in d else "-"
            lines.append(f"| {d['dataset']} | {d['files_s']:.3f} | {cache} | {d['images']:,} |")
        lines.append("")
    if mem := r.get("memory"):
        lines += [
            "## 6. Memory",
            "",
            f"Peak resident memory of `mnistlab train cnn --dataset {mem['dataset']}`: "
            + (f"{mem['peak_rss_mb']:.0f} MB" if mem.get("peak_rss_mb") is not None else mem.get("error", "?")),
            "",
        ]
    if w := r.get("whole_process"):
        lines += [
            "## 7. Whole process: start-up, data, training, test, figures",
            "",
            "| what | command | wall s | test accuracy | peak memory |",
            "|---|---|---|---|---|",
        ]
        for row in w["rows"]:
            wall = f"{row['wall_s']:.1f}" if row["wall_s"] is not None else f"failed: {row['error']}"
            acc = f"{row['test_acc']:.2%}" if row["test_acc"] is not None else "-"
            mem_mb = f"{row['peak_rss_mb']:.0f} MB" if row["peak_rss_mb"] is not None else "-"
            lines.append(f"| {row['what']} | `{row['command']}` | {wall} | {acc} | {mem_mb} |")
        if w["ratio"]:
            lines += [
                "",
                f"The conventional script takes **{w['ratio']:.1f}x** the wall time of `mnistlab train "
                f"cnn-fast --epochs 1` on {w['dataset']}, one after the other in this run.",
                "",
            ]
    if "step" in r:
        lines += [
            "## 8. Training step: eager vs captured CUDA graph (second epoch, seconds)",
            "",
            "| model | eager | captured | speed-up | precision (eager / captured) |",
            "|---|---|---|---|---|",
        ]
        for row in r["step"]["rows"]:
            up = f"{row['speedup']:.1f}x" if row["speedup"] else "-"
            lines.append(
                f"| {row['model']} | {row['off_s']:.3f} | {row['on_s']:.3f} (ran {row['on_step']}) | {up} | "
                f"{row['off_amp']} / {row['on_amp']} |"
            )
        lines += ["", f"{r['step']['rows'][0]['images']:,} training images of {r['step']['dataset']} an epoch.", ""]
    return "\n".join(lines)


__all__ = ["run_bench", "to_markdown"]
