"""mnistlab: learn what neural networks do with handwritten digits.

    import mnistlab
    ds = mnistlab.load_dataset("mnist-sample")
    cfg = mnistlab.build_config("cnn", flags={"dataset": "mnist-sample", "epochs": 2})
    run = mnistlab.train_run(cfg)
    same = mnistlab.load_run(run.path)

Names are imported on first use, so ``import mnistlab`` does not pull in torch or matplotlib.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "models",
    "list_models": "models",
    "register_model": "models",
    "load_dataset": "data",
    "build_config": "config",
    "fit": "train",
    "evaluate": "infer",
    "predict": "infer",
    "train_run": "train",
    "load_run": "runs",
    "list_runs": "runs",
    "MnistlabError": "errors",
    "explain": "attribution",
    "summary": "summaries",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mnistlab' has no attribute {name!r}")
