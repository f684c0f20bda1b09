"""Ranges (issue 32): every numeric setting of every config (training, each registered model,
each experiment, a sweep) declares its range where it is declared (``checks.ranged``), checked
before anything is built or allocated. The walk below fails when a new setting forgets one."""

from __future__ import annotations

import dataclasses
import importlib
import typing

import pytest

from mnistlab.checks import check_ranges, field_range
from mnistlab.config import TrainConfig
from mnistlab.errors import ConfigError
from mnistlab.models._registry import _REGISTRY
from mnistlab.names import EXPERIMENT_NAMES
from mnistlab.studies.sweep.study import Sweep

from .test_inputs import fails_cleanly


def _configs() -> dict[str, type]:
    found = {"train": TrainConfig, "sweep": Sweep}
    for name, spec in _REGISTRY.items():
        found[f"model {name}"] = type(spec.config)
    for name in EXPERIMENT_NAMES:
        found[f"experiment {name}"] = importlib.import_module(f"mnistlab.studies.experiments.{name}").Config
    return found


def _numeric(hint) -> bool:
    """int or float, alone, optional or in a tuple/list (never bool)."""
    if hint in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis)


CONFIGS = _configs()


@pytest.mark.parametrize("name", CONFIGS)
def test_every_numeric_setting_declares_its_range(name):
    cls = CONFIGS[name]
    hints = typing.get_type_hints(cls)
    numeric = [f for f in dataclasses.fields(cls) if _numeric(hints[f.name])]
    assert numeric, f"{name}: no numeric settings found: the walk is broken"
    missing = [f.name for f in numeric if field_range(f) is None]
    assert not missing, f"{name}: settings without a declared range (checks.ranged): {missing}"
    for f in numeric:
        least, most, _ = field_range(f)
        assert least <= most, f"{name}.{f.name}: an empty range"


@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "sweep"])
def test_the_defaults_and_presets_lie_in_their_ranges(name):
    cls = CONFIGS[name]
    if name.startswith("model "):
        check_ranges(_REGISTRY[name.split(" ", 1)[1]].config, "model")  # the preset
    else:
        check_ranges(cls(), name)


def test_a_range_refuses_nan_infinity_and_each_value_of_a_tuple():
    from mnistlab.models.classifiers import CNNConfig

    for bad in (float("nan"), float("inf"), 1.5):
        with pytest.raises(ConfigError, match=r"model.dropout: must be in 0..0.99"):
            check_ranges(CNNConfig(dropout=bad), "model")
    with pytest.raises(ConfigError, match=r"model.channels: must be in 1..1,024"):
        check_ranges(CNNConfig(channels=(32, 100_000)), "model")


@pytest.mark.parametrize(
    "argv, said",
    [
        (["train", "loop-parity", "--set", "model.adversaries=100000000"], "model.adversaries: must be in 1..64"),
        (["train", "loop-parity", "--set", "model.adversary_steps=1000000000"], "model.adversary_steps: must be in"),
        (["experiment", "unbiased", "--set", "adversaries=100000000"], "experiment.adversaries: must be in 1..64"),
        (["experiment", "unbiased", "--set", "lambdas=[1e308]"], "experiment.lambdas: must be in 0..1000"),
        (["experiment", "reencode", "--set", "consistency_weight=1e308"], "experiment.consistency_weight"),
        (["train", "ae-reencode", "--set", "model.consistency_weight=1e308"], "model.consistency_weight"),
        (["train", "cnn", "--set", "lr=1e30"], "train.lr: must be in"),
    ],
)
def test_settings_nobody_listed_are_refused_before_any_work(argv, said, tmp_path, capsys):
    """Once: 1e8 adversary heads built by the size estimate itself (RSS +50 MB/s), 1e9 steps a
    batch, weights of 1e308 trained until 'lower the learning rate'."""
    fails_cleanly([*argv, "--dataset", "mnist-sample", "--run-dir", str(tmp_path / "r")], capsys, said)
    assert not (tmp_path / "r").exists()
