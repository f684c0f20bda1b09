"""The one place for seed, device, threads, and what the machine is."""

from __future__ import annotations

import os
import platform
import random
import sys

import numpy as np
import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is available (use --device cpu)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} asked for, but MPS is not available (use --device cpu)")
    return dev


ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo), else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device | None = None) -> dict:
    """What a speed figure was measured on: the CPU model, the instruction set torch's CPU kernels
    run (and any cap set on it), the cores, and the GPU when `device` is one. ``line`` says it in
    words, for the figures' captions."""
    isa = torch.backends.cpu.get_cpu_capability()
    caps = {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}
    out = {"cpu": cpu_model(), "isa": isa, "cores": os.cpu_count(), **({"isa_caps": caps} if caps else {})}
    line = f"{out['cpu']}, {isa} kernels{' (capped)' if caps else ''}, {out['cores']} cores"
    if device is not None and torch.device(device).type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
        line = f"{out['gpu']} (host: {line})"
    return {**out, "line": line}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """On Linux with glibc, let freed blocks of up to 64 MB stay in the heap for the next step.

    A training step frees and allocates the same activation buffers (megabytes each) every
    batch. By default glibc serves blocks that large with fresh mmap()s and returns them on
    free, so every step pays page faults to zero new pages: on a 2-core CPU one fashion-mnist
    epoch of cnn-fast took 4.3-6.0 s that way and 3.0-3.1 s with the blocks kept (peak memory
    the same, ~420 MB). Set once per process (mallopt's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD);
    MNISTLAB_MALLOC=default leaves glibc's settings alone. True when the settings are in force."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("MNISTLAB_MALLOC", "") == "default":
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_threshold, 64 << 20)) and bool(
            libc.mallopt(m_trim_threshold, 256 << 20)
        )
    except (OSError, AttributeError):
        return False
    return _ALLOCATOR_TUNED


def set_threads(n: int = 0) -> int:
    """n=0 keeps torch's choice (one per physical core); returns the count in force."""
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out


def defer_dynamo() -> int:
    """Keep torch.optim from importing torch._dynamo (2 s on a 2-core CPU) when nothing compiles.

    Optimizer methods (``add_param_group``, ``zero_grad``, ``state_dict``, ...) are wrapped by
    ``torch._disable_dynamo``, which imports torch._dynamo on their first call to build the
    disabled function, compiling or not. While torch._dynamo is not imported nothing can be
    tracing, so running the method plain is what the disabled one would do; from the first
    call after torch._dynamo is imported (``torch.compile`` or anything else) the wrapper
    builds and keeps the real disabled function, as it would have. Torch's own cache slot
    (``__dynamo_disable`` on the wrapped function) is what is set; a torch that wraps
    differently is left alone. Returns how many methods were deferred."""
    if "torch._dynamo" in sys.modules:
        return 0
    import torch.optim
    from torch._compile import _disable_dynamo

    code = _disable_dynamo(lambda: None).__code__
    n = 0
    for cls in _subclasses(torch.optim.Optimizer) + _subclasses(torch.optim.lr_scheduler.LRScheduler):
        for inner in vars(cls).values():
            fn = getattr(inner, "__wrapped__", None)
            if getattr(inner, "__code__", None) is not code or fn is None or getattr(fn, "__dynamo_disable", None):
                continue
            setattr(fn, "__dynamo_disable", _deferred(fn, inner))
            n += 1
    return n


def _deferred(fn, inner):
    def call(*args, **kwargs):
        if "torch._dynamo" in sys.modules:  # something may compile from now on: become the real thing
            setattr(fn, "__dynamo_disable", None)
            return inner(*args, **kwargs)
        return fn(*args, **kwargs)

    return call


_PLAIN: dict[type, type] = {}


def plain_optimizer(cls: type) -> type:
    """`cls` (a torch.optim class), its ``step`` run without torch's compile guard while
    torch._dynamo is not imported.

    ``Adam.step`` and its kin are wrapped by ``_use_grad_for_differentiable``, which imports
    torch._dynamo on every call to put graph breaks around the update (they matter only while
    compiling) and sets the grad mode. The subclass's step sets the same grad mode and runs the
    same update; once torch._dynamo is imported it runs torch's own wrapper, graph breaks
    included. Same updates, same state dict, still an instance of `cls`. A class (or a torch)
    without that wrapper is returned as it is."""
    if cls in _PLAIN:
        return _PLAIN[cls]
    from torch.optim.optimizer import _use_grad_for_differentiable

    guard = _use_grad_for_differentiable(lambda self: None).__code__
    f = getattr(cls, "step", None)
    while f is not None and getattr(f, "__code__", None) is not guard:
        f = getattr(f, "__wrapped__", None)  # below the profiling hook torch adds on first use
    if f is None or getattr(f, "__wrapped__", None) is None:
        _PLAIN[cls] = cls
        return cls
    guarded, update = f, f.__wrapped__

    def step(self, closure=None):
        if "torch._dynamo" in sys.modules:
            return guarded(self, closure)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return update(self, closure)

    step.__doc__ = update.__doc__
    _PLAIN[cls] = type(cls.__name__, (cls,), {"step": step, "__module__": __name__, "__doc__": cls.__doc__})
    return _PLAIN[cls]


def optimizer(cls: type, params, **kwargs) -> torch.optim.Optimizer:
    """`cls(params, **kwargs)` (a torch.optim class) that imports no torch._dynamo until
    something compiles: ``defer_dynamo`` and ``plain_optimizer`` together."""
    defer_dynamo()
    return plain_optimizer(cls)(params, **kwargs)
