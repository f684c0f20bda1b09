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

from ..checks import check
from ..data import images_to_float
from ..models import get_spec
from .base import ExperimentConfig


@dataclass
class Config(ExperimentConfig):
    model: str = "ae-dense"  # any registered autoencoder gives both models their shape
    epochs: int = 10

    def validate(self) -> None:
        super().validate()
        check(self.epochs >= 1, "experiment.epochs", "must be >= 1", self.epochs)
        check(get_spec(self.model).task == "reconstruct" and self.model != "ae-reencode", "experiment.model",
              "must be an autoencoder", self.model)


@torch.inference_mode()
def measure(model, split, device) -> dict:
    model.to(device).eval()
    x = images_to_float(split.images.to(device))
    z = model.encode(x)
    recon = model.decode(z)
    z2 = model.encode(recon)
    var = z.flatten(1).var(0)
    return {
        "test_mse": F.mse_loss(recon, x).item(),
        "reencode_error": F.mse_loss(z2, z).item(),
        "code_var_mean": var.mean().item(),
        "code_var_max": var.max().item(),
        "dead_code_dims": int((var < 1e-6).sum()),
        "code_dims": var.numel(),
        "code_var_per_dim": [round(v, 6) for v in var.tolist()],
    }


def _figure(models: dict, split, device, path) -> None:
    from ..viz import image_rows_figure, one_per_class, save_figure

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
    from ..viz import _plt, save_figure

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
    reenc = ctx.train("reencode", ctx.run_config("ae-reencode", cfg.epochs, base=cfg.model))
    plain = ctx.train("plain", ctx.run_config(cfg.model, cfg.epochs))
    histories = {"reencode": reenc.metrics, "plain": plain.metrics}
    reenc, plain = reenc.model, plain.model
    results = {"reencode": measure(reenc, ctx.data.test, dev), "plain": measure(plain, ctx.data.test, dev)}
    _figure({"re-encode": reenc, "plain": plain}, ctx.data.test, dev, ctx.figures / "reconstructions.png")
    _variance_figure(results, ctx.figures / "code_variance.png")
    return {"model": cfg.model, "epochs": cfg.epochs, **results, "history": histories,
            "config": dataclasses.asdict(cfg), "main": "reencode"}


def rows(m: dict) -> list[dict]:
    """metrics.jsonl: one row per model (per-epoch rows are in each model's run)."""
    return [{"model": name, **{k: v for k, v in m[name].items() if k != "code_var_per_dim"}}
            for name in ("reencode", "plain")]


def headline(m: dict) -> dict:
    """The figures `mnistlab runs` shows: both models' reconstruction MSE and dead code dims."""
    r, p = m["reencode"], m["plain"]
    return {"headline": f"mse {r['test_mse']:.4f} (plain {p['test_mse']:.4f}), "
                        f"{r['dead_code_dims']}/{r['code_dims']} dims dead",
            "test_mse": r["test_mse"], "plain_test_mse": p["test_mse"], "dead_code_dims": r["dead_code_dims"]}


def summary_lines(m: dict) -> list[str]:
    out = [f"{m['model']} shape, {m['epochs']} epochs, held-out digits:"]
    for name in ("reencode", "plain"):
        r = m[name]
        out.append(f"  {name:8s}: reconstruction MSE {r['test_mse']:.4f}, re-encoding error {r['reencode_error']:.2e}, "
                   f"code variance mean {r['code_var_mean']:.2e} (max {r['code_var_max']:.2e}), "
                   f"{r['dead_code_dims']}/{r['code_dims']} dims constant")
    return out
