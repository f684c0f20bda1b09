"""Batched inference: one helper for every model output over many images (predictions,
codes, decodings, evaluation), in eval mode and under ``torch.inference_mode()``. Used by
training, figures, experiments, the CLI and the web page; it imports no trainer."""
from __future__ import annotations

from collections.abc import Callable

import torch

from .batches import Batches
from .data import Split, images_to_float


@torch.inference_mode()
def batched(model, fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch_size: int = 1000,
            as_images: bool = True) -> torch.Tensor:
    """fn over `inputs` in batches on the model's device, the model in eval mode (restored after);
    results concatenated on the CPU as float. `as_images`: inputs are (N, 28, 28) uint8 images."""
    was_training = model.training
    model.eval()
    batches = Batches(inputs, batch_size=batch_size, device=_device(model), images=as_images)
    outs = [fn(x).float().cpu() for (x,) in batches]
    model.train(was_training)
    return torch.cat(outs)


def predict(model, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Model outputs for (N, 28, 28) uint8 images, batched, in eval mode, returned on the CPU."""
    return batched(model, model, images, batch_size)


@torch.inference_mode()
def evaluate(model, split: Split, batch_size: int = 1000, shard: tuple[int, int] | None = None) -> dict[str, float]:
    """Size-weighted means of the model's loss dict over a whole split. `shard=(rank, world)`:
    each rank of a distributed job takes a slice and the sums are added up over the ranks."""
    was_training = model.training
    model.eval()
    images, labels, n = split.images, split.labels, len(split)
    sharded = shard is not None and shard[1] > 1 and n >= shard[1]
    if sharded:
        rank, world = shard
        images, labels = images[rank * n // world:(rank + 1) * n // world], labels[rank * n // world:
                                                                                   (rank + 1) * n // world]
    sums: dict[str, torch.Tensor] = {}
    for x, y in Batches(images, labels, batch_size=batch_size, device=_device(model)):
        for k, v in model.loss(x, y).items():
            sums[k] = sums.get(k, 0) + v.detach().float() * len(x)
    model.train(was_training)
    if sharded:
        from .distributed import sum_tensors

        keys = sorted(sums)  # the same model on every rank: the same keys
        sums = dict(zip(keys, sum_tensors([sums[k] for k in keys])))
    return {k: (v / n).item() for k, v in sums.items()}


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _one(image) -> torch.Tensor:
    """(28, 28) uint8 (array or tensor) -> (1, 1, 28, 28) float in [0, 1]."""
    return images_to_float(torch.as_tensor(image)[None])


@torch.inference_mode()
def activations(model, image) -> list[tuple[str, torch.Tensor]]:
    """Every layer's output for one (28, 28) uint8 image, as the model names them."""
    model.eval()
    return model.activations(_one(image).to(_device(model)))


@torch.inference_mode()
def reconstruct(model, image) -> tuple[torch.Tensor, torch.Tensor]:
    """An autoencoder's code (1, *code_shape) and output (28, 28) in [0, 1] for one image."""
    model.eval()
    z = model.encode(_one(image).to(_device(model)))
    return z.float().cpu(), model.decode(z)[0, 0].float().cpu()

