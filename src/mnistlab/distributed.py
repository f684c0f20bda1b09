"""Training on several processes, devices or machines with PyTorch's DistributedDataParallel.

    torchrun --nproc-per-node 2 -m mnistlab train cnn --dataset mnist-sample
    mnistlab train cnn --nproc 2            # the same, started through torch's own launcher

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) ``setup`` joins the process
group: NCCL with one GPU per local rank on CUDA, gloo on CPU. Each rank keeps the whole
dataset on its device and takes its share of every batch of the epoch's permutation (the
same on every rank), so the global batch is the configured one and, with equal shares,
the averaged gradient is the single-process one. Metrics are summed over ranks; only rank 0
writes the run folder. Models whose batch is one loss and one backward (nearly all) are
wrapped in DDP itself; models with coupled optimisers, which take several backward passes
per batch (loop-parity, ae-reencode), average each optimiser's gradients over the ranks
just before it steps, which is what DDP's reducer does for one.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str = ""

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def record(self) -> dict:
        return {
            "world_size": self.world,
            "local_world_size": self.local_world,
            "nodes": max(1, self.world // max(1, self.local_world)),
            "backend": self.backend,
        }


def launched() -> bool:
    """Started by torchrun (or another launcher setting WORLD_SIZE) with more than one rank."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def joined() -> bool:
    """This process is a rank of a distributed job that has joined its process group."""
    return launched() and dist.is_available() and dist.is_initialized()


def current() -> Context:
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_RANK", 0)),
        int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        dist.get_backend(),
    )


