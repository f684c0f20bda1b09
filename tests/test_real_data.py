"""Real-data quality bars on the bundled MNIST sample (marked slow: tens of seconds)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.outcome
@pytest.mark.slow("trains on the whole sample for seconds")
def test_cnn_reaches_96_percent_on_sample_heldout(cnn_report):
    """cnn with its defaults on the sample (the report's cnn job for seed 0 trained it)."""
    run = cnn_report / "runs" / "cnn-seed0"
    config, summary = (json.loads((run / f).read_text()) for f in ("config.json", "summary.json"))
    assert config["model_name"] == "cnn" and config["train"]["epochs"] == 8
    assert config["data"]["dataset"] == "mnist-sample"
    assert summary["n_train"] == 8000 and summary["n_test"] == 2000 and summary["epochs"] == 8
    assert summary["test_acc"] >= 0.96, summary
