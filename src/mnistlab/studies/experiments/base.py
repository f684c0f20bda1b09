"""What every experiment's config has: the data section's fields, and the few training
settings its parts share (seed, device, threads, batch size, learning rate)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ... import runtime
from ...checks import check, check_count, check_ranges, check_threads, cpus, ranged
from ...config import MAX_BATCH, DataConfig, TrainConfig
from ...data.batches import Batches
from ...names import SEED_MAX


@dataclass
class ExperimentConfig(DataConfig):
    dataset: str = "mnist-sample"
    seed: int = ranged(0, 0, SEED_MAX)
    device: str = "auto"
    threads: int = ranged(0, 0, cpus, "this machine's CPUs; 0: torch's choice")
    batch_size: int = ranged(128, 1, MAX_BATCH)
    lr: float = ranged(1e-3, 1e-9, 10.0)

    def validate(self) -> None:
        check_ranges(self, "experiment")
        DataConfig.validate(self)
        check_count(self.batch_size, "experiment.batch_size", MAX_BATCH)
        check_threads(self.threads, "experiment.threads")
        check(self.lr > 0, "experiment.lr", "must be > 0", self.lr)
        check(0 <= self.seed <= SEED_MAX, "experiment.seed", "must be in 0..2^32-1", self.seed)

    def data_config(self) -> DataConfig:
        return DataConfig(**{k: getattr(self, k) for k in DataConfig.__dataclass_fields__})

    def train_config(self, epochs: int, seed_offset: int = 0, **kw) -> TrainConfig:
        return TrainConfig(
            epochs=epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed + seed_offset,
            device=self.device,
            threads=self.threads,
            **kw,
        )


def standardised(z_train: torch.Tensor, z_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets of codes scaled by the training codes' per-dimension mean and spread, so a
    probe is fair to any code scale."""
    mean, std = z_train.mean(0), z_train.std(0) + 1e-6
    return (z_train - mean) / std, (z_test - mean) / std


def probe_accuracy(
    probe: torch.nn.Module,
    a: torch.Tensor,
    y_train: torch.Tensor,
    b: torch.Tensor,
    y_test: torch.Tensor,
    *,
    lr: float,
    epochs: int,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """Train `probe` (Adam, cross-entropy) on codes `a` with labels `y_train`, full-batch or in
    shuffled batches of `batch_size`; its accuracy on the held-out codes `b`."""
    opt = runtime.optimizer(torch.optim.Adam, probe.parameters(), lr=lr)
    batches = (
        [(a, y_train)]
        if batch_size is None
        else Batches(a, y_train, batch_size=batch_size, device=a.device, images=False, generator=generator)
    )
    with torch.enable_grad():
        for _ in range(epochs):
            for za, ya in batches:
                loss = F.cross_entropy(probe(za), ya)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    with torch.inference_mode():
        return (probe(b).argmax(1) == y_test).float().mean().item()
