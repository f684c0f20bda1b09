"""Autoencoders: three families, every registered name a preset of one of them.

- ``DenseAE``: 784 -> [hidden] -> code -> [hidden] -> 784.
- ``ConvAE``: conv16-pool-conv4-pool (code 4x7x7 = 196, a quarter of the image), decoded by
  transposed convolutions or by nearest-neighbour upsampling + convolution.
- ``ConvCodeAE``: a conv encoder squeezed through a small linear code (3-D, 2-D, a 4x4 image).
- ``ConvBNAE``: configurable conv-BatchNorm "sets"; the decoder mirrors the encoder.

All take and return (B, 1, 28, 28) in [0, 1] (sigmoid output), expose ``encode``/``decode``
and ``encoder`` (an nn.Module that other models can reuse), and share one loss: MSE by
default or BCE, with optional input noise for denoising (the target stays clean).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check, ranged
from ._registry import register_model
from .base import Model
from .layers import ACTIVATIONS, ConvNormAct, init_linear_normal

AE_TRAIN = {"epochs": 20, "val_fraction": 0.2, "batch_size": 32}
LOSSES = ("mse", "bce")


def _check_common(cfg) -> None:
    check(cfg.loss in LOSSES, "model.loss", f"must be one of {LOSSES}", cfg.loss)
    check(0 <= cfg.noise <= 1, "model.noise", "must be in [0, 1]", cfg.noise)
    for key in ("act", "code_act"):  # every autoencoder has act; some also code_act
        if hasattr(cfg, key):
            check(
                getattr(cfg, key) in ACTIVATIONS,
                f"model.{key}",
                f"must be one of {tuple(ACTIVATIONS)}",
                getattr(cfg, key),
            )
    if hasattr(cfg, "channels"):
        check(
            len(cfg.channels) == 2 and min(cfg.channels) >= 1,
            "model.channels",
            "must be two positive filter counts",
            cfg.channels,
        )


class Autoencoder(Model):
    task = "reconstruct"
    encoder: nn.Module
    decoder: nn.Module

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))

    @functools.cached_property
    def code_shape(self) -> tuple[int, ...]:
        """The code's shape for one image, found once by encoding a blank image."""
        with torch.no_grad():
            was = self.training
            self.eval()
            z = self.encode(torch.zeros(1, 1, 28, 28, device=next(self.parameters()).device))
            self.train(was)
        return tuple(z.shape[1:])

    def loss(self, x, y=None):
        noisy = x
        if self.training and self.config.noise > 0:
            noisy = (x + self.config.noise * torch.randn_like(x)).clamp_(0, 1)
        recon = self(noisy)
        mse = F.mse_loss(recon, x)
        if self.config.loss == "bce":
            return {"loss": F.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x), "mse": mse.detach()}
        return {"loss": mse, "mse": mse.detach()}

    def activations(self, x):
        z = self.encode(x)
        return [("input", x), ("code", z), ("output", self.decode(z))]


# ---------------------------------------------------------------- dense


@dataclass
class DenseAEConfig:
    code: int = ranged(32, 1, 4096)
    hidden: tuple[int, ...] = ranged((), 1, 16_384)
    code_act: str = "relu"  # the code layer's activation; 'none' for a linear code
    init: str = "normal"  # 'normal': weights ~ N(0, 1/fan_in), biases 0; 'default': PyTorch's
    act: str = "relu"
    loss: str = "mse"
    noise: float = ranged(0.0, 0.0, 1.0)

    def validate(self) -> None:
        check(self.code >= 1, "model.code", "must be >= 1", self.code)
        check(self.init in ("normal", "default"), "model.init", "must be normal or default", self.init)
        _check_common(self)


class DenseAE(Autoencoder):
    def __init__(self, config: DenseAEConfig):
        super().__init__(config)
        act = ACTIVATIONS[config.act]
        sizes = [784, *config.hidden]
        enc: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes, sizes[1:]):
            enc += [nn.Linear(a, b), act()]
        enc += [nn.Linear(sizes[-1], config.code), ACTIVATIONS[config.code_act]()]  # (B, code)
        dec: list[nn.Module] = []
        back = [config.code, *reversed(config.hidden)]
        for a, b in zip(back, back[1:]):
            dec += [nn.Linear(a, b), act()]
        dec += [nn.Linear(back[-1], 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28))]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        if config.init == "normal":
            self.apply(init_linear_normal)


