"""Batched inference: one helper for every model output over many images (predictions,
codes, decodings, evaluation), in eval mode and under ``torch.inference_mode()``. Used by
training, figures, experiments, the CLI and the web page; it imports no trainer."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch

from .data.batches import Batches
from .data.splits import Split, images_to_float
from .errors import ConfigError

# Batches of 256 in channels-last layout: on a 2-core CPU, evaluating fashion-mnist's 10,000
# test images took cnn-fast 0.17 s this way, 0.80 s in batches of 1,000 in the default
# layout (cnn: 0.27 s against 1.6 s); batches of 1,000 spill the caches.
EVAL_BATCH = 256
MANY = 32  # from this many images on, a pass is worth switching the layout for


@contextmanager
def eval_mode(model):
    """The model in eval mode for the block, in the mode it was in afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def _inference(model, n: int):
    """Eval mode, and for a pass over `n` >= MANY images the channels-last layout (what fit
    trains in); the model's mode and layout are as they were afterwards."""
    convs = [p for p in model.parameters() if p.dim() == 4]
    switch = n >= MANY and any(not p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    with eval_mode(model):
        if switch:
            _layout(model, torch.channels_last)
        try:
            yield
        finally:
            if switch:
                _layout(model, torch.contiguous_format)


def _layout(model, fmt) -> None:
    # outside inference mode: weights re-laid there would be inference tensors, unusable for training
    with torch.inference_mode(False):
        model.to(memory_format=fmt)


@torch.inference_mode()
def batched(
    model,
    fn: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    as_images: bool = True,
) -> torch.Tensor:
    """fn over `inputs` in batches on the model's device, the model in eval mode (restored after);
    results concatenated on the CPU as float. `as_images`: inputs are (N, 28, 28) uint8 images."""
    with _inference(model, len(inputs)):
        batches = Batches(inputs, batch_size=batch_size, device=_device(model), images=as_images)
        outs = [fn(x).float().cpu() for (x,) in batches]
    return torch.cat(outs)


def predict(model, images: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Model outputs for (N, 28, 28) uint8 images, batched, in eval mode, returned on the CPU."""
    return batched(model, model, images, batch_size)


@torch.inference_mode()
def evaluate(
    model, split: Split, batch_size: int = EVAL_BATCH, shard: tuple[int, int] | None = None
) -> dict[str, float]:
    """Size-weighted means of the model's loss dict over a whole split. `shard=(rank, world)`:
    each rank of a distributed job takes a slice and the sums are added up over the ranks."""
    return _evaluate(model, split, batch_size, shard)[0]


@torch.inference_mode()
def evaluate_and_predict(
    model, split: Split, batch_size: int = EVAL_BATCH
) -> tuple[dict[str, float], torch.Tensor | None]:
    """``evaluate``, and a classifier's predicted class per image (CPU), from the same pass;
    None for a model that does not classify."""
    metrics, logits = evaluate_and_score(model, split, batch_size)
    return metrics, None if logits is None else logits.argmax(1)


@torch.inference_mode()
def evaluate_and_score(
    model, split: Split, batch_size: int = EVAL_BATCH
) -> tuple[dict[str, float], torch.Tensor | None]:
    """``evaluate``, and a classifier's logits per image (CPU, float), from the same pass; None
    for a model that does not classify."""
    return _evaluate(model, split, batch_size, None, keep=hasattr(model, "scored"))


def _evaluate(model, split, batch_size, shard, keep: bool = False):
    with _inference(model, len(split)):
        return _evaluate_pass(model, split, batch_size, shard, keep)


def _evaluate_pass(model, split, batch_size, shard, keep):
    images, labels, n = split.images, split.labels, len(split)
    sharded = shard is not None and shard[1] > 1 and n >= shard[1]
    if sharded:
        rank, world = shard
        images, labels = (
            images[rank * n // world : (rank + 1) * n // world],
            labels[rank * n // world : (rank + 1) * n // world],
        )
    sums: dict[str, torch.Tensor] = {}
    preds = []
    for x, y in Batches(images, labels, batch_size=batch_size, device=_device(model)):
        if keep:
            out, logits = model.scored(x, y)
            preds.append(logits.detach().float().cpu())
        else:
            out = model.loss(x, y)
        for k, v in out.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * len(x)
    if sharded:
        from .distributed import sum_tensors

        keys = sorted(sums)  # the same model on every rank: the same keys
        sums = dict(zip(keys, sum_tensors([sums[k] for k in keys])))
    return {k: (v / n).item() for k, v in sums.items()}, (torch.cat(preds) if keep and preds else None)


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
def encode(model, images: torch.Tensor, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """An autoencoder's codes (N, *code_shape) for (N, 28, 28) uint8 images, batched, in eval mode, on the CPU."""
    return batched(model, model.encode, images, batch_size)


@torch.inference_mode()
def reconstruct(model, image) -> tuple[torch.Tensor, torch.Tensor]:
    """An autoencoder's code (1, *code_shape) and output (28, 28) in [0, 1] for one image."""
    model.eval()
    z = model.encode(_one(image).to(_device(model)))
    return z.float().cpu(), model.decode(z)[0, 0].float().cpu()


@torch.no_grad()
def _after_convolution(model, image, name: str, channel: int, y: int, x: int, shape) -> dict | None:
    """What the model does next with one convolution output: the value after its normalisation
    (a fixed scale and shift at inference; none in the classic cnn), after ReLU, and the 2x2
    max-pool window it falls in with the value kept. Read from the model's ``activations`` where
    they name the convolution's activated maps as the layer (``cnn``, whose ReLU is a function),
    else from the modules that run after the convolution (conv, norm, ReLU, pool: ``convnet``s).
    None when neither shows the steps."""
    if not hasattr(model, "activations"):
        return _after_modules(model, image, name, channel, y, x, shape)
    with eval_mode(model):
        acts = model.activations(_float(image, model))
    names = [n for n, _ in acts]
    if name not in names:
        return _after_modules(model, image, name, channel, y, x, shape)
    k = names.index(name)
    relu = acts[k][1][0].float().cpu()
    if tuple(relu.shape) != tuple(shape):
        return None
    norm = getattr(model, name.replace("conv", "norm"), None)
    out: dict = {"relu": float(relu[channel, y, x])}
    if norm is not None and not isinstance(norm, torch.nn.Identity):
        grab = {}
        h = norm.register_forward_hook(lambda m, i, o: grab.update(o=o))
        try:
            with eval_mode(model):
                model(_float(image, model))
        finally:
            h.remove()
        out["normed"] = float(grab["o"][0, channel, y, x])
        out["norm"] = type(norm).__name__
    if k + 1 < len(acts) and acts[k + 1][0].startswith("pool"):
        pooled = acts[k + 1][1][0].float().cpu()
        py, px = y // 2, x // 2
        if py < pooled.shape[1] and px < pooled.shape[2]:
            window = relu[channel, 2 * py : 2 * py + 2, 2 * px : 2 * px + 2]
            out["pool"] = {
                "layer": acts[k + 1][0],
                "window": window.tolist(),
                "at": [py, px],
                "value": float(pooled[channel, py, px]),
            }
    return out


@torch.no_grad()
def _after_modules(model, image, name: str, channel: int, y: int, x: int, shape) -> dict | None:
    """_after_convolution read from the leaf modules that run right after the convolution, up
    to its max-pool: a norm of the same shape, a ReLU, a 2x2 MaxPool2d."""
    order: list[tuple[str, torch.nn.Module, torch.Tensor]] = []
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: order.append((n, m, o))) for n, m in leaves]
    try:
        with eval_mode(model):
            model(_float(image, model))
    finally:
        for h in hooks:
            h.remove()
    at = next((k for k, (n, _, _) in enumerate(order) if n == name), None)
    if at is None:
        return None
    out: dict = {}
    value_map = order[at][2][0].float().cpu()
    for n, m, o in order[at + 1 : at + 4]:
        o = o[0].float().cpu()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and tuple(o.shape) == tuple(shape):
            out.update(normed=float(o[channel, y, x]), norm=type(m).__name__)
            value_map = o
        elif isinstance(m, torch.nn.ReLU) and tuple(o.shape) == tuple(shape):
            out["relu"] = float(o[channel, y, x])
            value_map = o
        elif isinstance(m, torch.nn.MaxPool2d) and "relu" in out and m.kernel_size in (2, (2, 2)):
            py, px = y // 2, x // 2
            if py < o.shape[1] and px < o.shape[2]:
                window = value_map[channel, 2 * py : 2 * py + 2, 2 * px : 2 * px + 2]
                out["pool"] = {
                    "layer": n,
                    "window": window.tolist(),
                    "at": [py, px],
                    "value": float(o[channel, py, px]),
                }
            break
        else:
            break
    return out if "relu" in out else None


