"""Config layering and its errors."""

from __future__ import annotations

import pytest

from mnistlab.config import build_config, config_from_dict
from mnistlab.errors import ConfigError


def test_defaults_come_from_the_model_preset():
    cfg = build_config("cnn")
    assert cfg.train.epochs == 8 and cfg.model.channels == (32, 64) and cfg.data.dataset == "auto"


def test_layering_file_then_flags_then_set(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs = 3\nlr = 0.01\n[model]\ndropout = 0.25\n[data]\ndataset = "mnist-sample"\n')
    cfg = build_config("cnn", file=f, flags={"epochs": 4, "seed": None}, sets=["lr=0.02", "model.channels=8,16"])
    assert cfg.train.epochs == 4  # flag beats file
    assert cfg.train.lr == 0.02  # --set beats file
    assert cfg.model.dropout == 0.25 and cfg.model.channels == (8, 16)
    assert cfg.data.dataset == "mnist-sample" and cfg.train.seed == 0


def test_yaml_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  batch_size: 64\nmodel:\n  kernel: 5\n")
    cfg = build_config("cnn", file=f)
    assert cfg.train.batch_size == 64 and cfg.model.kernel == 5


@pytest.mark.parametrize(
    "sets, match",
    [
        (["nope=1"], "unknown key 'nope'"),
        (["train.nope=1"], r"unknown key train.nope"),
        (["epochs=three"], r"train.epochs: expected an integer"),
        (["epochs=0"], r"train.epochs: must be in 1..100,000"),
        (["lr=-1"], r"train.lr: must be in 1e-09..10"),
        (["optimizer=rmsprop"], r"train.optimizer: must be one of"),
        (["dropout=1.5"], r"model.dropout: must be in 0..0.99"),
        (["model.channels=8"], r"model.channels: must be two"),
        (["dataset=cifar"], r"data.dataset: must be one of"),
        (["epochs"], r"expected key=value"),
        (["bogus.epochs=1"], r"unknown config section 'bogus'"),
    ],
)
def test_bad_overrides_name_the_key(sets, match):
    with pytest.raises(ConfigError, match=match):
        build_config("cnn", sets=sets)


def test_file_type_errors_and_syntax(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nepochs = "many"\n')
    with pytest.raises(ConfigError, match=r"train.epochs: expected an integer"):
        build_config("cnn", file=f)
    f.write_text("[train\nepochs = 1\n")
    with pytest.raises(ConfigError, match=r"c.toml: not valid TOML"):
        build_config("cnn", file=f)
    with pytest.raises(ConfigError, match="cannot read config"):
        build_config("cnn", file=tmp_path / "missing.toml")


def test_unknown_model_suggests_a_name():
    with pytest.raises(ConfigError, match=r"unknown model 'cnnn' \(did you mean 'cnn'\?\)"):
        build_config("cnnn")


def test_saved_config_round_trip():
    cfg = build_config("cnn", sets=["epochs=2", "model.dropout=0.1", "data.dataset=mnist-sample"])
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
