"""Typed config: dataclass defaults <- model preset <- optional TOML/YAML file <- --set key=value.

Sections are ``model`` (the model's own config dataclass), ``train`` and ``data``. A key may
be written in full (``train.epochs=3``) or bare (``epochs=3``) when only one section has it.
Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ._io import MAX_CONFIG, Unreadable, read_text
from .checks import apply_overrides, brief, check, check_ranges, check_threads, cpus, ranged
from .errors import ConfigError
from .models import get_spec  # importing the models fills the registry
from .names import SEED_MAX

OPTIMIZERS = ("adam", "adamw", "sgd")
MAX_EPOCHS = 100_000
MAX_BATCH = 1_000_000
SCHEDULES = ("none", "onecycle", "cosine")


@dataclass
class TrainConfig:
    epochs: int = ranged(5, 1, MAX_EPOCHS)
    batch_size: int = ranged(128, 1, MAX_BATCH)
    lr: float = ranged(1e-3, 1e-9, 10.0)
    optimizer: str = "adam"
    weight_decay: float = ranged(0.0, 0.0, 10.0)
    momentum: float = ranged(0.9, 0.0, 0.999)  # sgd only
    schedule: str = "none"
    seed: int = ranged(0, 0, SEED_MAX)
    device: str = "auto"
    threads: int = ranged(
        0, 0, cpus, "this machine's CPUs; 0: torch's choice"
    )  # 0: torch's default (one per physical core)
    val_fraction: float = ranged(0.0, 0.0, 0.9)  # carved from the training set by the seed; 0 = report test only
    eval_batch_size: int = ranged(256, 1, MAX_BATCH)  # cache-sized: faster than 1,000 on a CPU (infer.EVAL_BATCH)
    limit_batches: int = ranged(0, 0, 1_000_000)  # >0: stop each epoch after this many batches (smoke runs)
    augment: str = "none"  # none, shift (2 px), affine (rotate/scale/shift), robust (see augment.py); on the device
    amp: str = "auto"  # bf16 autocast: auto (bf16 on CUDA where measured faster, steps.py), bf16, off
    graph: str = "auto"  # capture the training step as a CUDA graph: auto (on CUDA when it can be), on, off
    channels_last: str = "auto"  # auto (= on, every device), on, off
    compile: bool = False  # torch.compile the loss step; falls back to eager if it fails
    printed: float = ranged(
        0.0, 0.0, 1.0
    )  # > 0: add this fraction of printed digits (matplotlib's fonts) to the training set
    track: tuple[str, ...] = ()  # mirror the run to tensorboard and/or mlflow (the 'track' extra)

    def validate(self) -> None:
        for key, most in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH), ("eval_batch_size", MAX_BATCH)):
            check(getattr(self, key) >= 1, f"train.{key}", "must be >= 1", getattr(self, key))
            check(getattr(self, key) <= most, f"train.{key}", f"must be <= {most:,}", getattr(self, key))
        check(0 <= self.seed <= SEED_MAX, "train.seed", "must be in 0..2^32-1", self.seed)
        check(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)", self.momentum)
        check(self.lr > 0, "train.lr", "must be > 0", self.lr)
        check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0", self.weight_decay)
        check(self.optimizer in OPTIMIZERS, "train.optimizer", f"must be one of {OPTIMIZERS}", self.optimizer)
        check(self.schedule in SCHEDULES, "train.schedule", f"must be one of {SCHEDULES}", self.schedule)
        check(0 <= self.val_fraction < 1, "train.val_fraction", "must be in [0, 1)", self.val_fraction)
        check_threads(self.threads, "train.threads")
        check(0 <= self.printed <= 1, "train.printed", "must be in [0, 1]", self.printed)
        check(
            set(self.track) <= {"tensorboard", "mlflow"},
            "train.track",
            "must name tensorboard and/or mlflow",
            self.track,
        )
        check(self.limit_batches >= 0, "train.limit_batches", "must be >= 0", self.limit_batches)
        check(
            self.augment in ("none", "shift", "affine", "robust"),
            "train.augment",
            "must be none, shift, affine or robust",
            self.augment,
        )
        check(self.amp in ("auto", "bf16", "off"), "train.amp", "must be auto, bf16 or off", self.amp)
        check(self.graph in ("auto", "on", "off"), "train.graph", "must be auto, on or off", self.graph)
        check(
            self.channels_last in ("auto", "on", "off"),
            "train.channels_last",
            "must be auto, on or off",
            self.channels_last,
        )


@dataclass
class DataConfig:
    dataset: str = "auto"
    data_dir: str | None = None
    # Files by path, any names (IDX raw/gz, CSV, NPZ/NPY); labels optional for autoencoders.
    train_images: str | None = None
    train_labels: str | None = None
    test_images: str | None = None
    test_labels: str | None = None

    def validate(self) -> None:
        from .data.sources import AUTO, DATASETS, FROM_FILES

        names = (*DATASETS, AUTO) + ((FROM_FILES,) if self.train_images else ())
        check(self.dataset in names, "data.dataset", f"must be one of {names}", self.dataset)


@dataclass
class RunConfig:
    model_name: str
    model: Any  # the model's config dataclass
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def sections(self) -> dict[str, Any]:
        return {"model": self.model, "train": self.train, "data": self.data}

    def to_dict(self) -> dict:
        return {
            "model_name": self.model_name,
            **{name: dataclasses.asdict(sec) for name, sec in self.sections().items()},
        }

    def validate(self, data: bool = True, fits: bool = True) -> None:
        """Every section's checks and, with `fits`, whether training the model fits in memory.
        `data=False`: a stored config, whose dataset name records what was used (files, a
        Dataset passed in)."""
        for name, sec in self.sections().items():
            if dataclasses.is_dataclass(sec):
                check_ranges(sec, name)  # the declared ranges first: nothing is sized from a wild value
            if hasattr(sec, "validate") and (data or name != "data"):
                sec.validate()
        if fits:
            from .models.sizing import check_fits

            check_fits(self.model_name, self.model, self.train.batch_size)


def parse_set(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out.append((k.strip(), v))
    return out


def _resolve_key(cfg: RunConfig, key: str) -> tuple[str, str]:
    secs = cfg.sections()
    if "." in key:
        sec, name = key.split(".", 1)
        if sec not in secs:
            raise ConfigError(f"unknown config section {sec!r} in {key!r} (sections: model, train, data)")
        return sec, name
    owners = [s for s, obj in secs.items() if key in {f.name for f in fields(obj)}]
    if not owners:
        raise ConfigError(f"unknown key {key!r} for model {cfg.model_name!r}")
    if len(owners) > 1:
        raise ConfigError(f"key {key!r} is ambiguous: write {' or '.join(o + '.' + key for o in owners)}")
    return owners[0], key


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = read_text(path, MAX_CONFIG)
    except Unreadable as e:
        raise ConfigError(f"cannot read config: {e}") from None
    yaml_file = path.suffix in (".yaml", ".yml")
    try:
        data = (_load_yaml(text) or {}) if yaml_file else tomllib.loads(text)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except Exception as e:  # parser errors differ by format; all mean the same to the user
        raise ConfigError(
            f"{path}: not valid {'YAML' if yaml_file else 'TOML'} "
            f"({brief((str(e).splitlines() or [type(e).__name__])[0])})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of sections at the top level")
    return data


def _load_yaml(text: str):
    """YAML as a config needs it: plain values, no aliases (a 'billion laughs' file expands a few
    lines into gigabytes), no key given twice (which YAML would quietly resolve to the last)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise ConfigError("YAML aliases (*name) are not read in a config; write the value out")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise ConfigError(f"key {brief(str(key), 60)!r} is given twice (line {line})")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def merge_mapping(cfg: RunConfig, data: dict, origin: str) -> RunConfig:
    """Apply a nested mapping ({'train': {...}, 'model': {...}}; bare keys allowed)."""
    flat: list[tuple[str, Any]] = []
    for k, v in data.items():
        if k == "model_name":
            if v != cfg.model_name:
                raise ConfigError(f"{origin}: written for model {v!r}, not {cfg.model_name!r}")
            continue
        if isinstance(v, dict) and k in cfg.sections():
            flat.extend((f"{k}.{kk}", vv) for kk, vv in v.items())
        else:
            flat.append((k, v))
    return apply_pairs(cfg, flat)


