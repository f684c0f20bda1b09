"""Training: one loop for every model, and the run folder that records it.

- ``run``: ``train_run`` (a new run folder: config, env, metrics, checkpoints, summary,
  figures), ``resume_run``, ``reuse_run``; ``fit``, the loop itself.
- ``steps``: how the loop spends a batch, eagerly or replayed as a captured CUDA graph.
- ``track``: TensorBoard and MLflow, beside the run folder.

    from mnistlab import build_config, train_run
    run = train_run(build_config("cnn", flags={"dataset": "mnist-sample", "epochs": 2}))
"""

from .loop import fit
from .run import resume_run, reuse_run, train_run

__all__ = ["fit", "resume_run", "reuse_run", "train_run"]
