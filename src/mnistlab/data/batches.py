"""One batcher for every loop: training, evaluation, inference, the experiments' probes.

The tensors stay whole on the device (images as uint8 (N, 28, 28): a quarter of float's
memory and bandwidth); each epoch is a list of index batches, shuffled by a seeded
generator, or in order for inference. Only a batch is gathered and, for images, turned
into float (B, 1, 28, 28) in [0, 1], in the memory format asked for and augmented on the
device when training asks for it. No worker processes, no host-device copy per step.

    batches = Batches(split.images, split.labels, batch_size=128, device="cuda",
                      generator=torch.Generator().manual_seed(0))
    for x, y in batches:   # a fresh shuffle every pass
        ...
"""

from __future__ import annotations

import math

import torch

from .augment import augment as augment_batch
from .splits import images_to_float


def batch_indices(n: int, batch_size: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    """A shuffled epoch as index batches. A last batch of one is dropped (BatchNorm needs two)."""
    perm = torch.randperm(n, generator=generator).to(device, non_blocking=True)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


class Batches:
    """Iterate over `tensors` (same first dimension) in batches; each pass yields tuples.

    `generator`: shuffle with it (a new order every pass; a lone last sample is dropped), else
    in order, every sample once. `images`: the first tensor holds uint8 images, yielded as
    float (B, 1, 28, 28), in `memory_format`, augmented by `augment` (with `aug_generator`).
    `limit`: at most this many batches a pass (smoke runs). `shard=(rank, world)`: yield only
    this rank's share of each shuffled batch (every rank draws the same order; a batch too
    small to share is skipped by all), for distributed training."""

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        device="cpu",
        generator: torch.Generator | None = None,
        limit: int = 0,
        images: bool = True,
        augment: str = "none",
        aug_generator: torch.Generator | None = None,
        memory_format=torch.contiguous_format,
        shard: tuple[int, int] | None = None,
    ):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("Batches needs one or more tensors of the same length")
        self.device = torch.device(device)
        self.tensors = [t.to(self.device, non_blocking=True) for t in tensors]
        self.batch_size, self.generator, self.limit = batch_size, generator, limit
        self.images, self.augment, self.aug_generator = images, augment, aug_generator
        self.memory_format = memory_format
        self.shard = shard if shard and shard[1] > 1 else None

    @property
    def n(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        n = self.n
        steps = math.ceil(n / self.batch_size)
        if self.generator is not None and steps > 1 and n % self.batch_size == 1:
            steps -= 1
        elif self.generator is not None and self.shard and 0 < n % self.batch_size < 2 * self.shard[1]:
            steps -= 1  # too small to share out: skipped
        return min(steps, self.limit) if self.limit else steps

    def gather(self, idx) -> tuple[torch.Tensor, ...]:
        """The batch at `idx` (an index tensor or a slice): images as float (B, 1, 28, 28) in
        the memory format asked for, augmented when asked. No host sync: a captured step
        (steps.py) calls it with a fixed index tensor."""
        first, *rest = (t[idx] for t in self.tensors)
        if self.images:
            first = images_to_float(first).contiguous(memory_format=self.memory_format)
            if self.augment != "none":
                first = augment_batch(first, self.augment, self.aug_generator)
        return (first, *rest)

    def indices(self):
        """One pass as index batches (slices in order, index tensors when shuffled), this
        rank's share only; what ``__iter__`` gathers."""
        steps = len(self)
        if self.generator is None:  # in order: slices are views, no gather
            for i in range(steps):
                yield slice(i * self.batch_size, (i + 1) * self.batch_size)
            return
        for idx in batch_indices(self.n, self.batch_size, self.generator, self.device)[:steps]:
            if self.shard:
                rank, world = self.shard
                if len(idx) < 2 * world:  # BatchNorm needs two per rank
                    continue
                idx = idx.tensor_split(world)[rank]
            yield idx

    def __iter__(self):
        for idx in self.indices():
            yield self.gather(idx)
