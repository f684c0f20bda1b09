"""Model registry: ``register_model`` + ``create_model(name, **kw)`` + ``list_models("ae-*")``.

A registered name is a preset: a family class, the family's config with some fields set,
what the model is for (``task``) and the training defaults that suit it. Adding a model
touches one file: the one that registers it.

A leaf, as timm's: it imports no model and no config. Model modules import it and register
themselves; ``mnistlab.models`` imports them all and re-exports these functions, so code
that looks models up imports ``mnistlab.models`` (never this module alone).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from ..checks import apply_overrides, check_ranges
from ..errors import ConfigError

TASKS = ("classify", "reconstruct")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: type  # nn.Module subclass built as family(config)
    config: Any  # a config dataclass instance: the preset
    task: str
    train: dict = field(default_factory=dict)  # TrainConfig overrides that suit this model
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, family: type, config: Any, *, task: str, train: dict | None = None, description: str = ""
) -> ModelSpec:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    spec = ModelSpec(name, family, config, task, dict(train or {}), description)
    _REGISTRY[name] = spec
    return spec


def list_models(pattern: str = "*", task: str | None = None) -> list[str]:
    return sorted(n for n, s in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (task is None or s.task == task))


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint}; known: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, config: Any = None, *, load_run=None, **overrides):
    """Build a registered model from its preset, a full config, or the preset with overrides.

    `load_run` (``mnistlab.runs.load_run``) lets a model built from another run read it."""
    spec = get_spec(name)
    cfg = config if config is not None else spec.config
    if overrides:
        cfg = apply_overrides(cfg, overrides, "model")
    check_ranges(cfg, "model")
    if hasattr(cfg, "validate"):
        cfg.validate()
    model = spec.family.from_config(dataclasses.replace(cfg), load_run=load_run)
    model.model_name = name
    return model
