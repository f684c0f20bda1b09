"""Experiments: each one command that trains its parts, runs the experiment, and records it
as a run: ``config.json`` (sections ``experiment`` and ``data``), ``env.json``,
``metrics.jsonl`` (one row per round, λ or model), ``results.json`` (everything measured),
``summary.json`` (the headline; written last, it marks the experiment finished) and
``figures/``. Every model it trains is itself a run in a sub-folder (``judge/``,
``lambda-0/``, ``reencode/``...): ``load_run``, ``serve`` and ``mnistlab train --resume``
work on those, and ``load_run`` on the experiment folder loads its main part. ``--reuse``
loads the parts instead of training again.

An experiment is a config dataclass plus ``run(ctx) -> results`` (``results["main"]``
names its main part), ``rows(results)``,
``headline(results)`` and ``summary_lines(results)``; ``ctx`` gives it the dataset, the
device, its folder and whether to reuse, and trains its parts. Registered in ``EXPERIMENTS``.
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

from ... import runtime
from ..._io import write_json, write_jsonl
from ...checks import apply_overrides
from ...config import DataConfig, RunConfig, parse_set, read_config_file
from ...data.sources import dataset_for
from ...data.splits import Dataset
from ...errors import ConfigError, RunError
from ...models import get_spec
from ...runs import Run, environment, experiment_sections, load_run, load_state, prepare_run_dir, runs_root, save_state

# name -> module defining Config, run(ctx), rows, headline and summary_lines
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

    def run_config(self, model_name: str, epochs: int, seed_offset: int = 0, **model: Any) -> RunConfig:
        """A part's run config: the model's preset with `model` set, the experiment's data and
        its shared training settings (seed + `seed_offset`)."""
        cfg = RunConfig(
            model_name,
            apply_overrides(get_spec(model_name).config, model, "model"),
            self.config.train_config(epochs, seed_offset),
            self.config.data_config(),
        )
        cfg.data.dataset = self.data.name
        cfg.validate()
        return cfg

    def train(self, part: str, cfg: RunConfig) -> Run:
        """Train a part as a run in the sub-folder `part`; with reuse, load the one saved there."""
        if self.reuse:
            return load_run(self.path / part, self.device)
        from ...train.run import train_run

        self.log(f"training {part} ({cfg.model_name})")
        return train_run(cfg, self.path / part, dataset=self.data, progress=self.progress, figures=False)

    def start(self, part: str, cfg: RunConfig) -> Run:
        """A part's run folder and fresh model, for an experiment that trains it piece by piece."""
        from ...train.run import start_run

        return start_run(cfg, self.path / part, self.data, self.device)


def _module(name: str):
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f".{EXPERIMENTS[name]}", __name__)


def build_experiment_config(name: str, file=None, sets=None, flags=None):
    cfg = _module(name).Config()
    values: dict[str, Any] = {}
    if file:
        data = read_config_file(file)
        for section in ("experiment", "data"):  # sectioned, as config.json is; or flat
            values.update(data.pop(section, None) or {})
        values.update(data)
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    values.update(dict(parse_set(sets or [])))
    values = {k.removeprefix("experiment.").removeprefix("data."): v for k, v in values.items()}
    cfg = apply_overrides(cfg, values, "experiment")
    cfg.validate()
    return cfg


def latest_experiment(name: str, root: Path | None = None) -> Path:
    root = Path(root or runs_root())
    found = sorted(
        (p for p in root.glob(f"experiment-{name}-*") if (p / "summary.json").exists()),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    if not found:
        raise RunError(f"no finished {name} experiment under {root}/ to reuse")
    return found[-1]


def _saved_config(module, name: str, path: Path):
    """The settings an experiment folder was run with (they describe its saved models)."""
    try:
        saved = json.loads((path / "config.json").read_text())
        found, values = experiment_sections(saved)
    except (OSError, ValueError):
        raise RunError(f"{path}: no {name} experiment here to reuse") from None
    if found != name:
        raise RunError(
            f"{path}: holds a {found!r} experiment, not {name!r}"
            if found
            else f"{path}: no {name} experiment here to reuse"
        )
    return apply_overrides(module.Config(), values, "experiment")


def run_experiment(
    name: str,
    config,
    *,
    run_dir: str | Path | None = None,
    reuse: bool = False,
    dataset: Dataset | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda m: None,
    notice=None,
) -> tuple[Path, dict]:
    """Run (or, with reuse, re-evaluate) an experiment; returns its folder and results."""
    module = _module(name)
    if reuse:  # the saved settings, not today's: they describe the saved models
        path = Path(run_dir) if run_dir else latest_experiment(name)
        config = _saved_config(module, name, path)
    runtime.set_threads(config.threads)
    device = runtime.resolve_device(config.device)
    ds = dataset or dataset_for(config, notice=notice)
    if not reuse:
        path = prepare_run_dir(
            Path(run_dir) if run_dir else runs_root() / f"experiment-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        values = dataclasses.asdict(config)
        data = {k: values.pop(k) for k in DataConfig.__dataclass_fields__}
        write_json(
            path / "config.json",
            {"kind": "experiment", "name": name, "experiment": values, "data": data},
            run_file=True,
        )
        write_json(path / "env.json", {**environment(device, config.seed), "data_source": ds.source}, run_file=True)
    runtime.seed_everything(config.seed)
    ctx = Context(name, config, ds, device, path, reuse, progress, log)
    ctx.figures.mkdir(parents=True, exist_ok=True)
    results = module.run(ctx)
    write_json(path / "results.json", results, run_file=True)
    write_jsonl(path / "metrics.jsonl", module.rows(results), run_file=True)
    # Last: summary.json marks the experiment finished, with the figures `mnistlab runs` lists
    # and the part `load_run` loads for the experiment.
    write_json(
        path / "summary.json",
        {
            "kind": "experiment",
            "experiment": name,
            "dataset": ds.name,
            "seed": config.seed,
            "main": results["main"],
            **module.headline(results),
        },
        run_file=True,
    )
    return path, results


def summary_lines(name: str, results: dict) -> list[str]:
    return _module(name).summary_lines(results)
