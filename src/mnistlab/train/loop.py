"""The one training loop for every model: ``fit``, and the optimiser, schedule and state it keeps.

The data stay whole on the device as uint8 (N, 28, 28); each step gathers a batch by
index and converts only that batch to float. The loop reads the model's loss dict and
keeps running sums on the device, so nothing forces a host sync inside the step loop
(a progress bar on a terminal reads them every few steps). ``fit(model, train, evals, cfg,
on_epoch=...)`` returns one metrics row an epoch; ``on_epoch(row, state)`` is where a run
records it (``train.run``), and ``state.state_dict()`` resumes the fit exactly.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import distributed, runtime
from ..config import TrainConfig
from ..data.batches import Batches
from ..data.splits import Split
from ..errors import DivergedError
from ..infer import evaluate
from . import steps


def make_optimizer(params, cfg: TrainConfig, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """The configured torch optimiser; until something compiles it does not import
    torch._dynamo (2 s of a short run's start-up), with the same updates (runtime.plain_optimizer)."""
    lr = cfg.lr * lr_scale
    make = runtime.optimizer
    factories = {
        "adam": lambda: make(torch.optim.Adam, params, lr=lr, weight_decay=cfg.weight_decay),
        "adamw": lambda: make(torch.optim.AdamW, params, lr=lr, weight_decay=cfg.weight_decay),
        "sgd": lambda: make(
            torch.optim.SGD,
            params,
            lr=lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0,
        ),
    }
    return factories[cfg.optimizer]()


def make_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    total = max(1, steps_per_epoch * cfg.epochs)
    factories = {
        "none": lambda: None,
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[float(g["lr"]) for g in opt.param_groups], total_steps=total
        ),
        "cosine": lambda: steps.CosineSchedule(opt, total),
    }
    return factories[cfg.schedule]()


def progress_bar(total: int, desc: str, enabled: bool | None):
    try:  # a notebook's widget bar needs ipywidgets; without it tqdm.auto only warns
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm

    # disable=None lets tqdm turn itself off when stderr is not a terminal (CI logs).
    return tqdm(
        total=total,
        desc=desc,
        leave=True,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None if enabled is None else not enabled,
    )


POSTFIX = 4  # figures beside the bar: the line stays within an 80-column terminal


def _postfix(values: dict[str, float]) -> dict[str, str]:
    """The bar's figures: loss, accuracy and error first, at most POSTFIX of them, short."""
    first = sorted(values, key=lambda k: (not k.endswith(("loss", "acc", "mse")), list(values).index(k)))
    return {k: f"{values[k]:.4g}" for k in first[:POSTFIX]}


def _compiled(fn):
    """torch.compile `fn`, falling back to eager (with one notice) if compiling or running fails."""
    try:
        compiled = torch.compile(fn)
    except Exception as e:  # no compiler toolchain, unsupported platform, ...
        print(f"mnistlab: torch.compile unavailable ({type(e).__name__}); running eagerly", file=sys.stderr)
        return fn
    state = {"fn": compiled}

    def call(*args):
        try:
            return state["fn"](*args)
        except Exception as e:
            if state["fn"] is fn:
                raise
            print(f"mnistlab: torch.compile failed ({type(e).__name__}); running eagerly", file=sys.stderr)
            state["fn"] = fn
            return fn(*args)

    return call


@dataclass
class TrainState:
    """Where a fit stands after an epoch: all it needs to go on exactly as if never stopped."""

    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    generators: dict[str, torch.Generator]  # data order and augmentation
    epoch: int
    plan: steps.Plan | None = None  # how the steps ran, once settled (steps.Step.ran); None before

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The main (first) optimiser."""
        return next(iter(self.optimizers.values()))

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "optimizers": {k: steps.float_hypers(o.state_dict()) for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "rng": torch.get_rng_state(),  # dropout masks draw from the global generator
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: dict) -> None:
        opts = state.get("optimizers") or {"main": state["optimizer"]}  # older checkpoints: one optimiser
        scheds = state.get("schedulers") or ({"main": state["scheduler"]} if state.get("scheduler") else {})
        for k, o in self.optimizers.items():
            o.load_state_dict(opts[k])
        for k, s in self.schedulers.items():
            if k in scheds:
                s.load_state_dict(scheds[k])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = int(state["epoch"])


@dataclass
class StepInfo:
    """Where a fit stands inside an epoch, for ``on_step`` (a live view): the running sums of
    the model's loss dict over the `seen` images of this epoch, on the device."""

    model: torch.nn.Module
    epoch: int
    epochs: int
    step: int  # batches done this epoch
    steps: int  # batches in an epoch
    seen: float
    sums: dict[str, torch.Tensor]

    def means(self) -> dict[str, float]:
        """This epoch's running means so far (loss, acc, mse, ...): reading them syncs the device."""
        return {k: (v / self.seen).item() for k, v in self.sums.items()} if self.seen else {}


