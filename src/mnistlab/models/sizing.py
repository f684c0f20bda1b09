"""Will training a model fit? Its parameters counted on the meta device (shapes only, nothing
allocated) and, once they fit, one batch's activations from one image through the real model,
against the memory this machine has. A width of 100,000 filters is refused in milliseconds,
not after 24 GB."""

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


def estimate(model_name: str, config, batch_size: int, memory: int | None = None) -> tuple[int, int]:
    """(parameters, activation elements of one training batch). Parameters are counted on the
    meta device (shapes only); activations are every module's output for one image, from a
    real forward pass of the model built on the CPU (only once its parameters are known to fit;
    the random generators as they were), times the batch. (0, 0) for a model built from
    another run (it is checked as it loads)."""
    from ._registry import create_model

    def no_runs(path):
        raise LookupError

    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in create_model(model_name, config, load_run=no_runs).parameters())
    except (LookupError, ConfigError):
        return 0, 0
    have = available_memory() if memory is None else memory
    if params * BYTES * PARAM_COPIES > have:
        return params, 0  # refused on the parameters alone
    seen = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            seen[0] += output.numel()

    # (a forward pass on the meta device would import torch._dynamo: 2 s of every start-up)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        model = create_model(model_name, config, load_run=no_runs).eval()
        for m in model.modules():
            if not list(m.children()):
                m.register_forward_hook(count)  # the model is thrown away after this one pass
        try:
            model(torch.zeros(1, 1, 28, 28))
        except Exception:  # a model that needs more than one image: the parameters alone are checked
            seen[0] = 0
    return params, seen[0] * batch_size


def check_fits(model_name: str, config, batch_size: int, memory: int | None = None) -> None:
    """ConfigError (one line) when training `model_name` at `batch_size` would need more memory
    than the machine has."""
    have = available_memory() if memory is None else memory
    params, acts = estimate(model_name, config, batch_size, have)
    need = params * BYTES * PARAM_COPIES + acts * BYTES * ACTIVATION_COPIES
    if need > have:
        # the activations are counted only once the parameters fit: when they do not, the
        # parameters alone are the reason, and no count of 0 activations is said
        why = f"{params:,} parameters" + (f", {acts:,} activations a batch of {batch_size}" if acts else " alone")
        raise ConfigError(
            f"{model_name} with these settings needs about {need / 2**30:,.1f} GiB to train "
            f"({why}); this machine has {have / 2**30:,.1f} GiB free: make the model narrower or the batch smaller"
        )