def setup(device_name: str = "auto", threads: int = 0) -> tuple[Context, torch.device]:
    """This process's context and device. Under torchrun: join the process group (once)."""
    from .runtime import resolve_device, set_threads

    if not launched():
        set_threads(threads)
        return Context(), resolve_device(device_name)
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; train in one process")
    local, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if torch.cuda.device_count() < local_world:
            raise ConfigError(
                f"{local_world} processes on this machine but {torch.cuda.device_count()} GPU(s): "
                "give --nproc at most the GPU count, or --device cpu"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"distributed training runs on CUDA (NCCL) or the CPU (gloo), not {device.type}")
    if device.type == "cpu":  # share the cores out, unless told (torchrun's default is 1 thread each)
        set_threads(threads or max(1, (os.cpu_count() or 1) // max(1, local_world)))
    else:
        set_threads(threads)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    return current(), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def sum_tensors(values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise sums over the ranks of same-shaped scalar tensors, in one collective."""
    flat = torch.stack([v.detach().float().reshape(()) for v in values])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    return list(flat.unbind())


def agree(flag: bool, device) -> bool:
    """Rank 0's decision (say, stop early), told to every rank."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


class _Loss(nn.Module):
    """The model's loss as a module's forward, so DDP sees the forward whose backward it syncs."""

    def __init__(self, model: nn.Module, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x, y):
        return self.fn(x, y)


class AveragedOptimizer:
    """An optimiser whose step first averages its parameters' gradients over the ranks."""

    def __init__(self, opt: torch.optim.Optimizer, world: int):
        self.opt, self.world = opt, world
        self.params = [p for g in opt.param_groups for p in g["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for p, g in zip(self.params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
            offset += n
        return self.opt.step()

    def __getattr__(self, name):
        return getattr(self.opt, name)


def broadcast_state(model: nn.Module) -> None:
    """Rank 0's parameters and buffers to every rank (DDP does this when it wraps a model)."""
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


def wrap(model, opts: dict, loss_fn, ctx: Context, device: torch.device):
    """What the training step uses under DDP: (optimizers, loss function)."""
    from .models.base import Model

    if type(model).train_step is Model.train_step:  # one loss, one backward: DDP itself
        ddp = nn.parallel.DistributedDataParallel(
            _Loss(model, loss_fn), device_ids=[device.index] if device.type == "cuda" else None
        )
        return opts, ddp
    broadcast_state(model)
    return {k: AveragedOptimizer(o, ctx.world) for k, o in opts.items()}, loss_fn


# ---------------------------------------------------------------- the launcher (--nproc)


def process_limit(device_name: str = "auto") -> tuple[int, str]:
    """How many processes one machine may start for a job: one per GPU on CUDA, else one per
    CPU; with what that is, for the error line."""
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return n, f"this machine's GPUs: {n}"
    n = os.cpu_count() or 1
    return n, f"this machine's CPUs: {n}"


def die_with_parent(parent: int | None = None, poll_s: float = 0.5) -> None:
    """End this process when the process that started it goes away, killed or not. torch's
    launcher starts each rank in a session of its own, so a killed launcher's ranks would go on
    training (and holding memory) for nobody; a sweep's workers likewise. A daemon thread watches
    this process's parent and ends the process when the parent is no longer the one that started it."""
    import threading

    # the pid the launcher gave (MNISTLAB_PARENT), so a launcher killed while this process was
    # still importing is noticed too; else the parent as it is now (torchrun)
    parent = parent or int(os.environ.get("MNISTLAB_PARENT", "0") or 0) or os.getppid()
    if os.getppid() != parent:
        os._exit(1)

    def watch():
        import time

        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)  # no clean-up to wait for: the run stays resumable from its checkpoint

    threading.Thread(target=watch, name="mnistlab-die-with-parent", daemon=True).start()


# A rank leaves the job with os._exit once its command is done (after the last barrier) or has
# failed, tearing nothing down: destroying the process group and the C++ objects at a normal exit
# raced with the other ranks doing the same, and gloo then aborted a rank now and then ("terminate
# called without an active exception", SIGABRT), after a successful run as after a failed one,
# naming the wrong rank. A rank that saw another go (an error in a collective) exits with PEER_LOST.
PEER_LOST = 75
RANK_LOGS_ENV = "MNISTLAB_RANK_LOGS"


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m mnistlab ARGV`` in `nproc` processes on this machine through torch's
    elastic launcher (what torchrun --standalone does). Returns the exit code; a failure is
    reported on one line, naming the rank that failed first by its own error or signal."""
    import logging
    import shutil
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ["MNISTLAB_LAUNCHED"] = "1"  # ranks leave the error line to us
    os.environ["MNISTLAB_PARENT"] = str(os.getpid())  # and end with this process (die_with_parent)
    logs = tempfile.mkdtemp(prefix="mnistlab-ranks-")
    os.environ[RANK_LOGS_ENV] = logs  # where each rank's C++ runtime writes (quiet_runtime)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    try:
        elastic_launch(config, sys.executable)("-m", "mnistlab", *argv)
    except ChildFailedError as e:
        rank, failure = first_failure(e.failures)
        msg = failure.message if isinstance(failure.message, str) else json.dumps(failure.message)
        if not msg or msg.startswith("To enable traceback"):
            msg = f"exit code {failure.exitcode}"
        hint = (
            "; its run folder stays unfinished (go on with --resume RUN_DIR)"
            if "train" in argv[:1] and _cause_rank(failure) > 0
            else ""
        )
        print(f"mnistlab: error: rank {rank} of {nproc} failed: {msg}{hint}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(logs, ignore_errors=True)
        os.environ.pop(RANK_LOGS_ENV, None)
    return 0


def first_failure(failures: dict) -> tuple[int, object]:
    """(rank, failure) of the rank that failed of its own accord, whatever order the launcher
    saw the exits in: its own error first, then a signal from outside or a crash, then an exit
    code; only after these the ranks that ended because another had (SIGABRT from the runtime
    tearing down, the launcher's SIGTERM, a rank that saw its peer go). Ties by time, then rank."""
    return min(failures.items(), key=lambda kv: (_cause_rank(kv[1]), kv[1].timestamp, kv[0]))


def _cause_rank(failure) -> int:
    """How likely a failure is the cause, 0 the most."""
    if os.path.isfile(str(failure.error_file)):  # written by report_failure
        return 0
    code = failure.exitcode
    if code < 0:
        return {6: 3, 15: 4}.get(-code, 1)  # SIGABRT: a runtime aborting; SIGTERM: the launcher
    return 5 if code == PEER_LOST else 2


def quiet_runtime() -> None:
    """In a rank started by `launch`: what the C++ runtime writes straight to the process's
    stderr (gloo's "terminate called without an active exception" as a survivor's threads are
    torn down, library chatter) goes to a log file the launcher removes; Python's own output
    (the progress bar, notices, tracebacks) still reaches the terminal through ``sys.stderr``."""
    logs = os.environ.get(RANK_LOGS_ENV)
    if not (logs and os.environ.get("MNISTLAB_LAUNCHED") and os.path.isdir(logs)):
        return
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        log = os.open(
            os.path.join(logs, f"rank-{os.environ.get('RANK', '0')}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
    except OSError:
        return
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")


def leave_job(code: int) -> None:
    """End this rank now with `code`, its output flushed and nothing torn down (see PEER_LOST)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def report_failure(message: str) -> bool:
    """In a rank started by `launch`, hand the error to the launcher (torch's error file);
    True when it will print it."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not (path and os.environ.get("MNISTLAB_LAUNCHED")):
        return False
    try:
        with open(path, "w") as f:
            json.dump({"message": message, "timestamp": int(time.time())}, f)
    except OSError:
        return False
    return True


def peer_lost(e: BaseException) -> bool:
    """An error in a collective because another rank went away (its own error says why): torch's
    backend and network errors, or the RuntimeError gloo raises when a peer's socket closes
    (only its text tells that one apart)."""
    if not launched():
        return False
    kinds = tuple(k for k in (getattr(dist, "DistBackendError", None), getattr(dist, "DistNetworkError", None)) if k)
    if kinds and isinstance(e, kinds):
        return True
    text = f"{type(e).__name__} {e}"
    return any(s in text for s in ("Connection closed", "Connection reset", "Broken pipe", "peer", "NCCL", "gloo"))
