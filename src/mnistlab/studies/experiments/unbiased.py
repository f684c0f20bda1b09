"""An encoding that keeps "has a loop" but sheds parity, by adversarial training.

Loop digits: 0, 4, 6, 8, 9; no loop: 1, 2, 3, 5, 7. A CNN encoder produces the encoding;
a loop head and a parity head (the adversary) read it. One optimiser trains the parity
head to predict parity from the (detached) encoding; another trains the encoder and the
loop head to predict loops while making the adversary's job hard, with weight λ.

What "hard" means (``adversary_loss``): ``confusion`` (default) pulls the adversary's
prediction toward p(parity | loop), the best any reader can do from the loop label alone,
so the encoder is rewarded for leaking nothing beyond the loop; ``negative`` is the
original's plain -λ·CE, which the encoder can satisfy by encoding parity *inverted*, and
a fresh probe reads it back. ``method=reversal`` trains both at once through a
gradient-reversal layer instead of alternating.

The honest test: freeze the encoder, train a fresh parity probe (an MLP) on encodings of
training digits, evaluate it on held-out digits, and compare with the floor: the best
accuracy from the loop label alone on the same digits (looped digits are mostly even, so
the floor is far above 50%).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..._io import write_text
from ...checks import check, check_count, ranged
from ...config import MAX_BATCH, MAX_EPOCHS
from ...infer import batched
from ...models.coupled import SheddingConfig, _mlp, loop_of, parity_of
from .base import ExperimentConfig, probe_accuracy, standardised

MAX_WIDTH = 65_536  # a probe layer's units


def loop_only_floor(loop: torch.Tensor, parity: torch.Tensor) -> float:
    """Best parity accuracy from the loop label alone: the majority parity within each loop value."""
    total = 0
    for v in loop.unique():
        total += torch.bincount(parity[loop == v], minlength=2).max().item()
    return total / len(loop)


@dataclass
class Config(ExperimentConfig, SheddingConfig):
    """The experiment's settings; how the encoder sheds parity (method, adversary, MMD, warm-up,
    code) are ``SheddingConfig``'s, in models/coupled.py."""

    lambdas: tuple[float, ...] = ranged((0.0, 1.0, 2.0, 4.0, 8.0), 0.0, 1000.0)
    epochs: int = ranged(
        40, 1, MAX_EPOCHS
    )  # removal keeps improving with training: 20 epochs left the probe 3-5 points higher
    batch_size: int = ranged(256, 1, MAX_BATCH)  # the MMD penalty compares even and odd digits within a batch
    probe_hidden: int = ranged(128, 1, MAX_WIDTH)
    probe_epochs: int = ranged(60, 1, MAX_EPOCHS)
    # a second, stronger probe: a debiasing claim is only as good as the strongest probe tried
    probe2_hidden: tuple[int, ...] = ranged((256, 256), 1, MAX_WIDTH)

    def validate(self) -> None:
        ExperimentConfig.validate(self)
        self.check_shedding("experiment")
        check(
            1 <= len(self.lambdas) <= 100 and min(self.lambdas) >= 0,
            "experiment.lambdas",
            "must be 1-100 values >= 0",
            self.lambdas,
        )
        for key, top in (("epochs", MAX_EPOCHS), ("probe_hidden", MAX_WIDTH), ("probe_epochs", MAX_EPOCHS)):
            check_count(getattr(self, key), f"experiment.{key}", top)
        check(
            1 <= len(self.probe2_hidden) <= 8 and min(self.probe2_hidden) >= 1 and max(self.probe2_hidden) <= MAX_WIDTH,
            "experiment.probe2_hidden",
            f"must be 1-8 layer widths in 1..{MAX_WIDTH:,}",
            self.probe2_hidden,
        )

    def shedding(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SheddingConfig)}


def _deep_mlp(n_in: int, widths: tuple[int, ...], n_out: int = 2) -> torch.nn.Sequential:
    layers, n = [], n_in
    for w in widths:
        layers += [torch.nn.Linear(n, w), torch.nn.ReLU()]
        n = w
    return torch.nn.Sequential(*layers, torch.nn.Linear(n, n_out))


def fresh_probe(cfg: Config, z_train, y_train, z_test, y_test, widths: tuple[int, ...] | None = None) -> float:
    """Train a new MLP (one hidden layer of `probe_hidden`, or layers of `widths`) to read
    parity from frozen encodings; its held-out accuracy."""
    torch.manual_seed(cfg.seed + 7)
    a, b = standardised(z_train, z_test)
    probe = (_deep_mlp(a.shape[1], widths) if widths else _mlp(a.shape[1], cfg.probe_hidden)).to(a.device)
    return probe_accuracy(
        probe,
        a,
        y_train,
        b,
        y_test,
        lr=3e-3,
        epochs=cfg.probe_epochs,
        batch_size=256,
        generator=torch.Generator().manual_seed(cfg.seed + 7),
    )


