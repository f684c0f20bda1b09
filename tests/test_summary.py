"""`mnistlab summary` and `mnistlab.summary`: a model's layers as Keras prints them."""

from __future__ import annotations

import json

import mnistlab
from mnistlab.cli import main
from mnistlab.models import create_model


def test_the_classic_convnet_has_the_keras_examples_34826_parameters():
    s = mnistlab.summary("cnn")
    assert s.params == s.trainable == 34_826 and s.frozen == 0
    rows = [(r.name, r.kind, r.output, r.params) for r in s.layers]
    assert rows == [
        ("conv1", "Conv2d", (32, 26, 26), 320),
        ("pool1", "MaxPool2d", (32, 13, 13), 0),
        ("conv2", "Conv2d", (64, 11, 11), 18_496),
        ("pool2", "MaxPool2d", (64, 5, 5), 0),
        ("dropout", "Dropout", (1600,), 0),
        ("fc", "Linear", (10,), 16_010),
    ]
    # multiply-adds: each output element of a convolution costs in-channels x kernel area
    assert s.layers[0].mult_adds == 32 * 26 * 26 * 9 and s.layers[2].mult_adds == 64 * 11 * 11 * 32 * 9
    assert s.layers[-1].mult_adds == 1600 * 10 and "inference" in s.layers[4].note


def test_the_command_prints_what_the_library_returns(capsys):
    assert main(["summary", "cnn", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == mnistlab.summary("cnn").to_dict()
    assert main(["summary", "cnn", "--set", "model.channels=16,32"]) == 0
    text = capsys.readouterr().out
    assert "conv1 (Conv2d)" in text and "16x26x26" in text and "parameters: 12,810" in text


def test_a_run_is_summarised_with_its_trained_model(cnn_run_dir, capsys):
    assert main(["summary", str(cnn_run_dir)]) == 0
    assert "parameters: 34,826" in capsys.readouterr().out


def test_frozen_layers_and_the_two_stages_show():
    model = create_model("encoder-classifier", encoder_model="ae-convtranspose")
    s = mnistlab.summary(model)
    assert [st["stage"] for st in s.stages] == ["frozen", "finetune"]
    frozen, tuned = s.stages
    assert frozen["frozen"] > 0 and tuned["frozen"] == 0 and frozen["trainable"] + frozen["frozen"] == s.params
    assert all(p.requires_grad for p in model.parameters())  # the model's own flags put back
    model.freeze_encoder(True)
    assert any(r.trainable == "frozen" for r in mnistlab.summary(model).layers)


def test_an_unknown_model_is_one_line(capsys):
    assert main(["summary", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