# ---------------------------------------------------------------- conv, 4x7x7 code


@dataclass
class ConvAEConfig:
    channels: tuple[int, ...] = ranged((16, 4), 1, 1024)
    decoder: str = "transpose"  # 'transpose' (ConvTranspose2d stride 2) or 'upsample' (nearest + conv)
    # Leaky: with only 4 code channels, plain ReLU units die and some seeds collapse to a
    # constant output (test MSE ~0.11); LeakyReLU(0.1) keeps every seed training.
    act: str = "leaky"
    loss: str = "mse"
    noise: float = ranged(0.0, 0.0, 1.0)

    def validate(self) -> None:
        check(self.decoder in ("transpose", "upsample"), "model.decoder", "must be transpose or upsample", self.decoder)
        _check_common(self)


class ConvAE(Autoencoder):
    def __init__(self, config: ConvAEConfig):
        super().__init__(config)
        act = ACTIVATIONS[config.act]
        c1, c2 = config.channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            act(),
            nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=1),
            act(),
            nn.MaxPool2d(2),  # (B, 4, 7, 7)
        )
        if config.decoder == "transpose":
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(c2, c1, 2, stride=2),
                act(),  # (B, 16, 14, 14)
                nn.ConvTranspose2d(c1, 1, 2, stride=2),
                nn.Sigmoid(),  # (B, 1, 28, 28)
            )
        else:
            self.decoder = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c2, c1, 3, padding=1),
                act(),  # (B, 16, 14, 14)
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c1, 1, 3, padding=1),
                nn.Sigmoid(),
            )


# ---------------------------------------------------------------- conv with a small linear code


@dataclass
class ConvCodeAEConfig:
    code_shape: tuple[int, ...] = ranged((3,), 1, 4096)  # (3,) a 3-D code; (1, 4, 4) a 4x4 single-channel image
    channels: tuple[int, ...] = ranged((32, 64), 1, 1024)
    hidden: int = ranged(256, 1, 16_384)
    code_act: str = "none"  # 'sigmoid' keeps a code image in [0, 1]
    act: str = "relu"
    loss: str = "mse"
    noise: float = ranged(0.0, 0.0, 1.0)

    def validate(self) -> None:
        check(
            len(self.code_shape) in (1, 3) and min(self.code_shape) >= 1,
            "model.code_shape",
            "must be (n,) or (channels, height, width)",
            self.code_shape,
        )
        check(self.hidden >= 1, "model.hidden", "must be >= 1", self.hidden)
        _check_common(self)


class ConvCodeAE(Autoencoder):
    def __init__(self, config: ConvCodeAEConfig):
        super().__init__(config)
        act = ACTIVATIONS[config.act]
        c1, c2 = config.channels
        n_code = math.prod(config.code_shape)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1),
            act(),  # (B, 32, 14, 14)
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            act(),  # (B, 64, 7, 7)
            nn.Flatten(),
            nn.Linear(c2 * 49, config.hidden),
            act(),
            nn.Linear(config.hidden, n_code),
            ACTIVATIONS[config.code_act](),  # (B, n_code)
            nn.Unflatten(1, tuple(config.code_shape)),  # (B, 3) or (B, 1, 4, 4)
        )
        self.decoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(n_code, config.hidden),
            act(),
            nn.Linear(config.hidden, c2 * 49),
            act(),
            nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            act(),  # (B, 32, 14, 14)
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),
            nn.Sigmoid(),  # (B, 1, 28, 28)
        )


# ---------------------------------------------------------------- conv-BatchNorm sets


