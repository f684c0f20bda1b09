"""What a dataset is once read: splits of uint8 images (N, 28, 28) and int64 labels, held whole;
a dataset (its two splits, class names and where it came from); one digit picked by id."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError

DIGITS = tuple(str(d) for d in range(10))


@dataclass
class Split:
    """One split held whole: images (N, 28, 28) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index) -> Split:
        return Split(self.images[index], self.labels[index])

    def to(self, device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    source: str  # where it was read from, for the run record

    def split(self, train: bool) -> Split:
        return self.train if train else self.test

    def split_validation(self, fraction: float, seed: int = 0) -> tuple[Split, Split]:
        """Carve a validation split off the training set with a fixed seed."""
        n = len(self.train)
        n_val = int(round(n * fraction))
        if not 0 < n_val < n:
            raise DataError(f"validation fraction {fraction} leaves no train or no validation digits")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.train.subset(perm[n_val:]), self.train.subset(perm[:n_val])


UNLABELLED = -1  # the label of every image when no labels were given (autoencoders need none)


def is_labelled(split: Split) -> bool:
    return bool(len(split)) and bool((split.labels != UNLABELLED).all())


@dataclass(frozen=True)
class Digit:
    """One dataset image picked by id, with where it came from."""

    image: np.ndarray  # (28, 28) uint8
    label: str | None  # its class name; None for unlabelled images
    index: int
    split: str  # "train" or "test"
    dataset: str

    @property
    def name(self) -> str:
        return f"{self.dataset} {self.split} #{self.index}"


def pick_digit(ds: Dataset, train: bool = False, index: int | None = None) -> Digit:
    """The image `index` of a split (a random one when None); an id out of range is an error."""
    split = ds.split(train)
    if index is None:
        index = int(np.random.default_rng().integers(len(split)))
    if not 0 <= index < len(split):
        raise DataError(
            f"id {index} out of range: {ds.name} {'train' if train else 'test'} has ids 0..{len(split) - 1}"
        )
    label = int(split.labels[index])
    return Digit(
        split.images[index].numpy(),
        ds.classes[label] if label != UNLABELLED else None,
        index,
        "train" if train else "test",
        ds.name,
    )


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float in [0, 1], on the images' device."""
    return images.unsqueeze(1).float().div_(255.0)
