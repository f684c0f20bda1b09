"""An autoencoder whose encoder is trained only for re-encoding consistency.

Two optimisers, alternating each batch: the decoder learns to reconstruct x from the code
(encoder held fixed); the encoder learns to make enc(dec(enc(x))) equal enc(x) (decoder
held fixed). Nothing asks the code to carry information about x, and a constant code is
perfectly consistent, so the run reports what it takes to see a collapse: the code's
variance per dimension, the reconstruction MSE beside a plain autoencoder of the same
shape trained on the same data for the same epochs, and each model's re-encoding error.
The model is ``ae-reencode`` (models/coupled.py); both models are runs of their own
(``reencode/``, ``plain/``) in the experiment's folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...checks import check, check_count, ranged
from ...config import MAX_EPOCHS
from ...data.splits import images_to_float
from ...models import get_spec
from .base import ExperimentConfig, probe_accuracy, standardised


@dataclass
class Config(ExperimentConfig):
    model: str = "ae-dense"  # any registered autoencoder gives both models their shape
    epochs: int = ranged(10, 1, MAX_EPOCHS)
    # the working variant's weights (see ReencodeConfig): consistency, variance, covariance
    consistency_weight: float = ranged(5.0, 0.0, 1000.0)
    variance_weight: float = ranged(25.0, 0.0, 1000.0)
    covariance_weight: float = ranged(1.0, 0.0, 1000.0)

    def validate(self) -> None:
        super().validate()
        check_count(self.epochs, "experiment.epochs", MAX_EPOCHS)
        check(
            get_spec(self.model).task == "reconstruct" and self.model != "ae-reencode",
            "experiment.model",
            "must be an autoencoder",
            self.model,
        )


def linear_probe(z_train, y_train, z_test, y_test, seed: int = 0, steps: int = 300) -> float:
    """Held-out digit accuracy of a linear classifier (softmax regression, full-batch Adam) on
    standardised codes: how much of the digit the code keeps, linearly."""
    z_train, z_test = z_train.float().clone(), z_test.float().clone()  # plain tensors (not inference ones)
    a, b = standardised(z_train, z_test)
    torch.manual_seed(seed)
    lin = torch.nn.Linear(a.shape[1], 10).to(a.device)
    return probe_accuracy(lin, a, y_train, b, y_test, lr=0.05, epochs=steps)


def _codes(model, images, device) -> tuple[torch.Tensor, torch.Tensor]:
    x = images_to_float(images.to(device))
    return x, model.encode(x).flatten(1)


def measure(model, ds, device, seed: int = 0) -> dict:
    """Reconstruction MSE, re-encoding error (absolute, and relative to the code's total
    variance, so a code cannot look consistent by being small), code variance per dimension,
    dead dimensions (variance < 1e-6 over the test digits) and a linear probe's digit accuracy."""
    model.to(device).eval()
    with torch.inference_mode():
        x, z = _codes(model, ds.test.images, device)
        recon = model.decode(z.view(len(z), *model.code_shape))
        z2 = model.encode(recon).flatten(1)
        var = z.var(0)
    out = {
        "test_mse": F.mse_loss(recon, x).item(),
        "reencode_error": F.mse_loss(z2, z).item(),
        "reencode_error_relative": ((z2 - z).pow(2).sum(1).mean() / var.sum().clamp_min(1e-12)).item(),
        "code_var_mean": var.mean().item(),
        "code_var_max": var.max().item(),
        "dead_code_dims": int((var < 1e-6).sum()),
        "code_dims": var.numel(),
        "code_var_per_dim": [round(v, 6) for v in var.tolist()],
    }
    labelled = ds.train.labels is not None and ds.test.labels is not None
    if labelled:
        with torch.inference_mode():
            _, z_train = _codes(model, ds.train.images, device)
        out["linear_probe_acc"] = linear_probe(z_train, ds.train.labels.to(device), z, ds.test.labels.to(device), seed)
    return out


def _figure(models: dict, split, device, path) -> None:
    from ...viz import image_rows_figure, one_per_class, save_figure

    pick = one_per_class(split)
    x = images_to_float(split.images[pick].to(device))
    rows = [("input", x[:, 0].cpu().numpy())]
    with torch.inference_mode():
        for name, m in models.items():
            m.eval()
            r1 = m(x)
            rows += [(f"{name}\nrecon", r1[:, 0].cpu().numpy()), (f"{name}\nrecon of recon", m(r1)[:, 0].cpu().numpy())]
    save_figure(image_rows_figure(rows, "inputs, reconstructions, reconstructions of reconstructions"), path)


