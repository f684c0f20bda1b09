"""How fit spends a batch: one step function, run eagerly or replayed as a captured CUDA graph.

Our nets are small: on a GPU the eager loop is bound by kernel launches, not by the chip
(measured on one H200: cnn's Fashion-MNIST epoch at batch 128 took 0.96 s eagerly and 0.21 s
replaying a captured step, 5x). The captured step is the very function the eager loop calls
(``Step.__call__``): gather the batch by index from the device-resident uint8 set, normalise,
augment, forward, loss, backward, optimiser step, and add the batch's metrics to sums kept on
the device. What changes under capture:

- the batch indices are copied into a fixed tensor the graph reads;
- Adam/AdamW run with ``capturable=True`` and the learning rate (and beta1, which OneCycleLR
  cycles) as device tensors, which the schedulers fill in place between replays;
- augmentation draws from a CUDA generator registered with the graph, dropout from the
  default one: both advance on every replay, seeded as the run says;
- the first ``WARMUP`` steps run eagerly on a side stream (they are real steps of the run),
  then the next one is captured and replayed from there on; a last, smaller batch runs the
  same function eagerly.

``graph=on`` on a machine without CUDA runs the same static step uncaptured (with a notice),
so CPU tests cover its logic. A model that spends a batch its own way (coupled optimisers),
a distributed or compiled run, and SGD (no capturable form) fall back to the eager step with
one line; so does a capture that fails.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .models.base import Model

WARMUP = 3  # eager steps before capture: optimiser state, cuDNN's choice of algorithms, allocator pools
CAPTURABLE_OPTIMIZERS = ("adam", "adamw")
# amp=auto on CUDA, measured on one H200 (seconds per 60k-image epoch, batch 128, issue 21):
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


def _custom_step(model) -> bool:
    return type(model).train_step is not Model.train_step


def plan(model, cfg, device, *, distributed: bool = False) -> Plan:
    """The step kind and precision for `model` trained as `cfg` (a TrainConfig) says on `device`."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    blocker = ("it spends a batch its own way (coupled optimisers)" if _custom_step(model)
               else "the run is distributed" if distributed
               else "train.compile is on" if cfg.compile
               # evaluation re-lays the weights out channels-last and back: new storage, which a
               # graph captured on the old one would never see
               else "train.channels_last is off" if cfg.channels_last == "off"
               else f"{cfg.optimizer} has no capturable form (use adam or adamw)"
               if cfg.optimizer not in CAPTURABLE_OPTIMIZERS else "")
    graph, why = "eager", ""
    if cfg.graph == "on" or (cfg.graph == "auto" and cuda):
        if blocker:
            graph = "eager"
            why = f"the training step runs eagerly, not captured: {blocker}"
        elif cuda:
            graph = "captured"
        else:
            graph = "static"
            why = f"CUDA graphs need a CUDA device ({device.type} here): the captured step's function runs uncaptured"
        if cfg.graph == "auto" and not cuda:
            graph, why = "eager", ""
    if cfg.amp == "bf16":
        amp = "bf16"
    elif cfg.amp == "auto" and cuda and graph == "captured" and getattr(model, "model_name", "") in BF16_WHEN_CAPTURED:
        amp = "bf16"
    else:
        amp = "fp32"
    return Plan(graph, amp, why)


def autocast(device, amp: str):
    """One autocast context for the whole fit, or none: entering ``torch.autocast`` anew each step
    asked ``torch.cuda.get_device_properties`` 472 times an epoch (0.31 s of a 2.1 s epoch)."""
    if amp != "bf16":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def tensor_hypers(opt: torch.optim.Optimizer, device) -> None:
    """Make each group's lr and betas device tensors (once), so schedulers fill them in place and
    a captured step reads the current values on every replay."""
    for g in opt.param_groups:
        if not isinstance(g["lr"], torch.Tensor):
            g["lr"] = torch.tensor(float(g["lr"]), device=device)
        if "betas" in g:
            b0, b1 = g["betas"]
            g["betas"] = tuple(b if isinstance(b, torch.Tensor) else torch.tensor(float(b), device=device)
                               for b in (b0, b1))
            g["_beta1"] = g["betas"][0]  # the tensor the graph reads; OneCycleLR replaces the tuple


def sync_hypers(opt: torch.optim.Optimizer) -> None:
    """After a scheduler step: a beta1 written back as a float (OneCycleLR's momentum cycle) goes
    into the tensor the graph reads."""
    for g in opt.param_groups:
        t = g.get("_beta1")
        if t is not None and g["betas"][0] is not t:
            t.fill_(float(g["betas"][0]))
            g["betas"] = (t, g["betas"][1])


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


class Step:
    """fit's step over one index batch: gather, train_step, and the metrics added into sums that
    stay on the device. ``run(idx)`` runs it eagerly or, once captured, by replay."""

    def __init__(self, model, batches, optimizers: dict, loss_fn: Callable, plan: Plan, *,
                 generators: tuple[torch.Generator, ...] = (), notice: Callable[[str], None] | None = None):
        self.model, self.batches, self.optimizers, self.loss_fn = model, batches, optimizers, loss_fn
        self.plan, self.generators = plan, generators
        self.notice = notice or (lambda line: print(f"mnistlab: {line}", file=sys.stderr))
        self.sums: dict[str, torch.Tensor] = {}
        self.graph = None
        self._static_idx: torch.Tensor | None = None
        self._steps = 0

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
        if self.graph is not None:
            if idx.shape != self._static_idx.shape:  # the last, smaller batch: the same step, eagerly
                return self(idx)
            self._static_idx.copy_(idx, non_blocking=True)
            self.graph.replay()
            return None
        if self._steps < WARMUP:
            self._steps += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self(idx)
            torch.cuda.current_stream().wait_stream(side)
            return None
        return self._capture(idx)

    def _capture(self, idx) -> None:
        self._static_idx = idx.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            for g in self.generators:
                if g.device.type == "cuda":
                    graph.register_generator_state(g)
            for opt in self.optimizers.values():
                opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                self(self._static_idx)
        except Exception as e:  # an op that syncs with the host, a shape that depends on data, ...
            torch.cuda.synchronize()
            self.plan = Plan("eager", self.plan.amp, f"capturing the step failed ({type(e).__name__}: "
                                                     f"{str(e).splitlines()[0][:160]}); running eagerly")
            self.notice(self.plan.why)
            self.graph = None
            self(idx)
            return
        self.graph = graph
        graph.replay()  # capturing ran nothing: this is the step for `idx`


def prepare_optimizers(optimizers: dict, plan: Plan, device) -> None:
    """What a static or captured step needs of its optimisers, set on built (or just loaded) ones:
    tensor hyper-parameters, and on CUDA the capturable update with its step counts on the device."""
    if plan.graph == "eager":
        return
    for opt in optimizers.values():
        # capturable on CUDA whether replayed or not: a tensor lr needs it there, and the same
        # kernels either way keep "captured equals uncaptured" a test of the capture alone
        if torch.device(device).type == "cuda":
            opt.defaults["capturable"] = True
            for g in opt.param_groups:
                g["capturable"] = True
                for p in g["params"]:
                    st = opt.state.get(p, {})
                    if isinstance(st.get("step"), torch.Tensor) and st["step"].device != p.device:
                        st["step"] = st["step"].to(p.device, torch.float32)
        tensor_hypers(opt, device)
