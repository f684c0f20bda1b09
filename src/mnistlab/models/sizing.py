"""Will a model fit? Its parameters and one batch's activations, counted on the meta device
(shapes only, nothing allocated) before anything real is built, against the memory this
machine has. A width of 100,000 filters is refused in milliseconds, not after 24 GB."""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError

BYTES = 4  # fp32
# weights, gradients and Adam's two moments; the activations kept for backward and their gradients
PARAM_COPIES, ACTIVATION_COPIES = 4, 2


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def estimate(model_name: str, config, batch_size: int) -> tuple[int, int]:
    """(parameters, activation elements of one training batch), counted on the meta device.
    Activations are every module's output in one forward pass; (0, 0) if the model cannot be
    built without reading another run (it is then checked as it loads)."""
    from ..registry import create_model

    def no_runs(path):
        raise LookupError

    try:
        with torch.device("meta"):
            model = create_model(model_name, config, load_run=no_runs)
    except (LookupError, ConfigError):
        return 0, 0
    params = sum(p.numel() for p in model.parameters())
    seen = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            seen[0] += output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        model(torch.empty(batch_size, 1, 28, 28, device="meta"))
    except Exception:  # an op without a meta kernel: the parameters alone are checked
        seen[0] = 0
    finally:
        for h in hooks:
            h.remove()
    return params, seen[0]


def check_fits(model_name: str, config, batch_size: int, memory: int | None = None) -> None:
    """ConfigError (one line) when training `model_name` at `batch_size` would need more memory
    than the machine has."""
    params, acts = estimate(model_name, config, batch_size)
    need = params * BYTES * PARAM_COPIES + acts * BYTES * ACTIVATION_COPIES
    have = available_memory() if memory is None else memory
    if need > have:
        raise ConfigError(f"{model_name} with these settings needs about {need / 2**30:,.1f} GiB to train "
                          f"({params:,} parameters, {acts:,} activations a batch of {batch_size}); this machine "
                          f"has {have / 2**30:,.1f} GiB free: make the model narrower or the batch smaller")
