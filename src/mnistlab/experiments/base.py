"""What every experiment's config has."""
from __future__ import annotations

from dataclasses import dataclass

from ..checks import check
from ..config import TrainConfig


@dataclass
class ExperimentConfig:
    dataset: str = "mnist-sample"
    data_dir: str | None = None
    train_images: str | None = None
    train_labels: str | None = None
    test_images: str | None = None
    test_labels: str | None = None
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    batch_size: int = 128
    lr: float = 1e-3

    def validate(self) -> None:
        from ..data import AUTO, DATASETS, FROM_FILES

        names = (*DATASETS, AUTO) + ((FROM_FILES,) if self.train_images else ())
        check(self.dataset in names, "experiment.dataset", f"must be one of {names}", self.dataset)
        check(self.batch_size >= 1, "experiment.batch_size", "must be >= 1", self.batch_size)
        check(self.lr > 0, "experiment.lr", "must be > 0", self.lr)

    def train_config(self, epochs: int, seed_offset: int = 0, **kw) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed + seed_offset,
                           device=self.device, **kw)
