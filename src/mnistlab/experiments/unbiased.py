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
import torch.nn.functional as F
from torch import nn

from ..checks import check
from ..data import images_to_float
from ..train import progress_bar
from .base import ExperimentConfig

LOOP_DIGITS = (0, 4, 6, 8, 9)


def loop_of(labels: torch.Tensor) -> torch.Tensor:
    return torch.isin(labels, torch.tensor(LOOP_DIGITS, device=labels.device)).long()


def parity_of(labels: torch.Tensor) -> torch.Tensor:
    return (labels % 2).long()  # 1 = odd


def loop_only_floor(loop: torch.Tensor, parity: torch.Tensor) -> float:
    """Best parity accuracy from the loop label alone: the majority parity within each loop value."""
    total = 0
    for v in loop.unique():
        total += torch.bincount(parity[loop == v], minlength=2).max().item()
    return total / len(loop)


@dataclass
class Config(ExperimentConfig):
    lambdas: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)
    epochs: int = 40  # removal keeps improving with training: 20 epochs left the probe 3-5 points higher
    # A wide code: trained for loops alone (λ = 0) it still carries parity (probe ~97%), so
    # the λ = 0 row shows there is something to remove. A 64-wide code kept only ~94%.
    code_dim: int = 256
    # The code leaves the encoder through BatchNorm (no affine): unit variance per dimension,
    # so the penalties below cannot be met by shrinking the code to a point.
    normalize_code: bool = True
    batch_size: int = 256  # the MMD penalty compares even and odd digits within a batch
    method: str = "alternating"  # or 'reversal' (gradient reversal layer)
    adversary_loss: str = "confusion"  # or 'negative'
    adversary_steps: int = 3  # adversary updates per encoder update (alternating)
    adversary_hidden: int = 64
    adversary_lr_scale: float = 3.0  # the adversary learns faster than the encoder, to keep up
    # Weight (times λ) of a conditional MMD penalty: within each loop value, the codes of
    # even and odd digits should be distributed alike. Unlike an adversary, it leaves no
    # direction a fresh probe can find and the current adversary missed. 0 = adversary only.
    mmd_weight: float = 1.0
    warmup_epochs: int = 2  # λ ramps up from 0 over these epochs, so loops are learned first
    probe_hidden: int = 128
    probe_epochs: int = 60

    def validate(self) -> None:
        super().validate()
        check(len(self.lambdas) >= 1 and min(self.lambdas) >= 0, "experiment.lambdas",
               "must be one or more values >= 0", self.lambdas)
        check(self.adversary_lr_scale > 0, "experiment.adversary_lr_scale", "must be > 0", self.adversary_lr_scale)
        check(self.method in ("alternating", "reversal"), "experiment.method", "must be alternating or reversal",
               self.method)
        check(self.adversary_loss in ("confusion", "negative"), "experiment.adversary_loss",
               "must be confusion or negative", self.adversary_loss)
        check(self.warmup_epochs >= 0, "experiment.warmup_epochs", "must be >= 0", self.warmup_epochs)
        check(self.mmd_weight >= 0, "experiment.mmd_weight", "must be >= 0", self.mmd_weight)
        for key in ("epochs", "code_dim", "adversary_steps", "adversary_hidden", "probe_hidden", "probe_epochs"):
            check(getattr(self, key) >= 1, f"experiment.{key}", "must be >= 1", getattr(self, key))


def _mlp(n_in: int, hidden: int, n_out: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class LoopParityNet(nn.Module):
    def __init__(self, code_dim: int, adversary_hidden: int, normalize_code: bool = False):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.ReLU(),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Linear(64 * 49, code_dim),  # (B, code_dim)
            *([nn.BatchNorm1d(code_dim, affine=False)] if normalize_code else []),
        )
        self.loop_head = nn.Linear(code_dim, 2)
        self.parity_head = _mlp(code_dim, adversary_hidden)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.lam * g, None


def _adversary_term(logits, loop, parity, prior, kind):
    """What the encoder minimises (times λ) about the adversary's parity prediction."""
    if kind == "negative":
        return -F.cross_entropy(logits, parity)
    target = prior[loop]  # (B, 2): p(parity | loop)
    return -(target * F.log_softmax(logits, 1)).sum(1).mean()


