"""How fit spends a batch: one step function, run eagerly or replayed as a captured CUDA graph.

Our nets are small: on a GPU the eager loop is bound by kernel launches, not by the chip
(measured on one H200: cnn's Fashion-MNIST epoch at batch 128 took 0.96 s eagerly and 0.21 s
replaying a captured step, 5x). The captured step is the very function the eager loop calls
(``Step.__call__``): gather the batch by index from the device-resident uint8 set, normalise,
augment, forward, loss, backward, optimiser step, and add the batch's metrics to sums kept on
the device. What changes under capture:

- the batch indices are copied into a fixed tensor the graph reads;
- Adam/AdamW run with ``capturable=True``, one parameter at a time (``foreach=False``), the
  learning rate and beta1 (which OneCycleLR cycles) as device tensors the schedulers fill in
  place between replays, beta2 a float: the foreach kernels take beta1 and beta2 only as
  Python numbers, so a tensor there is read back to the host three times a step, which a
  capture cannot hold (counted on the CPU, see tests/test_steps.py);
- augmentation draws from a CUDA generator registered with the graph, dropout from the
  default one: both advance on every replay, seeded as the run says;
- the first ``WARMUP`` steps run eagerly on a side stream (they are real steps of the run),
  watched for any wait on the host; a step that waits is never captured (the run goes on
  eagerly, said in one line). The next full batch is captured and replayed from there on; a
  smaller batch runs the same function eagerly.

A capture that fails anyway is undone as far as torch allows (the stream, the random
generators, the graph's memory pool) and the run goes on as ``graph=off`` would run it.

``graph=on`` on a machine without CUDA runs the same static step uncaptured (with a notice),
so CPU tests cover its logic. A model that spends a batch its own way (coupled optimisers) or
keeps state of its own between epochs, a distributed or compiled run, and SGD (no capturable
form) fall back to the eager step with one line.

``CAPTURE_VERIFIED``: the captured step has not yet run on a GPU since these safeguards were
written, so ``graph=auto`` runs eagerly on CUDA and ``graph=on`` captures with a notice saying
so; set it once ``pytest -m gpu`` passes on a GPU, with that log kept under benchmarks/gpu-*/.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..models.base import Model

WARMUP = 3  # eager steps before capture: optimiser state, cuDNN's choice of algorithms, allocator pools
CAPTURABLE_OPTIMIZERS = ("adam", "adamw")
CAPTURE_VERIFIED = False
UNVERIFIED = (
    "the captured CUDA step has not passed its GPU tests yet (tests/test_gpu.py); compare a run with train.graph=off"
)
# amp=auto on CUDA, measured on one H200 (seconds per 60k-image epoch, batch 128):
# eagerly fp32 beat bf16 for every model (cnn 1.10-1.17 s vs 1.24-1.27 s); inside a captured
# step bf16 won for cnn (0.177 vs 0.207) and cnn-robust (0.318 vs 0.372) and lost for cnn-fast
# (0.210 vs 0.183) and convnet-fast (0.246 vs 0.166). So bf16 only where it was measured faster.
BF16_WHEN_CAPTURED = frozenset({"cnn", "cnn-robust"})


@dataclass(frozen=True)
class Plan:
    """How a fit's steps run, decided once from the config, the model and the device."""

    graph: str  # "captured" (CUDA graph), "static" (the captured step's function, uncaptured), "eager"
    amp: str  # "bf16" or "fp32"
    why: str = ""  # a line for the user when what was asked for could not be had

    def record(self) -> dict:
        return {"step": self.graph, "amp": self.amp, **({"step_note": self.why} if self.why else {})}


def _own(model, method: str) -> bool:
    return getattr(type(model), method) is not getattr(Model, method)


def _blocker(model, cfg, distributed: bool) -> str:
    """Why the step cannot be captured, or ''."""
    if _own(model, "train_step"):
        return "it spends a batch its own way (coupled optimisers)"
    if _own(model, "start_epoch"):  # Python state a replayed graph would never see
        return "it keeps state of its own from epoch to epoch"
    if distributed:
        return "the run is distributed"
    if cfg.compile:
        return "train.compile is on"
    if cfg.channels_last == "off":
        # evaluation re-lays the weights out channels-last and back: new storage, which a graph
        # captured on the old one would never see
        return "train.channels_last is off"
    if cfg.optimizer not in CAPTURABLE_OPTIMIZERS:
        return f"{cfg.optimizer} has no capturable form (use adam or adamw)"
    return ""


