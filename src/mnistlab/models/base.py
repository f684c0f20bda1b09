"""The one contract every model keeps, so one training loop serves them all.

- ``forward(x)``: x is (B, 1, 28, 28) float in [0, 1]; returns what the model outputs
  (class logits, or a reconstruction in [0, 1]).
- ``loss(x, y) -> dict``: ``{"loss": scalar to minimise, **metrics}``; every value is a
  scalar tensor, a batch mean, left on the device (the loop reads them once per epoch).
- ``activations(x) -> list[(name, tensor)]``: intermediate outputs, for pictures.
- ``config``: the dataclass it was built from; with ``model_name`` it rebuilds the model.
- ``stages(train_config)``: how it is trained; one stage unless the model needs more
  (the encoder classifier trains frozen, then fine-tuned).

How a batch updates the weights is the model's too, with a default that fits nearly all:
``optimizers(make)`` names the optimisers and what each moves (default: one, every
trainable parameter) and ``train_step(x, y, optimizers, loss)`` spends one batch (default:
backward the loss, step). A model trained by coupled optimisers (pythae's
CoupledOptimizerTrainer, adversarial training) overrides both and still runs in the one
loop, with its checkpoints, progress, metrics rows and resumption. ``prepare(train)`` reads
the training data once before the first epoch (say, class priors), ``start_epoch(epoch)``
is told each epoch's number (say, a warm-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Stage:
    name: str
    train: Any  # TrainConfig for this stage
    setup: Callable[[], None] = lambda: None  # called before the stage trains


class Model(nn.Module):
    task: str = ""
    model_name: str = ""

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def from_config(cls, config, *, load_run=None):
        """Build from a config that may name other runs (``load_run`` reads them). A model
        built from another run overrides this; ``__init__`` only ever builds from the config."""
        return cls(config)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def activations(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} does not expose its activations")

    def optimizers(self, make: Callable[..., torch.optim.Optimizer]) -> dict[str, torch.optim.Optimizer]:
        """Name -> optimiser; ``make(params, lr_scale=1.0)`` builds one as the train config says.
        The first is the main one (its learning rate is logged)."""
        return {"main": make([p for p in self.parameters() if p.requires_grad])}

    def train_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        loss: Callable[[torch.Tensor, torch.Tensor], dict],
    ) -> dict[str, torch.Tensor]:
        """Spend one batch; return its loss dict. `loss` is ``self.loss``, maybe compiled and
        under autocast: use it rather than calling ``self.loss``."""
        out = loss(x, y)
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out

    def prepare(self, train) -> None:
        """Called once with the training Split before training (or resuming) starts."""

    def start_epoch(self, epoch: int) -> None:
        """Called with each epoch's number (from 1) before its first batch."""

    def stages(self, train) -> list[Stage]:
        return [Stage("train", train)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
