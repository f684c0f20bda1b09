"""A model's summary, as Keras' ``model.summary()`` prints it: each layer on the forward path
with its output shape, its parameters and multiply-adds for one digit, trainable or frozen,
and the totals; for a model trained in stages (the encoder classifier), what each stage trains.

    from mnistlab import summary
    print(summary("cnn"))                  # the classic convnet: 34,826 parameters
    summary(load_run("runs/x").model).to_dict()

From the command line: ``mnistlab summary cnn`` or ``mnistlab summary RUN_DIR [--json]``.
The shapes come from one real forward pass of a blank 28x28 digit (hooks on every leaf module),
so they are the model's own, whatever its settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class Layer:
    name: str  # as in the model's state dict: conv1, features.0.conv, ...
    kind: str  # the module's type: Conv2d, MaxPool2d, Linear, ...
    output: tuple[int, ...]  # the output's shape for one digit (no batch axis)
    params: int
    trainable: str  # "trainable", "frozen", "partly frozen" or "" (no parameters)
    mult_adds: int  # for one digit
    note: str = ""  # what a reader should know: dropout does nothing once trained


@dataclass
class ModelSummary:
    model: str
    layers: list[Layer]
    params: int
    trainable: int
    mult_adds: int
    off_path: int = 0  # parameters of modules the forward pass does not call (an adversary's heads)
    stages: list[dict] = field(default_factory=list)  # [{"stage", "trainable", "frozen"}] when trained in stages

    @property
    def frozen(self) -> int:
        return self.params - self.trainable

    def to_dict(self) -> dict:
        """Plain JSON data (shapes as lists)."""
        d = {**asdict(self), "frozen": self.frozen}
        for layer in d["layers"]:
            layer["output"] = list(layer["output"])
        return d

    def __str__(self) -> str:
        head = ("layer (type)", "output shape", "params", "mult-adds", "")
        rows = [
            (
                f"{r.name} ({r.kind})",
                "x".join(map(str, r.output)) or "-",
                f"{r.params:,}",
                f"{r.mult_adds:,}",
                "; ".join(x for x in (r.trainable, r.note) if x),
            )
            for r in self.layers
        ]
        widths = [max(len(x) for x in col) for col in zip(head, *rows)]
        line = "-" * (sum(widths) + 2 * (len(widths) - 1))
        fmt = lambda row: "  ".join(  # noqa: E731
            x.rjust(w) if i in (2, 3) else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths))
        ).rstrip()
        out = [f"{self.model}", line, fmt(head), line, *map(fmt, rows), line]
        out.append(f"parameters: {self.params:,} ({self.trainable:,} trainable, {self.frozen:,} frozen)")
        if self.off_path:
            out.append(f"  of which {self.off_path:,} in modules the forward pass does not call (trained apart)")
        out.append(f"multiply-adds for one digit: {self.mult_adds:,}")
        for s in self.stages:
            out.append(f"stage {s['stage']!r}: {s['trainable']:,} parameters trained, {s['frozen']:,} frozen")
        return "\n".join(out)


NOTES = {
    "Dropout": "training only: passes its input through at inference",
    "Dropout2d": "training only: passes its input through at inference",
    "BatchNorm2d": "at inference: a fixed scale and shift per channel",
    "BatchNorm1d": "at inference: a fixed scale and shift per unit",
}


def _mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of one call for one digit: a convolution's output elements times its
    kernel's inputs (in channels per group x kernel area), a dense layer's outputs times its inputs."""
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = module.in_channels // module.groups
        for k in module.kernel_size:
            kernel *= k
        return output[0].numel() * kernel
    if isinstance(module, nn.Linear):
        return output[0].numel() * module.in_features
    return 0


def _trainable(params: list[nn.Parameter]) -> str:
    if not params:
        return ""
    on = sum(p.requires_grad for p in params)
    return "trainable" if on == len(params) else "frozen" if on == 0 else "partly frozen"


def summary(model) -> ModelSummary:
    """The summary of a model (an ``nn.Module`` taking (N, 1, 28, 28)) or of a registered
    model's preset, by name."""
    if isinstance(model, str):
        from .models import create_model

        model = create_model(model)
    layers: list[Layer] = []
    called: set[int] = set()

    def hook(name):
        def record(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                return
            own = list(module.parameters(recurse=False))
            first = id(module) not in called  # a module called twice counts its weights once
            called.add(id(module))
            layers.append(
                Layer(
                    name,
                    type(module).__name__,
                    tuple(output.shape[1:]),
                    sum(p.numel() for p in own) if first else 0,
                    _trainable(own),
                    _mult_adds(module, output),
                    NOTES.get(type(module).__name__, ""),
                )
            )

        return record

    # leaf modules, less the placeholders (an Identity where a BatchNorm could be) that do nothing
    leaves = [
        (n, m) for n, m in model.named_modules() if n and not list(m.children()) and not isinstance(m, nn.Identity)
    ]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    was_training = model.training
    try:
        device = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    params = list(model.parameters())
    on_path = sum(r.params for r in layers)
    return ModelSummary(
        getattr(model, "model_name", "") or type(model).__name__,
        layers,
        sum(p.numel() for p in params),
        sum(p.numel() for p in params if p.requires_grad),
        sum(r.mult_adds for r in layers),
        off_path=sum(p.numel() for p in params) - on_path,
        stages=_stages(model),
    )


def _stages(model) -> list[dict]:
    """What each training stage trains, for a model trained in more than one (each stage's
    set-up run, then the model's own flags put back)."""
    if not hasattr(model, "stages"):
        return []
    from .config import TrainConfig

    try:
        stages = model.stages(TrainConfig())
    except Exception:  # a model whose stages need its training data: none shown
        return []
    if len(stages) < 2:
        return []
    flags = [p.requires_grad for p in model.parameters()]
    out = []
    try:
        for s in stages:
            s.setup()
            on = sum(p.numel() for p in model.parameters() if p.requires_grad)
            out.append({"stage": s.name, "trainable": on, "frozen": model.num_parameters() - on})
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return out