def _variance_figure(results: dict, path) -> None:
    from ...viz import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, r in results.items():
        v = sorted(r["code_var_per_dim"], reverse=True)
        ax.semilogy(range(len(v)), [max(x, 1e-12) for x in v], marker=".", label=name)
    ax.set_xlabel("code dimension (sorted by variance)")
    ax.set_ylabel("variance over test digits")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("is the code collapsed? variance per dimension")
    fig.tight_layout()
    save_figure(fig, path)


def run(ctx) -> dict:
    cfg: Config = ctx.config
    dev = ctx.device
    # The same seed: both start from the same weights (ae-reencode builds cfg.model's layers).
    runs = {
        "reencode": ctx.train("reencode", ctx.run_config("ae-reencode", cfg.epochs, base=cfg.model)),
        "spread": ctx.train(
            "spread",
            ctx.run_config(
                "ae-reencode",
                cfg.epochs,
                base=cfg.model,
                variant="spread",
                consistency_weight=cfg.consistency_weight,
                variance_weight=cfg.variance_weight,
                covariance_weight=cfg.covariance_weight,
            ),
        ),
        "plain": ctx.train("plain", ctx.run_config(cfg.model, cfg.epochs)),
    }
    results = {name: measure(r.model, ctx.data, dev, cfg.seed) for name, r in runs.items()}
    _figure(
        {"literal": runs["reencode"].model, "spread": runs["spread"].model, "plain": runs["plain"].model},
        ctx.data.test,
        dev,
        ctx.figures / "reconstructions.png",
    )
    _variance_figure({NAMES[k]: v for k, v in results.items()}, ctx.figures / "code_variance.png")
    return {
        "model": cfg.model,
        "epochs": cfg.epochs,
        **results,
        "history": {name: r.metrics for name, r in runs.items()},
        "config": dataclasses.asdict(cfg),
        "main": "spread",
    }


NAMES = {"reencode": "literal", "spread": "spread", "plain": "plain"}


def _parts(m: dict) -> list[str]:
    return [k for k in NAMES if k in m]  # results of older runs have no 'spread'


def rows(m: dict) -> list[dict]:
    """metrics.jsonl: one row per model (per-epoch rows are in each model's run)."""
    return [{"model": name, **{k: v for k, v in m[name].items() if k != "code_var_per_dim"}} for name in _parts(m)]


def headline(m: dict) -> dict:
    """The figures `mnistlab runs` shows: reconstruction MSE and dead code dims of each model."""
    r, p = m["reencode"], m["plain"]
    s = m.get("spread")
    text = f"literal mse {r['test_mse']:.4f}, {r['dead_code_dims']}/{r['code_dims']} dims dead"
    if s:
        text += f"; spread mse {s['test_mse']:.4f}, {s['dead_code_dims']} dead"
    out = {
        "headline": text + f" (plain mse {p['test_mse']:.4f})",
        "test_mse": r["test_mse"],
        "plain_test_mse": p["test_mse"],
        "dead_code_dims": r["dead_code_dims"],
    }
    if s:
        out.update(spread_test_mse=s["test_mse"], spread_dead_code_dims=s["dead_code_dims"])
    return out


def summary_lines(m: dict) -> list[str]:
    out = [f"{m['model']} shape, {m['epochs']} epochs, held-out digits:"]
    for name in _parts(m):
        r = m[name]
        rel = r.get("reencode_error_relative")
        probe = r.get("linear_probe_acc")
        out.append(
            f"  {name:8s}: reconstruction MSE {r['test_mse']:.4f}, re-encoding error {r['reencode_error']:.2e}"
            + (f" ({rel:.3f} of the code's variance)" if rel is not None else "")
            + f", code variance mean {r['code_var_mean']:.2e} (max {r['code_var_max']:.2e}), "
            f"{r['dead_code_dims']}/{r['code_dims']} dims constant"
            + (f", linear probe {probe:.1%}" if probe is not None else "")
        )
    return out
