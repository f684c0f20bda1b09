"""Experiments: each one command that trains, runs the experiment, writes pictures and a
metrics file into a run folder, and honours ``--reuse`` (load the saved models and results
instead of training again).

An experiment is a config dataclass plus ``run(ctx) -> metrics``; ``ctx`` gives it the
dataset, the device, its folder and whether to reuse. Registered in ``EXPERIMENTS``.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import runtime
from .._io import write_json
from ..config import apply_overrides, parse_set, read_config_file
from ..data import Dataset, dataset_for
from ..errors import ConfigError, RunError
from ..runs import environment, load_state, prepare_run_dir, runs_root, save_state

# name -> module defining Config and run(ctx)
EXPERIMENTS = {"dream": "dream", "unbiased": "unbiased", "reencode": "reencode"}


@dataclass
class Context:
    name: str
    config: Any
    data: Dataset
    device: torch.device
    path: Path
    reuse: bool
    progress: bool | None
    log: Callable[[str], None]

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    def save(self, name: str, state: dict) -> None:
        save_state(self.path / name, state)

    def load(self, name: str) -> dict:
        return load_state(self.path / name)


def _module(name: str):
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f".{EXPERIMENTS[name]}", __name__)


def build_experiment_config(name: str, file=None, sets=None, flags=None):
    cfg = _module(name).Config()
    values: dict[str, Any] = {}
    if file:
        data = read_config_file(file)
        values.update(data.get("experiment", data))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    values.update(dict(parse_set(sets or [])))
    values = {k.removeprefix("experiment."): v for k, v in values.items()}
    cfg = apply_overrides(cfg, values, "experiment")
    cfg.validate()
    return cfg


def latest_experiment(name: str, root: Path | None = None) -> Path:
    root = Path(root or runs_root())
    found = sorted((p for p in root.glob(f"experiment-{name}-*") if (p / "metrics.json").exists()),
                   key=lambda p: (p.stat().st_mtime, p.name))
    if not found:
        raise RunError(f"no finished {name} experiment under {root}/ to reuse")
    return found[-1]


def run_experiment(name: str, config, *, run_dir: str | Path | None = None, reuse: bool = False,
                   dataset: Dataset | None = None, progress: bool | None = None,
                   log: Callable[[str], None] = lambda m: None, notice=None) -> tuple[Path, dict]:
    """Run (or, with reuse, re-evaluate) an experiment; returns its folder and metrics."""
    module = _module(name)
    if reuse:  # the saved settings, not today's: they describe the saved models
        path = Path(run_dir) if run_dir else latest_experiment(name)
        if not (path / "config.json").exists():
            raise RunError(f"{path}: no {name} experiment here to reuse")
        saved = json.loads((path / "config.json").read_text())
        if saved.get("experiment") != name:
            raise RunError(f"{path}: holds a {saved.get('experiment')!r} experiment, not {name!r}")
        config = apply_overrides(module.Config(), saved["config"], "experiment")
    runtime.set_threads(config.threads)
    device = runtime.resolve_device(config.device)
    ds = dataset or dataset_for(config, notice=notice)
    if not reuse:
        path = prepare_run_dir(Path(run_dir) if run_dir else
                               runs_root() / f"experiment-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        write_json(path / "config.json", {"experiment": name, "config": dataclasses.asdict(config)})
        write_json(path / "env.json", {**environment(device, config.seed), "data_source": ds.source})
    runtime.seed_everything(config.seed)
    ctx = Context(name, config, ds, device, path, reuse, progress, log)
    ctx.figures.mkdir(parents=True, exist_ok=True)
    metrics = module.run(ctx)
    write_json(path / "metrics.json", metrics)
    # Last: summary.json marks the experiment finished, with the figures `mnistlab runs` lists.
    write_json(path / "summary.json", {"kind": "experiment", "experiment": name, "dataset": ds.name,
                                       "seed": config.seed, **module.headline(metrics)})
    return path, metrics


def summary_lines(name: str, metrics: dict) -> list[str]:
    return _module(name).summary_lines(metrics)
