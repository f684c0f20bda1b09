"""What every experiment's config has: the data section's fields, and the few training
settings its parts share (seed, device, threads, batch size, learning rate)."""
from __future__ import annotations

from dataclasses import dataclass

from ..checks import check
from ..config import DataConfig, TrainConfig


@dataclass
class ExperimentConfig(DataConfig):
    dataset: str = "mnist-sample"
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    batch_size: int = 128
    lr: float = 1e-3

    def validate(self) -> None:
        DataConfig.validate(self)
        check(self.batch_size >= 1, "experiment.batch_size", "must be >= 1", self.batch_size)
        check(self.lr > 0, "experiment.lr", "must be > 0", self.lr)
        check(0 <= self.seed < 2 ** 31, "experiment.seed", "must be in 0..2^31-1", self.seed)

    def data_config(self) -> DataConfig:
        return DataConfig(**{k: getattr(self, k) for k in DataConfig.__dataclass_fields__})

    def train_config(self, epochs: int, seed_offset: int = 0, **kw) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed + seed_offset,
                           device=self.device, threads=self.threads, **kw)
