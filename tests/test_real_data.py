"""Real-data quality bars on the bundled MNIST sample (marked slow: tens of seconds)."""
from __future__ import annotations

import pytest

from mnistlab.config import build_config
from mnistlab.train import train_run


@pytest.mark.slow
def test_cnn_reaches_96_percent_on_sample_heldout(tmp_path):
    cfg = build_config("cnn", flags={"dataset": "mnist-sample"})
    run = train_run(cfg, tmp_path / "r", progress=False)
    assert run.summary["n_train"] == 8000 and run.summary["n_test"] == 2000
    assert run.summary["test_acc"] >= 0.96, run.summary