def evaluate_encoder(cfg, net, ds, device) -> dict:
    net.to(device).eval()
    z_tr = batched(net, net.encoder, ds.train.images).to(device)
    z_te = batched(net, net.encoder, ds.test.images).to(device)
    y_tr, y_te = ds.train.labels.to(device), ds.test.labels.to(device)
    with torch.inference_mode():
        loop_acc = (net.loop_head(z_te).argmax(1) == loop_of(y_te)).float().mean().item()
        adv_acc = (net.parity_head(z_te).argmax(1) == parity_of(y_te)).float().mean().item()
    return {
        "loop_acc": loop_acc,
        "adversary_parity_acc": adv_acc,
        "probe_parity_acc": fresh_probe(cfg, z_tr, parity_of(y_tr), z_te, parity_of(y_te)),
        "probe2_parity_acc": fresh_probe(cfg, z_tr, parity_of(y_tr), z_te, parity_of(y_te), tuple(cfg.probe2_hidden)),
        "loop_only_floor": loop_only_floor(loop_of(y_te).cpu(), parity_of(y_te).cpu()),
    }


def _plot(rows, path) -> None:
    from ...viz import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    lams = [r["lambda"] for r in rows]
    ax.plot(lams, [r["loop_acc"] for r in rows], marker="o", label="loop accuracy")
    ax.plot(lams, [r["probe_parity_acc"] for r in rows], marker="s", label="fresh probe: parity accuracy")
    if all("probe2_parity_acc" in r for r in rows):
        ax.plot(lams, [r["probe2_parity_acc"] for r in rows], marker="D", label="2-hidden-layer probe: parity")
    ax.plot(lams, [r["adversary_parity_acc"] for r in rows], marker="^", ls=":", label="adversary: parity accuracy")
    ax.axhline(rows[0]["loop_only_floor"], color="gray", ls="--", label="floor: parity from loop label only")
    ax.set_xlabel("λ (adversary weight)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0.45, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("keeping loops, shedding parity")
    fig.tight_layout()
    save_figure(fig, path)


def run(ctx) -> dict:
    cfg: Config = ctx.config
    rows = []
    for k, lam in enumerate(cfg.lambdas):
        part = f"lambda-{k}"
        run = ctx.train(part, ctx.run_config("loop-parity", cfg.epochs, lam=lam, **cfg.shedding()))
        history = run.metrics
        rows.append(
            {
                "lambda": lam,
                "run": part,
                **evaluate_encoder(cfg, run.model, ctx.data, ctx.device),
                "final_train_adversary_parity_acc": history[-1]["train_adversary_parity_acc"],
                "history": history,
            }
        )
    _plot(rows, ctx.figures / "tradeoff.png")
    lines = [
        "| λ | loop acc | adversary parity acc | fresh probe parity acc | 2-layer probe | loop-only floor "
        "| probe - floor | 2-layer - floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['lambda']:g} | {r['loop_acc']:.2%} | {r['adversary_parity_acc']:.2%} | "
            f"{r['probe_parity_acc']:.2%} | {r['probe2_parity_acc']:.2%} | {r['loop_only_floor']:.2%} | "
            f"{100 * (r['probe_parity_acc'] - r['loop_only_floor']):+.1f} pts | "
            f"{100 * (r['probe2_parity_acc'] - r['loop_only_floor']):+.1f} pts |"
        )
    write_text(ctx.path / "table.md", "\n".join(lines) + "\n")
    # load_run on the experiment gives the strongest λ's encoder
    main = max(rows, key=lambda r: r["lambda"])["run"]
    return {"rows": rows, "config": dataclasses.asdict(cfg), "main": main}


def rows(m: dict) -> list[dict]:
    """metrics.jsonl: one row per λ (without the per-epoch history, which is in the λ's run)."""
    return [{k: v for k, v in r.items() if k != "history"} for r in m["rows"]]


def headline(m: dict) -> dict:
    """The figures `mnistlab runs` shows: the strongest λ's loop accuracy and probe - floor."""
    r = max(m["rows"], key=lambda r: r["lambda"])
    gap = r["probe_parity_acc"] - r["loop_only_floor"]
    return {
        "headline": f"λ={r['lambda']:g}: loop {r['loop_acc']:.2%}, probe - floor {100 * gap:+.1f} pts",
        "lambda": r["lambda"],
        "loop_acc": r["loop_acc"],
        "probe_minus_floor": gap,
    }


def summary_lines(m: dict) -> list[str]:
    out = ["held-out digits; probe = a fresh MLP trained on the frozen encoder's codes"]
    for r in m["rows"]:
        probe2 = f", 2-layer probe {r['probe2_parity_acc']:.2%}" if "probe2_parity_acc" in r else ""
        out.append(
            f"  λ={r['lambda']:g}: loop {r['loop_acc']:.2%}, adversary parity {r['adversary_parity_acc']:.2%}, "
            f"fresh probe parity {r['probe_parity_acc']:.2%}{probe2} (floor {r['loop_only_floor']:.2%})"
        )
    return out