def _float(image, model) -> torch.Tensor:
    return _one(image).to(_device(model))


def conv_layers(model) -> list[tuple[str, torch.nn.Conv2d]]:
    """The model's 2-D convolutions, named as in its state dict, in the order they are built."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


@torch.no_grad()
def open_convolution(model, image, layer: int, channel: int | None = None, y: int = 0, x: int = 0) -> dict:
    """Inside one convolution for one (28, 28) uint8 image, as CNN Explainer shows it.

    Without `channel`: the layer's output maps (C, H, W) (before any batch norm or ReLU).
    With `channel`, `y`, `x`: how that output pixel is computed: for each input channel the
    kernel, the input patch under it and their products (the patch read from the input the
    convolution receives, zero-padded as it pads), each channel's sum, the bias and the total,
    which equals the map's value there."""
    import torch.nn.functional as F

    convs = conv_layers(model)
    if not convs:
        raise ConfigError("this model has no convolution to open")
    if not 0 <= layer < len(convs):
        raise ConfigError(f"layer: 0..{len(convs) - 1} (the model's convolutions), got {layer}")
    name, conv = convs[layer]
    grab = {}
    hook = conv.register_forward_hook(lambda m, i, o: grab.update(inp=i[0], out=o))
    try:
        with eval_mode(model):
            model(_one(image).to(_device(model)))
    finally:
        hook.remove()
    maps = grab["out"][0].detach().float().cpu()
    out = {
        "layer": name,
        "index": layer,
        "shape": list(maps.shape),
        "kernel": list(conv.kernel_size),
        "stride": list(conv.stride),
        "first": layer == 0,
    }
    if channel is None:
        return {**out, "maps": maps}
    c_out, h, w = maps.shape
    for what, v, most in (("channel", channel, c_out), ("y", y, h), ("x", x, w)):
        if not 0 <= v < most:
            raise ConfigError(f"{what}: 0..{most - 1} in {name}, got {v}")
    if conv.groups != 1 or conv.padding_mode != "zeros":
        raise ConfigError(f"{name} is a grouped or non-zero-padded convolution: not opened here")
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    ph, pw = ((dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2) if isinstance(conv.padding, str) else conv.padding
    inp = F.pad(grab["inp"][0].detach().float().cpu(), (pw, pw, ph, ph))
    patch = inp[:, y * sh : y * sh + dh * (kh - 1) + 1 : dh, x * sw : x * sw + dw * (kw - 1) + 1 : dw]
    kernel = conv.weight[channel].detach().float().cpu()
    products = patch * kernel
    partial = products.sum((1, 2))
    bias = float(conv.bias[channel]) if conv.bias is not None else 0.0
    return {
        **out,
        "channel": channel,
        "y": y,
        "x": x,
        "bias": bias,
        "total": float(partial.sum()) + bias,
        "value": float(maps[channel, y, x]),
        "after": _after_convolution(model, image, name, channel, y, x, maps.shape),
        "inputs": [
            {"channel": i, "kernel": kernel[i], "patch": patch[i], "products": products[i], "sum": float(partial[i])}
            for i in range(len(kernel))
        ],
    }
