"""Why a digit was read as it was: attribution maps from Captum, one call per method.

    import mnistlab
    maps = mnistlab.explain(model, images, "ig")              # (N, 28, 28): which pixels made it
    maps = mnistlab.explain(model, images, "ig", contrast=8)  # why the predicted class, not an 8

`images` are what the model takes: (N, 1, 28, 28) floats in [0, 1]. `target` defaults to each
image's predicted class; `contrast=K` explains logit(target) - logit(K). Methods:

- ``saliency``: the gradient of the explained logit with respect to each pixel (signed);
- ``smoothgrad``: that gradient averaged over `samples` noisy copies (Gaussian, sd `noise`);
- ``ig``: integrated gradients from `baseline` (black, 0, in the model's input units) in
  `steps` steps: the attributions add up to f(x) - f(baseline) (completeness);
- ``occlusion``: how much the explained logit drops when a `window` square is set to the
  baseline, slid by `stride`;
- ``gradcam``: Grad-CAM on the last feature maps before the dense head (``cnn``: the pooled
  maps, whose gradients pass the ReLU after them), signed, upsampled to 28x28 between the
  input pixels each map cell is centred on (models with no convolution have none): each
  channel weighted by its gradient averaged over the map;
- ``hirescam``: HiResCAM (Draelos and Carin, 2020) on the same maps, placed the same way:
  each cell's activations times their own gradients, summed over channels, without Grad-CAM's
  averaging. When a linear layer reads the maps (``cnn``), a cell's value is exactly what it
  adds to the explained logit, so the cells add up to the logit less the head's bias
  (`cells`).

DeepLift is left out: Captum 0.9.0's rules are wrong for conv-ReLU-maxpool nets (fixed after
that release). The model's train/eval mode is as it was afterwards; Captum comes with the
``explain`` extra (``pip install 'mnistlab[explain]'``).
"""

from __future__ import annotations

import operator
import warnings
import weakref
from dataclasses import dataclass

import torch

from ..checks import brief
from ..errors import ConfigError
from ..infer import eval_mode

CAMS = ("gradcam", "hirescam")  # coarse maps of the last feature maps' cells, upsampled


def _captum():
    try:
        with warnings.catch_warnings():  # Captum imports tqdm.auto, which warns in a notebook without ipywidgets
            warnings.filterwarnings("ignore", message="IProgress not found")
            import captum.attr as attr
    except ImportError as e:
        raise ConfigError(
            f"explaining a prediction needs the 'explain' extra ({e.name} is missing): pip install 'mnistlab[explain]'"
        ) from None
    return attr


def last_conv(model) -> torch.nn.Module | None:
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1] if convs else None


