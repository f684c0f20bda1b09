"""The one contract every model keeps, so one training loop serves them all.

- ``forward(x)``: x is (B, 1, 28, 28) float in [0, 1]; returns what the model outputs
  (class logits, or a reconstruction in [0, 1]).
- ``loss(x, y) -> dict``: ``{"loss": scalar to minimise, **metrics}``; every value is a
  scalar tensor, a batch mean, left on the device (the loop reads them once per epoch).
- ``activations(x) -> list[(name, tensor)]``: intermediate outputs, for pictures.
- ``config``: the dataclass it was built from; with ``model_name`` it rebuilds the model.
- ``stages(train_config)``: how it is trained; one stage unless the model needs more
  (the encoder classifier trains frozen, then fine-tuned).
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

    def stages(self, train) -> list[Stage]:
        return [Stage("train", train)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