def _mmd2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared MMD between two samples, RBF kernels at three multiples of the median distance."""
    if len(a) < 2 or len(b) < 2:
        return a.new_zeros(())
    z = torch.cat([a, b])
    d2 = torch.cdist(z, z).pow(2)
    med = d2.detach()[d2.detach() > 0].median().clamp_min(1e-6)
    k = sum(torch.exp(-d2 / (s * med)) for s in (0.5, 1.0, 2.0))
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def conditional_mmd(z, loop, parity) -> torch.Tensor:
    """Sum over loop values of MMD²(codes of even digits, codes of odd digits)."""
    total = z.new_zeros(())
    for v in (0, 1):
        m = loop == v
        total = total + _mmd2(z[m & (parity == 0)], z[m & (parity == 1)])
    return total


def train_one(cfg: Config, lam: float, ds, device, progress=None) -> tuple[LoopParityNet, list[dict]]:
    torch.manual_seed(cfg.seed)
    net = LoopParityNet(cfg.code_dim, cfg.adversary_hidden, cfg.normalize_code).to(device)
    images, labels = ds.train.images.to(device), ds.train.labels.to(device)
    loop, parity = loop_of(labels), parity_of(labels)
    prior = torch.stack([torch.bincount(parity[loop == v], minlength=2).float() for v in (0, 1)])
    prior = prior / prior.sum(1, keepdim=True)  # (loop value, parity)
    main_opt = torch.optim.Adam([*net.encoder.parameters(), *net.loop_head.parameters()], lr=cfg.lr)
    adv_opt = torch.optim.Adam(net.parity_head.parameters(), lr=cfg.lr * cfg.adversary_lr_scale)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    full_lam = lam
    bar = progress_bar(cfg.epochs, f"λ = {full_lam:g}", progress)
    for epoch in range(1, cfg.epochs + 1):
        lam = full_lam * min(1.0, (epoch - 1) / cfg.warmup_epochs) if cfg.warmup_epochs else full_lam
        perm = torch.randperm(len(labels), generator=gen).to(device)
        sums = torch.zeros(3, device=device)
        for idx in perm.split(cfg.batch_size):
            x, lp, par = images_to_float(images[idx]), loop[idx], parity[idx]
            if cfg.method == "reversal":
                z = net.encoder(x)
                adv = net.parity_head(_Reverse.apply(z, lam))
                loss = F.cross_entropy(net.loop_head(z), lp) + F.cross_entropy(adv, par)
                main_opt.zero_grad(set_to_none=True)
                adv_opt.zero_grad(set_to_none=True)
                loss.backward()
                main_opt.step()
                adv_opt.step()
                loop_logits = net.loop_head(z.detach())
            else:
                z = net.encoder(x)  # one encoder pass: the adversary reads it detached
                for _ in range(cfg.adversary_steps):
                    adv_loss = F.cross_entropy(net.parity_head(z.detach()), par)
                    adv_opt.zero_grad(set_to_none=True)
                    adv_loss.backward()
                    adv_opt.step()
                loop_logits = net.loop_head(z)
                adv = net.parity_head(z)
                loss = F.cross_entropy(loop_logits, lp)
                if lam > 0:
                    loss = loss + lam * _adversary_term(adv, lp, par, prior, cfg.adversary_loss)
                    if cfg.mmd_weight:
                        loss = loss + lam * cfg.mmd_weight * conditional_mmd(z, lp, par)
                main_opt.zero_grad(set_to_none=True)
                loss.backward()
                main_opt.step()  # the parity head's gradients from this step are discarded
            sums += torch.stack([(loop_logits.argmax(1) == lp).float().sum(),
                                 (adv.argmax(1) == par).float().sum(), torch.tensor(float(len(idx)), device=device)])
        s = sums.tolist()
        history.append({"epoch": epoch, "train_loop_acc": s[0] / s[2], "train_adversary_parity_acc": s[1] / s[2]})
        bar.set_postfix(loop_acc=f"{s[0] / s[2]:.4f}", adversary_acc=f"{s[1] / s[2]:.4f}")
        bar.update(1)
    bar.close()
    return net, history


@torch.inference_mode()
def _encode(net, images, device, batch=1000):
    net.eval()
    return torch.cat([net.encoder(images_to_float(images[i:i + batch].to(device)))
                      for i in range(0, len(images), batch)])


def fresh_probe(cfg: Config, z_train, y_train, z_test, y_test) -> float:
    """Train a new MLP to read parity from frozen encodings; its held-out accuracy."""
    torch.manual_seed(cfg.seed + 7)
    mean, std = z_train.mean(0), z_train.std(0) + 1e-6  # standardise: fair to any code scale
    a, b = (z_train - mean) / std, (z_test - mean) / std
    probe = _mlp(a.shape[1], cfg.probe_hidden).to(a.device)
    opt = torch.optim.Adam(probe.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    with torch.enable_grad():
        for _ in range(cfg.probe_epochs):
            for idx in torch.randperm(len(a), generator=gen).to(a.device).split(256):
                loss = F.cross_entropy(probe(a[idx]), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    with torch.inference_mode():
        return (probe(b).argmax(1) == y_test).float().mean().item()


def evaluate_encoder(cfg, net, ds, device) -> dict:
    z_tr, z_te = _encode(net, ds.train.images, device), _encode(net, ds.test.images, device)
    y_tr, y_te = ds.train.labels.to(device), ds.test.labels.to(device)
    with torch.inference_mode():
        loop_acc = (net.loop_head(z_te).argmax(1) == loop_of(y_te)).float().mean().item()
        adv_acc = (net.parity_head(z_te).argmax(1) == parity_of(y_te)).float().mean().item()
    return {
        "loop_acc": loop_acc,
        "adversary_parity_acc": adv_acc,
        "probe_parity_acc": fresh_probe(cfg, z_tr, parity_of(y_tr), z_te, parity_of(y_te)),
        "loop_only_floor": loop_only_floor(loop_of(y_te).cpu(), parity_of(y_te).cpu()),
    }


def _plot(rows, path) -> None:
    from ..viz import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    lams = [r["lambda"] for r in rows]
    ax.plot(lams, [r["loop_acc"] for r in rows], marker="o", label="loop accuracy")
    ax.plot(lams, [r["probe_parity_acc"] for r in rows], marker="s", label="fresh probe: parity accuracy")
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
        name = f"encoder_lambda_{k}.pt"
        if ctx.reuse:
            state = ctx.load(name)
            net = LoopParityNet(cfg.code_dim, cfg.adversary_hidden, cfg.normalize_code).to(ctx.device)
            net.load_state_dict(state["state_dict"])
            history = state["history"]
        else:
            ctx.log(f"training with λ = {lam}")
            net, history = train_one(cfg, lam, ctx.data, ctx.device, ctx.progress)
            ctx.save(name, {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}, "history": history,
                            "lambda": lam})
        rows.append({"lambda": lam, **evaluate_encoder(cfg, net, ctx.data, ctx.device),
                     "final_train_adversary_parity_acc": history[-1]["train_adversary_parity_acc"],
                     "history": history})
    _plot(rows, ctx.figures / "tradeoff.png")
    lines = ["| λ | loop acc | adversary parity acc | fresh probe parity acc | loop-only floor | probe - floor |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lambda']:g} | {r['loop_acc']:.2%} | {r['adversary_parity_acc']:.2%} | "
                     f"{r['probe_parity_acc']:.2%} | {r['loop_only_floor']:.2%} | "
                     f"{100 * (r['probe_parity_acc'] - r['loop_only_floor']):+.1f} pts |")
    (ctx.path / "table.md").write_text("\n".join(lines) + "\n")
    return {"rows": rows, "config": dataclasses.asdict(cfg)}


def headline(m: dict) -> dict:
    """The figures `mnistlab runs` shows: the strongest λ's loop accuracy and probe - floor."""
    r = max(m["rows"], key=lambda r: r["lambda"])
    gap = r["probe_parity_acc"] - r["loop_only_floor"]
    return {"headline": f"λ={r['lambda']:g}: loop {r['loop_acc']:.2%}, probe - floor {100 * gap:+.1f} pts",
            "lambda": r["lambda"], "loop_acc": r["loop_acc"], "probe_minus_floor": gap}


def summary_lines(m: dict) -> list[str]:
    out = ["held-out digits; probe = a fresh MLP trained on the frozen encoder's codes"]
    for r in m["rows"]:
        out.append(f"  λ={r['lambda']:g}: loop {r['loop_acc']:.2%}, adversary parity {r['adversary_parity_acc']:.2%}, "
                   f"fresh probe parity {r['probe_parity_acc']:.2%} (floor {r['loop_only_floor']:.2%})")
    return out