def apply_pairs(cfg: RunConfig, pairs: list[tuple[str, Any]]) -> RunConfig:
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in pairs:
        sec, name = _resolve_key(cfg, key)
        grouped.setdefault(sec, {})[name] = value
    secs = cfg.sections()
    for sec, values in grouped.items():
        secs[sec] = apply_overrides(secs[sec], values, sec)
    return RunConfig(cfg.model_name, secs["model"], secs["train"], secs["data"])


def build_config(
    model_name: str,
    *,
    file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    validate: bool = True,
) -> RunConfig:
    """Defaults and the model's preset, then the file, then CLI flags, then --set pairs."""
    spec = get_spec(model_name)
    train = apply_overrides(TrainConfig(), spec.train, "train")
    cfg = RunConfig(model_name, dataclasses.replace(spec.config), train, DataConfig())
    if file:
        cfg = merge_mapping(cfg, read_config_file(file), str(file))
    if flags:
        cfg = apply_pairs(cfg, [(k, v) for k, v in flags.items() if v is not None])
    if sets:
        cfg = apply_pairs(cfg, parse_set(sets))
    if validate:
        cfg.validate()
    return cfg


def config_from_dict(data: dict) -> RunConfig:
    """Rebuild a saved RunConfig (config.json of a run)."""
    spec = get_spec(data["model_name"])
    cfg = RunConfig(data["model_name"], dataclasses.replace(spec.config), TrainConfig(), DataConfig())
    return merge_mapping(cfg, {k: v for k, v in data.items() if k != "model_name"}, "saved config")