def feature_layer(model) -> torch.nn.Module | None:
    """The last feature maps the model computes (the last module, in the order a forward pass
    runs them, whose output is a stack of 2-D maps) after its last convolution: what its dense
    head reads, where Grad-CAM looks. None for a model with no convolution."""
    conv = last_conv(model)
    if conv is None:
        return None
    ran: list[torch.nn.Module] = []
    hooks = [
        m.register_forward_hook(
            lambda m, i, o: ran.append(m) if torch.is_tensor(o) and o.dim() == 4 and min(o.shape[-2:]) >= 2 else None
        )
        for m in model.modules()
        if m is not model
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    after = ran[ran.index(conv) :] if conv in ran else ran
    return after[-1] if after else conv


def cell_centres(model, layer) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where `layer`'s map cells sit on the 28x28 input, as (first, step) for rows and for
    columns: each row's (column's) input-pixel centre is the centre of mass of the gradient of
    that row of cells with respect to random images, fitted by a line. Valid (unpadded)
    convolutions and pooling leave the maps covering less than the image, so a plain resize
    to 28x28 would stretch Grad-CAM over pixels its cells never saw."""
    out = {}
    hook = layer.register_forward_hook(lambda m, i, o: out.__setitem__("maps", o))
    # random images, not a flat grey one: on a flat image every max-pool window's maximum is a
    # tie, which goes to the window's first pixel and drags the centres up and to the left
    noise = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = noise.to(next(model.parameters()).device).requires_grad_(True)
    try:
        with torch.enable_grad():
            model(x)
            maps = out["maps"]
            fits = []
            for axis in (-2, -1):
                centres = []
                for i in range(maps.shape[axis]):
                    (g,) = torch.autograd.grad(maps.select(axis, i).abs().sum(), x, retain_graph=True)
                    mass = g.abs()[:, 0].sum(dim=(0, 2) if axis == -2 else (0, 1)).double().cpu()
                    total = float(mass.sum())
                    centres.append(float((mass * torch.arange(28)).sum()) / total if total > 0 else 13.5)
                n = len(centres)
                if n < 2:
                    fits.append((centres[0], 1.0))
                    continue
                idx = torch.arange(n, dtype=torch.float64)
                c = torch.tensor(centres, dtype=torch.float64)
                step = float(((idx - idx.mean()) * (c - c.mean())).sum() / ((idx - idx.mean()) ** 2).sum())
                fits.append((float(c.mean() - step * idx.mean()), step if step > 0 else 28.0 / n))
    finally:
        hook.remove()
    return fits[0], fits[1]


_GEOMETRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cam_geometry(model):
    """(feature layer, its cells' centres) for Grad-CAM and HiResCAM, found once per model: both follow
    from the architecture, and the probe costs a forward and a backward pass per map row and
    column (about 30 ms for cnn), too much to repeat on every request of the web page."""
    if model not in _GEOMETRY:
        layer = feature_layer(model)
        _GEOMETRY[model] = (layer, cell_centres(model, layer) if layer is not None else None)
    return _GEOMETRY[model]


def _upsample(cam: torch.Tensor, centres) -> torch.Tensor:
    """(N, 1, h, w) cell values -> (N, 1, 28, 28), bilinear between the cells' input centres
    (the nearest cell's value beyond the outermost ones)."""
    (r0, rs), (c0, cs) = centres
    n, _, h, w = cam.shape

    def coord(first, step, cells):
        u = (torch.arange(28, dtype=torch.float32, device=cam.device) - first) / step
        return u / max(cells - 1, 1) * 2 - 1

    gy, gx = torch.meshgrid(coord(r0, rs, h), coord(c0, cs, w), indexing="ij")
    grid = torch.stack([gx, gy], -1)[None].expand(n, 28, 28, 2)
    return torch.nn.functional.grid_sample(cam, grid, mode="bilinear", padding_mode="border", align_corners=True)


def explain(
    model,
    images: torch.Tensor,
    method: str = "ig",
    target=None,
    contrast=None,
    *,
    baseline: float = 0.0,
    steps: int = 50,
    samples: int = 20,
    noise: float = 0.15,
    window: int = 4,
    stride: int = 2,
    seed: int = 0,
) -> torch.Tensor:
    """Attribution maps (N, 28, 28) float on the CPU for `images` (N, 1, 28, 28) in [0, 1]:
    how each pixel moved the explained logit (see the module's docstring for each method)."""
    attr = _captum()
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ConfigError(f"images must be (N, 1, 28, 28) floats in [0, 1], got shape {tuple(x.shape)}")
    n = len(x)
    size = max(1, MAX_PASS // _copies(method, steps, samples))
    if n > size:  # memory follows the images: a pass holds at most MAX_PASS of them, however many are asked
        kw = dict(baseline=baseline, steps=steps, samples=samples, noise=noise, window=window, stride=stride)
        return torch.cat(
            [
                explain(
                    model,
                    x[i : i + size],
                    method,
                    _part(target, i, size, n),
                    _part(contrast, i, size, n),
                    **kw,
                    seed=seed + i,
                )  # fmt: skip
                for i in range(0, n, size)
            ]
        )
    device = next(model.parameters()).device
    x = x.to(device)
    with eval_mode(model):
        with torch.no_grad():
            logits = model(x)
        t, k = _target_and_contrast(logits, target, contrast)
        explained = _explainer(model)
        base = torch.full_like(x, float(baseline))
        args = (t, k)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*did not already require gradients")  # Captum's, on x
            torch.manual_seed(seed)
            how = _How(attr, model, explained, x, args, base, steps, samples, noise, window, stride, method)
            maps = METHODS[method](how)
    return maps.detach().float().reshape(len(x), 28, 28).cpu()


# Images one attribution pass holds, counting each of a digit's ig steps and smoothgrad samples
# (their activations and gradients are what fills memory): 512 of cnn-robust's are ~0.3 GB.
MAX_PASS = 512


def _copies(method: str, steps: int, samples: int) -> int:
    """How many images a method puts through the model for each digit at once."""
    return {"ig": steps + 1, "smoothgrad": samples}.get(method, 1)


def _part(value, start: int, size: int, n: int):
    """A per-image target or contrast cut to one part of the images (one class stays one class)."""
    if value is None or isinstance(value, int) or (torch.is_tensor(value) and value.numel() == 1):
        return value
    if hasattr(value, "__len__") and len(value) == n:
        return value[start : start + size]
    if hasattr(value, "__len__") and len(value) == 1:
        return value
    raise ConfigError(f"target/contrast: one class, or one per image ({n}), got {brief(repr(value), 60)}")


@dataclass(frozen=True)
class _How:
    """What a method's attribution is computed from (one call of ``explain``)."""

    attr: object  # captum.attr
    model: torch.nn.Module
    explained: object  # _explainer(model)
    x: torch.Tensor
    args: tuple  # (target, contrast) as Captum's additional forward arguments
    base: torch.Tensor
    steps: int
    samples: int
    noise: float
    window: int
    stride: int
    method: str


def _saliency(h: _How) -> torch.Tensor:
    return h.attr.Saliency(h.explained).attribute(h.x, abs=False, additional_forward_args=h.args)


def _smoothgrad(h: _How) -> torch.Tensor:
    return h.attr.NoiseTunnel(h.attr.Saliency(h.explained)).attribute(
        h.x, nt_type="smoothgrad", nt_samples=h.samples, stdevs=h.noise, abs=False, additional_forward_args=h.args
    )


def _integrated_gradients(h: _How) -> torch.Tensor:
    return h.attr.IntegratedGradients(h.explained).attribute(
        h.x, baselines=h.base, n_steps=h.steps, additional_forward_args=h.args
    )


def _occlusion(h: _How) -> torch.Tensor:
    return h.attr.Occlusion(h.explained).attribute(
        h.x,
        sliding_window_shapes=(1, h.window, h.window),
        strides=(1, h.stride, h.stride),
        baselines=h.base,
        additional_forward_args=h.args,
        perturbations_per_eval=max(1, 256 // len(h.x)),
    )


def _cam(h: _How) -> torch.Tensor:
    return _upsample(_cells(h.attr, h.model, h.x, h.method, h.explained, h.args), _cam_geometry(h.model)[1])


# name -> the method: names.EXPLAIN_METHODS lists these for the command line
METHODS = {
    "saliency": _saliency,
    "smoothgrad": _smoothgrad,
    "ig": _integrated_gradients,
    "occlusion": _occlusion,
    "gradcam": _cam,
    "hirescam": _cam,
}


def _explainer(model):
    """The function Captum attributes: each image's explained logit. The classes (target,
    contrast) come as Captum's additional forward arguments, expanded as it expands the inputs
    (by steps for ig, by noisy copies for smoothgrad), so they stay aligned."""
    return lambda inp, tt, kk: _explained(model(inp), tt, kk)


def _cells(attr, model, x, method, explained, args) -> torch.Tensor:
    """(N, 1, h, w) Grad-CAM or HiResCAM values of the last feature maps' cells."""
    layer, _ = _cam_geometry(model)
    if layer is None:
        raise ConfigError(
            f"{method} needs a convolution; {getattr(model, 'model_name', 'this model')} "
            "has none (try saliency, smoothgrad, ig or occlusion)"
        )
    if method == "gradcam":
        return attr.LayerGradCam(explained, layer).attribute(x, additional_forward_args=args).detach().float()
    grad_x_act = attr.LayerGradientXActivation(explained, layer).attribute(x, additional_forward_args=args)
    return grad_x_act.detach().float().sum(1, keepdim=True)


def cells(model, images: torch.Tensor, method: str = "hirescam", target=None, contrast=None) -> torch.Tensor:
    """(N, h, w) the cell values `gradcam` or `hirescam` upsample: one per cell of the last
    feature maps, before they are placed on the 28x28 input."""
    if method not in CAMS:
        raise ConfigError(f"cells are for {' and '.join(CAMS)}, got {method!r}")
    attr = _captum()
    x = torch.as_tensor(images, dtype=torch.float32).to(next(model.parameters()).device)
    with eval_mode(model):
        with torch.no_grad():
            t, k = _target_and_contrast(model(x), target, contrast)
        c = _cells(attr, model, x, method, _explainer(model), (t, k))
    return c[:, 0].cpu()


def _target_and_contrast(logits: torch.Tensor, target, contrast) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the class explained (the predicted one by default) and the contrast class
    (-1: none), on the logits' device."""
    n, classes, device = len(logits), logits.shape[1], logits.device
    t = _classes(logits.argmax(1) if target is None else target, n, classes, "target", device)
    k = torch.full_like(t, -1) if contrast is None else _classes(contrast, n, classes, "contrast", device)
    # one class named against itself is refused; per-image targets (the predictions, say) meet
    # the contrast class on some digits, whose map is the zero that "why k, not k" is
    single = target is not None and (n == 1 or torch.as_tensor(target).numel() == 1)
    if single and (same := (k == t).nonzero()).numel():
        i = int(same[0, 0])
        raise ConfigError(
            f"contrast: class {int(k[i])} is the class explained{f' (image {i})' if n > 1 else ''}; a class "
            "against itself explains nothing: pick another"
        )
    return t, k


def _explained(out: torch.Tensor, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B,) each image's explained logit, less its contrast class's logit where it has one."""
    rows = torch.arange(len(out), device=out.device)
    other = torch.where(k >= 0, out[rows, k.clamp_min(0)], torch.zeros((), device=out.device))
    return out[rows, t] - other


def _classes(value, n: int, classes: int, what: str, device) -> torch.Tensor:
    if not torch.is_tensor(value):  # whole numbers checked as numbers: 10**30 is out of range, not an overflow
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        for v in values:
            try:
                v = operator.index(v)
            except TypeError:
                raise ConfigError(f"{what}: a class number expected, got {brief(repr(v), 40)}") from None
            if not 0 <= v < classes:
                raise ConfigError(f"{what}: classes are 0..{classes - 1}, got {brief(str(v), 40)}")
    t = torch.as_tensor(value, dtype=torch.int64).reshape(-1)
    if len(t) == 1:
        t = t.repeat(n)
    if len(t) != n:
        raise ConfigError(f"{what}: one class, or one per image ({n}), got {len(t)}")
    if ((t < 0) | (t >= classes)).any():
        raise ConfigError(f"{what}: classes are 0..{classes - 1}, got {t.tolist()}")
    return t.to(device)


def completeness_gap(
    model, images: torch.Tensor, maps: torch.Tensor, target=None, contrast=None, baseline: float = 0.0
) -> torch.Tensor:
    """|sum of attributions - (f(x) - f(baseline))| / |f(x) - f(baseline)| per image, for `ig`."""
    x = torch.as_tensor(images, dtype=torch.float32)
    with eval_mode(model), torch.no_grad():
        out, out0 = model(x), model(torch.full_like(x, float(baseline)))
    t, k = _target_and_contrast(out, target, contrast)
    f, f0 = _explained(out, t, k), _explained(out0, t, k)
    gap = maps.reshape(len(x), -1).sum(1) - (f - f0)
    return gap.abs() / (f - f0).abs().clamp_min(1e-12)