@dataclass
class ConvBNAEConfig:
    filters: tuple[int, ...] = ranged((32, 64, 64), 1, 1024)
    kernels: tuple[int, ...] = ranged((3, 3, 3), 1, 27)
    pool7: bool = False  # a 7x7 max-pool after the third set (code 1x1 per filter)
    act: str = "relu"
    loss: str = "mse"
    noise: float = ranged(0.0, 0.0, 1.0)

    def validate(self) -> None:
        check(
            len(self.filters) >= 2 and min(self.filters) >= 1,
            "model.filters",
            "must be at least two positive filter counts",
            self.filters,
        )
        check(
            len(self.kernels) == len(self.filters),
            "model.kernels",
            f"must give one kernel size per set ({len(self.filters)})",
            self.kernels,
        )
        check(all(k % 2 == 1 for k in self.kernels), "model.kernels", "must be odd (for 'same' padding)", self.kernels)
        check(not self.pool7 or len(self.filters) >= 3, "model.pool7", "needs at least three sets", self.pool7)
        _check_common(self)


class ConvBNAE(Autoencoder):
    """Encoder: set i = Conv(same) + BatchNorm + act; MaxPool 2 after sets 1 and 2, MaxPool 7
    after set 3 when ``pool7``. Decoder: the sets in reverse order, each followed by the
    upsampling that undoes the pooling of its mirror, then a 3x3 conv to one channel."""

    def __init__(self, config: ConvBNAEConfig):
        super().__init__(config)
        act = ACTIVATIONS[config.act]
        pools = {0: 2, 1: 2, **({2: 7} if config.pool7 else {})}
        enc: list[nn.Module] = []
        c_in = 1
        for i, (f, k) in enumerate(zip(config.filters, config.kernels)):
            enc.append(ConvNormAct(c_in, f, k, act))
            if i in pools:
                enc.append(nn.MaxPool2d(pools[i]))  # 28 -> 14 -> 7 (-> 1)
            c_in = f
        dec: list[nn.Module] = []
        for i in reversed(range(len(config.filters))):
            dec.append(ConvNormAct(c_in, config.filters[i], config.kernels[i], act))
            if i in pools:
                dec.append(nn.Upsample(scale_factor=pools[i], mode="nearest"))  # (1 ->) 7 -> 14 -> 28
            c_in = config.filters[i]
        dec += [nn.Conv2d(c_in, 1, 3, padding=1), nn.Sigmoid()]  # (B, 1, 28, 28)
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)


# ---------------------------------------------------------------- presets

register_model(
    "ae-dense",
    DenseAE,
    DenseAEConfig(),
    task="reconstruct",
    train=AE_TRAIN,
    description="784 -> 32 (ReLU) -> 784, normal(1/sqrt(fan_in)) init",
)
register_model(
    "ae-convtranspose",
    ConvAE,
    ConvAEConfig(decoder="transpose"),
    task="reconstruct",
    train=AE_TRAIN,
    description="conv16-pool-conv4-pool (code 4x7x7), ConvTranspose2d decoder",
)
register_model(
    "ae-upsample",
    ConvAE,
    ConvAEConfig(decoder="upsample"),
    task="reconstruct",
    train=AE_TRAIN,
    description="conv16-pool-conv4-pool (code 4x7x7), nearest upsample + conv decoder",
)
register_model(
    "ae-code3d",
    ConvCodeAE,
    ConvCodeAEConfig(code_shape=(3,)),
    task="reconstruct",
    train=AE_TRAIN,
    description="conv encoder -> 3-D linear code -> conv-transpose decoder",
)
register_model(
    "ae-code2d",
    ConvCodeAE,
    ConvCodeAEConfig(code_shape=(2,)),
    task="reconstruct",
    train=AE_TRAIN,
    description="conv encoder -> 2-D linear code (decoded grid over the plane)",
)
register_model(
    "ae-code4x4",
    ConvCodeAE,
    ConvCodeAEConfig(code_shape=(1, 4, 4)),
    task="reconstruct",
    train=AE_TRAIN,
    description="conv encoder -> 4x4 single-channel code image",
)
register_model(
    "ae-convbn",
    ConvBNAE,
    ConvBNAEConfig(),
    task="reconstruct",
    train=AE_TRAIN,
    description="configurable conv-BatchNorm sets, pools after sets 1-2 (opt. 7x7 after 3), mirrored",
)