def fit(
    model,
    train: Split,
    evals: dict[str, Split],
    cfg: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict, TrainState], None] | None = None,
    on_step: Callable[[StepInfo], bool | None] | None = None,
    step_every: int = 5,
    progress: bool | None = None,
    resume: dict | None = None,
    desc: str = "epoch",
) -> list[dict]:
    """Train `model` on `train`, evaluating on each split of `evals` after every epoch.

    The model decides how a batch is spent (``optimizers`` and ``train_step``, see
    models/base.py): one optimiser for most, coupled ones for adversarial or alternating
    training. Returns one metrics row per epoch; `on_epoch(row, state)` is called after each
    (its ``state.state_dict()`` resumes the fit) and may return True to stop early. `resume`,
    such a state dict, goes on from the epoch after it, with the weights already in `model`.
    `on_step(StepInfo)` is called every `step_every` batches and after an epoch's last (a live
    view draws there); returning True stops the fit at once: the epoch so far is evaluated and
    recorded (its row says ``"stopped": True``) and no other begins.
    """
    device = torch.device(device)
    runtime.keep_freed_memory()  # page faults were a third of a CPU step (runtime.py)
    # Channels-last is faster for these convnets on CPU as on CUDA (measured: 1.4-2x per
    # CPU training step, mostly in max-pooling and convolution backward), so auto = on.
    channels_last = cfg.channels_last != "off"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    model.prepare(train)
    # Under torchrun every rank draws the same order and takes its share of each batch.
    ctx = distributed.current()
    how = steps.plan(model, cfg, device, distributed=ctx.active)
    if how.why and ctx.main:
        print(f"mnistlab: {how.why}", file=sys.stderr)
    gen = torch.Generator().manual_seed(cfg.seed)
    # On CUDA augmentation draws on the device (no host round trip; a captured step needs it).
    aug_gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(
        cfg.seed + 1 + 7919 * ctx.rank
    )
    batches = Batches(
        train.images,
        train.labels,
        batch_size=cfg.batch_size,
        device=device,
        generator=gen,
        limit=cfg.limit_batches,
        augment=cfg.augment,
        aug_generator=aug_gen,
        memory_format=fmt,
        shard=(ctx.rank, ctx.world) if ctx.active else None,
    )
    evals = {name: split.to(device) for name, split in evals.items()}  # once, not every epoch
    opts = model.optimizers(lambda params, lr_scale=1.0: make_optimizer(params, cfg, lr_scale))
    scheds = {k: s for k, o in opts.items() if (s := make_scheduler(o, cfg, len(batches))) is not None}
    steps.prepare_optimizers(opts, how, device)
    compiled = _compiled(model.loss) if cfg.compile else model.loss
    step_opts, step_loss = distributed.wrap(model, opts, compiled, ctx, device) if ctx.active else (opts, compiled)
    state = TrainState(opts, scheds, {"data": gen, "augment": aug_gen}, 0)
    if resume is not None:
        state.load_state_dict(resume)
        steps.prepare_optimizers(opts, how, device)  # loading gave back plain floats
    if ctx.rank:  # dropout masks of their own on the other ranks
        torch.manual_seed(cfg.seed + 7919 * ctx.rank + state.epoch)
    shard = (ctx.rank, ctx.world) if ctx.active else None
    if ctx.active:
        on_step = None  # a live view watches one process; ranks that stopped apart would hang the others
    step = steps.Step(
        model,
        batches,
        step_opts,
        step_loss,
        how,
        device=device,
        generators=(aug_gen,),
        eager_amp=steps.precision(model, cfg, device.type == "cuda", "eager"),
    )
    history = []
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        model.train()
        model.start_epoch(epoch)
        t0 = time.perf_counter()
        step.start_epoch()
        seen: float = 0
        stopped = False
        bar = progress_bar(len(batches), f"{desc} {epoch}/{cfg.epochs}", progress if ctx.main else False)
        for i, idx in enumerate(batches.indices()):
            step.run(idx)
            for sched in scheds.values():
                sched.step()
            step.after_schedule()
            seen += len(idx)  # shuffled: index tensors
            bar.update(1)
            if not bar.disable and (i % 10 == 0 or i == len(batches) - 1):
                bar.set_postfix(_postfix({k: (v / seen).item() for k, v in step.sums.items()}))
            if on_step is not None and ((i + 1) % step_every == 0 or i == len(batches) - 1):
                info = StepInfo(model, epoch, cfg.epochs, i + 1, len(batches), seen, step.sums)
                if on_step(info):
                    stopped = True
                    break
        sums = dict(step.sums)
        if ctx.active:  # the epoch's sums over every rank's share
            keys = sorted(sums)
            *totals, seen_t = distributed.sum_tensors(
                [*(sums[k] for k in keys), torch.tensor(float(seen), device=device)]
            )
            sums, seen = dict(zip(keys, totals)), seen_t.item()
        row = {"epoch": epoch, **{f"train_{k}": (v / seen).item() for k, v in sums.items()}}
        if not math.isfinite(row.get("train_loss", 0.0)):
            raise DivergedError(
                f"training diverged: the loss is {row['train_loss']} in epoch {epoch} "
                f"(lr {cfg.lr:g}); lower the learning rate. The run stays unfinished"
            )
        row["train_time_s"] = round(time.perf_counter() - t0, 3)
        if stopped:
            row["stopped"] = True
        row["lr"] = float(state.optimizer.param_groups[0]["lr"])
        for name, split in evals.items():
            row.update({f"{name}_{k}": v for k, v in evaluate(model, split, cfg.eval_batch_size, shard).items()})
        if not bar.disable:
            bar.set_postfix(
                _postfix({k: v for k, v in row.items() if k.endswith(("loss", "acc", "mse")) and isinstance(v, float)})
            )
        bar.close()
        history.append(row)
        state.epoch = epoch
        state.plan = step.ran or (
            steps.Plan("eager", step.plan.amp, "the fit ended before a full batch could be captured")
            if epoch == cfg.epochs
            else None
        )
        stop = bool(on_epoch(row, state)) if on_epoch is not None else False
        stop = stop or stopped
        if ctx.active:
            stop = distributed.agree(stop, device)  # rank 0 keeps the record and decides
        if stop:
            break  # the callback asked to stop (e.g. a target accuracy was reached)
    # Back to the default layout, so the trained model computes exactly as one rebuilt from
    # its checkpoint does.
    model.to(memory_format=torch.contiguous_format)
    model.zero_grad(set_to_none=True)
    return history
