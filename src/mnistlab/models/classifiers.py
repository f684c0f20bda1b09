"""Digit classifiers. ``cnn`` is the classic Keras MNIST convnet:
conv32-pool-conv64-pool-dropout-dense."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from ..config import _check
from ..registry import register_model
from .base import Model

# MNIST pixel mean and std, for standardising inputs inside the model.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Classifier(Model):
    task = "classify"

    def loss(self, x, y):
        logits = self(x)
        return {"loss": F.cross_entropy(logits, y),
                "acc": (logits.argmax(1) == y).float().mean()}


@dataclass
class CNNConfig:
    channels: tuple[int, ...] = (32, 64)
    kernel: int = 3
    dropout: float = 0.5
    num_classes: int = 10

    def validate(self) -> None:
        _check(len(self.channels) == 2 and min(self.channels) >= 1, "model.channels",
               "must be two positive filter counts", self.channels)
        _check(self.kernel in (3, 5), "model.kernel", "must be 3 or 5", self.kernel)
        _check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)", self.dropout)
        _check(self.num_classes >= 2, "model.num_classes", "must be >= 2", self.num_classes)


class CNN(Classifier):
    """Two valid convolutions with max-pooling, dropout, one dense layer."""

    def __init__(self, config: CNNConfig):
        super().__init__(config)
        c1, c2 = config.channels
        k = config.kernel
        side = ((28 - k + 1) // 2 - k + 1) // 2  # 5 for k=3
        self.conv1 = nn.Conv2d(1, c1, k)  # (B, 32, 26, 26)
        self.pool1 = nn.MaxPool2d(2)  # (B, 32, 13, 13)
        self.conv2 = nn.Conv2d(c1, c2, k)  # (B, 64, 11, 11)
        self.pool2 = nn.MaxPool2d(2)  # (B, 64, 5, 5)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(c2 * side * side, config.num_classes)  # (B, 1600) -> (B, 10)

    def forward(self, x):
        return self._run(x)[-1][1]

    def activations(self, x):
        return self._run(x)

    def _run(self, x):
        out = [("input", x)]
        x = (x - MNIST_MEAN) / MNIST_STD
        for name, layer in (("conv1", self.conv1), ("pool1", self.pool1),
                            ("conv2", self.conv2), ("pool2", self.pool2)):
            x = layer(x)
            if name.startswith("conv"):
                x = F.relu(x)
            out.append((name, x))
        x = x.flatten(1)
        out.append(("flatten", x))
        x = self.dropout(x)
        out.append(("dropout", x))
        out.append(("dense", self.fc(x)))
        return out


register_model("cnn", CNN, CNNConfig(), task="classify", train={"epochs": 8},
               description="classic conv32-pool-conv64-pool-dropout-dense (1600 -> 10)")