def plan(model, cfg, device, *, distributed: bool = False) -> Plan:
    """The step kind and precision for `model` trained as `cfg` (a TrainConfig) says on `device`."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    graph, why = "eager", ""
    if cfg.graph == "on" or (cfg.graph == "auto" and cuda and CAPTURE_VERIFIED):
        if blocker := _blocker(model, cfg, distributed):
            why = f"the training step runs eagerly, not captured: {blocker}"
        elif cuda:
            graph, why = "captured", "" if CAPTURE_VERIFIED else UNVERIFIED
        else:
            graph = "static"
            why = f"CUDA graphs need a CUDA device ({device.type} here): the captured step's function runs uncaptured"
    return Plan(graph, precision(model, cfg, cuda, graph), why)


def precision(model, cfg, cuda: bool, graph: str) -> str:
    """bf16 when asked for, or (amp=auto) inside a captured step for the models measured faster so."""
    if cfg.amp == "bf16":
        return "bf16"
    if cfg.amp == "auto" and cuda and graph == "captured" and getattr(model, "model_name", "") in BF16_WHEN_CAPTURED:
        return "bf16"
    return "fp32"


def autocast(device, amp: str):
    """One autocast context for the whole fit, or none: entering ``torch.autocast`` anew each step
    asked ``torch.cuda.get_device_properties`` 472 times an epoch (0.31 s of a 2.1 s epoch)."""
    if amp != "bf16":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def tensor_hypers(opt: torch.optim.Optimizer, device) -> None:
    """Make each group's lr and beta1 device tensors (once), so schedulers fill them in place
    and a captured step reads the current values on every replay. beta2 stays a float: nothing
    schedules it, and the update reads it as a number."""
    for g in opt.param_groups:
        if not isinstance(g["lr"], torch.Tensor):
            g["lr"] = torch.tensor(float(g["lr"]), device=device)
        if "betas" in g:
            b0, b1 = g["betas"]
            b0 = b0 if isinstance(b0, torch.Tensor) else torch.tensor(float(b0), device=device)
            g["betas"] = (b0, float(b1))
            g["_beta1"] = b0  # the tensor the graph reads; OneCycleLR replaces the tuple


def sync_hypers(opt: torch.optim.Optimizer) -> None:
    """After a scheduler step: a beta1 written back as a float (OneCycleLR's momentum cycle) goes
    into the tensor the graph reads."""
    for g in opt.param_groups:
        t = g.get("_beta1")
        if t is not None and g["betas"][0] is not t:
            t.fill_(float(g["betas"][0]))
            g["betas"] = (t, float(g["betas"][1]))


def float_hypers(state: dict) -> dict:
    """An optimiser state dict with tensor hyper-parameters as plain floats, so a checkpoint
    from a captured run resumes anywhere (and the other way round)."""
    groups = []
    for g in state.get("param_groups", []):
        g = {k: v for k, v in g.items() if k != "_beta1"}
        if isinstance(g.get("lr"), torch.Tensor):
            g["lr"] = float(g["lr"])
        if "betas" in g:
            g["betas"] = tuple(float(b) for b in g["betas"])
        groups.append(g)
    return {**state, "param_groups": groups}


def make_capturable(opt: torch.optim.Optimizer) -> None:
    """The update a CUDA graph can hold: capturable, one parameter at a time (the foreach path
    reads tensor hyper-parameters back to the host), step counts on the parameters' device."""
    opt.defaults.update(capturable=True, foreach=False)
    # uncaptured steps of a capturable optimiser (warm-up, a smaller last batch) are by design
    # here: Adam's once-per-optimiser warning about them would be a second line on every run
    opt._warned_capturable_if_run_uncaptured = True
    for g in opt.param_groups:
        g["capturable"], g["foreach"] = True, False
        for p in g["params"]:
            st = opt.state.get(p, {})
            if isinstance(st.get("step"), torch.Tensor) and st["step"].device != p.device:
                st["step"] = st["step"].to(p.device, torch.float32)


def make_plain(opt: torch.optim.Optimizer) -> None:
    """Back to the update ``graph=off`` runs: float hyper-parameters, not capturable, foreach
    as torch chooses, step counts on the host (after a capture that failed)."""
    opt.defaults.update(capturable=False, foreach=None)
    for g in opt.param_groups:
        g["capturable"], g["foreach"] = False, None
        g.pop("_beta1", None)
        for p in g["params"]:
            st = opt.state.get(p, {})
            if isinstance(st.get("step"), torch.Tensor) and st["step"].device.type != "cpu":
                st["step"] = st["step"].to("cpu", torch.float32)
        if isinstance(g["lr"], torch.Tensor):
            g["lr"] = float(g["lr"])
        if "betas" in g:
            g["betas"] = tuple(float(b) for b in g["betas"])


def prepare_optimizers(optimizers: dict, plan: Plan, device) -> None:
    """What a static or captured step needs of its optimisers, set on built (or just loaded) ones:
    tensor hyper-parameters and the single-tensor update, and on CUDA the capturable update with
    its step counts on the device."""
    if plan.graph == "eager":
        return
    for opt in optimizers.values():
        # capturable on CUDA whether replayed or not: a tensor lr needs it there, and the same
        # kernels either way keep "captured equals uncaptured" a test of the capture alone
        if torch.device(device).type == "cuda":
            make_capturable(opt)
        else:
            opt.defaults["foreach"] = False
            for g in opt.param_groups:
                g["foreach"] = False
        tensor_hypers(opt, device)


class Step:
    """fit's step over one index batch: gather, train_step under the plan's precision, and the
    metrics added into sums that stay on the device. ``run(idx)`` runs it eagerly or, once
    captured, by replay; ``plan`` is how the steps ran (a failed capture turns it eager)."""

    def __init__(
        self,
        model,
        batches,
        optimizers: dict,
        loss: Callable,
        plan: Plan,
        *,
        device="cpu",
        eager_amp: str = "fp32",
        generators: tuple[torch.Generator, ...] = (),
        notice: Callable[[str], None] | None = None,
    ):
        self.model, self.batches, self.optimizers, self.loss = model, batches, optimizers, loss
        self.plan, self.generators, self.device = plan, generators, torch.device(device)
        self.eager_amp = eager_amp  # the precision graph=off would use, for a fallback
        self.notice = notice or (lambda line: print(f"mnistlab: {line}", file=sys.stderr))
        self._autocast = autocast(self.device, plan.amp)
        self.sums: dict[str, torch.Tensor] = {}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.replays = 0  # how many steps a captured graph ran (tests and the bench read it)
        self._static_idx: torch.Tensor | None = None
        self._steps = 0

    @property
    def ran(self) -> Plan | None:
        """How the steps ran, once that is settled (None while a capture is still to come): a
        captured plan is settled by its capture (or by falling back), any other from the start."""
        if self.plan.graph == "captured" and self.graph is None:
            return None
        return self.plan

    def loss_fn(self, x, y):
        with self._autocast:
            return self.loss(x, y)

    def __call__(self, idx) -> None:
        x, y = self.batches.gather(idx)
        out = self.model.train_step(x, y, self.optimizers, self.loss_fn)
        n = len(y)
        for k, v in out.items():
            if k not in self.sums:
                self.sums[k] = torch.zeros((), device=v.device, dtype=torch.float32)
            self.sums[k].add_(v.detach().float() * n)

    def start_epoch(self) -> None:
        for v in self.sums.values():
            v.zero_()

    def after_schedule(self) -> None:
        if self.plan.graph != "eager":
            for opt in self.optimizers.values():
                sync_hypers(opt)

    def run(self, idx) -> None:
        """Spend the batch at `idx`."""
        if self.plan.graph != "captured" or not isinstance(idx, torch.Tensor):
            return self(idx)
        if self.graph is not None and self._static_idx is not None:
            if idx.shape != self._static_idx.shape:  # a smaller batch: the same step, eagerly
                return self(idx)
            self._static_idx.copy_(idx, non_blocking=True)
            self.graph.replay()
            self.replays += 1
            return None
        # warm up on full batches; a smaller one (a short pass's last) is no shape to capture
        if self._steps < WARMUP or len(idx) != self.batches.batch_size:
            self._steps += len(idx) == self.batches.batch_size
            return self._warm_up(idx)
        return self._capture(idx)

    def _warm_up(self, idx) -> None:
        """One eager step on a side stream, watched for host syncs: a step that waits on the host
        cannot be captured, so it is never tried (the fallback would be no better than eager)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught, torch.cuda.stream(side):
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                self(idx)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        torch.cuda.current_stream().wait_stream(side)
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        for w in caught:  # the step's other warnings, as they would have been shown
            if w not in syncs:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if syncs:
            self._fall_back(
                f"the step waits on the host ({str(syncs[0].message).splitlines()[0][:120]}), "
                "which a CUDA graph cannot hold; running eagerly"
            )

    def _capture(self, idx) -> None:
        self._static_idx = idx.clone()
        graph, pool = torch.cuda.CUDAGraph(), torch.cuda.graph_pool_handle()
        stream, first = torch.cuda.current_stream(), []
        cuda_gens = [g for g in self.generators if g.device.type == "cuda"]
        try:
            for g in cuda_gens:
                graph.register_generator_state(g)
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph, pool=pool):
                try:
                    self(self._static_idx)
                except Exception as e:  # the cause; what ending the capture raises after it is a consequence
                    first.append(e)
                    raise
        except Exception as e:  # an op that syncs with the host, a shape that depends on data, ...
            cause = first[0] if first else e
            healed = self._undo_capture(stream, pool, cuda_gens)
            self._fall_back(
                f"capturing the step failed ({type(cause).__name__}: "
                f"{(str(cause).splitlines() or [''])[0][:160]}); running eagerly"
                + ("" if healed else " (the CUDA state may be degraded: restart to capture again)")
            )
            self(idx)
            return
        self.graph = graph
        graph.replay()  # capturing ran nothing: this is the step for `idx`
        self.replays += 1

    def _undo_capture(self, stream, pool, cuda_gens) -> bool:
        """After a failed capture: back to the stream we were on (torch's graph context is left
        on its capture stream when ending the capture raises), the failed graph's memory pool
        released, and the random generators out of capture mode (torch <= 2.11 clears their
        capture flag only on a capture that ends well, so one trivial capture does it). True if
        all of it went through."""
        torch.cuda.set_stream(stream)
        ok = True
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        try:
            torch._C._cuda_endAllocateToPool(index, pool)
            torch._C._cuda_releasePool(index, pool)
        except Exception:
            ok = False
        try:
            healer = torch.cuda.CUDAGraph()
            for g in cuda_gens:
                healer.register_generator_state(g)
            with torch.cuda.graph(healer):
                torch.zeros(1, device=self.device).add_(1)
            del healer
        except Exception:
            torch.cuda.set_stream(stream)
            ok = False
        torch.cuda.synchronize()
        return ok

    def _fall_back(self, why: str) -> None:
        """Run on as graph=off would: eager, its precision, plain optimisers."""
        self.plan = Plan("eager", self.eager_amp, why)
        self._autocast = autocast(self.device, self.eager_amp)
        for opt in self.optimizers.values():
            make_plain(getattr(opt, "opt", opt))
        self.notice(why)
        self.graph = None


class CosineSchedule(torch.optim.lr_scheduler.LambdaLR):
    """Cosine annealing to 0 over `total` steps in closed form, in Python floats. torch's
    CosineAnnealingLR computes each value from the current one; with the learning rate a device
    tensor (the static and captured steps) that is float32 arithmetic on the device, drifting
    step after step from the float64 schedule."""

    def __init__(self, opt: torch.optim.Optimizer, total: int):
        super().__init__(opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total)))

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict({"lr_lambdas": [None] * len(self.lr_lambdas), **state})
