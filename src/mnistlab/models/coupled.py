"""Models trained by coupled optimisers, each spending a batch its own way.

As pythae's CoupledOptimizerTrainer has it, the model says which optimiser moves which
parameters (``optimizers``) and what one batch does (``train_step``); the one loop in
``train.fit`` runs them, so they get checkpoints, progress, metrics rows and resumption.

- ``loop-parity``: an encoding that keeps "has a loop" and sheds parity. A CNN encoder, a
  loop head and a parity adversary; the adversary learns parity from the detached code, the
  encoder and loop head learn loops while making the adversary's job hard (weight λ). The
  unbiased experiment trains one per λ.
- ``ae-reencode``: an autoencoder (any registered one gives the shape) whose decoder learns
  to reconstruct and whose encoder learns only re-encoding consistency,
  enc(dec(enc(x))) = enc(x). The reencode experiment trains it beside a plain one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check, ranged
from ._registry import create_model, get_spec, register_model
from .autoencoders import Autoencoder
from .classifiers import Classifier

LOOP_DIGITS = (0, 4, 6, 8, 9)


def loop_of(labels: torch.Tensor) -> torch.Tensor:
    """1 for digits written with a closed loop (0, 4, 6, 8, 9), else 0."""
    return torch.isin(labels, torch.tensor(LOOP_DIGITS, device=labels.device)).long()


def parity_of(labels: torch.Tensor) -> torch.Tensor:
    return (labels % 2).long()  # 1 = odd


def _mlp(n_in: int, hidden: int, n_out: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.lam * g, None


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


@dataclass
class SheddingConfig:
    """How an encoder sheds parity (the unbiased experiment's settings too)."""

    # A wide code: trained for loops alone (λ = 0) it still carries parity (probe ~97%), so
    # the λ = 0 row shows there is something to remove. A 64-wide code kept only ~94%.
    code_dim: int = ranged(256, 1, 16_384)
    # The code leaves the encoder through BatchNorm (no affine): unit variance per dimension,
    # so the penalties cannot be met by shrinking the code to a point.
    normalize_code: bool = True
    method: str = "alternating"  # or 'reversal' (gradient reversal layer)
    # What "hard" means: 'confusion' pulls the adversary's prediction toward p(parity | loop),
    # the best any reader can do from the loop label alone; 'negative' is the plain -λ·CE,
    # which the encoder can meet by encoding parity inverted (a fresh probe reads it back).
    adversary_loss: str = "confusion"
    adversary_steps: int = ranged(3, 1, 100)  # adversary updates per encoder update (alternating)
    adversary_hidden: int = ranged(64, 1, 16_384)
    adversary_lr_scale: float = ranged(3.0, 1e-3, 1000.0)  # the adversary learns faster than the encoder, to keep up
    # An ensemble of adversaries, of two depths (even-numbered: one hidden layer, odd: two),
    # the encoder answering to their mean. One adversary can be fooled along the few
    # directions it has settled on; a fresh probe then finds the rest. Over 5 seeds at λ = 8
    # a second-layer probe read +3.5 ± 2.5 points above the floor with one adversary, -0.9 ±
    # 1.7 with three (README, "unbiased").
    adversaries: int = ranged(3, 1, 64)
    # Every this many epochs one adversary (round robin) starts again from new weights, so the
    # encoder keeps meeting fresh readers, like the probe it is judged by. 0 = never (renewing
    # every 5 epochs helped one adversary about as much as the ensemble did, with more spread;
    # on top of the ensemble it added nothing).
    adversary_reset_epochs: int = ranged(0, 0, 100_000)
    # Weight (times λ) of a conditional MMD penalty: within each loop value, the codes of even
    # and odd digits should be distributed alike. Unlike an adversary, it leaves no direction
    # a fresh probe can find and the current adversary missed. 0 = adversary only.
    mmd_weight: float = ranged(1.0, 0.0, 1000.0)
    warmup_epochs: int = ranged(2, 0, 100_000)  # λ ramps up from 0 over these epochs, so loops are learned first

    def check_shedding(self, section: str) -> None:
        check(
            self.method in ("alternating", "reversal"),
            f"{section}.method",
            "must be alternating or reversal",
            self.method,
        )
        check(
            self.adversary_loss in ("confusion", "negative"),
            f"{section}.adversary_loss",
            "must be confusion or negative",
            self.adversary_loss,
        )
        check(self.adversary_lr_scale > 0, f"{section}.adversary_lr_scale", "must be > 0", self.adversary_lr_scale)
        check(self.warmup_epochs >= 0, f"{section}.warmup_epochs", "must be >= 0", self.warmup_epochs)
        check(self.mmd_weight >= 0, f"{section}.mmd_weight", "must be >= 0", self.mmd_weight)
        check(
            self.adversaries == 1 or self.method == "alternating",
            f"{section}.adversaries",
            "an ensemble needs method=alternating",
            self.adversaries,
        )
        check(
            self.adversary_reset_epochs >= 0,
            f"{section}.adversary_reset_epochs",
            "must be >= 0",
            self.adversary_reset_epochs,
        )
        for key in ("code_dim", "adversary_steps", "adversary_hidden", "adversaries"):
            check(getattr(self, key) >= 1, f"{section}.{key}", "must be >= 1", getattr(self, key))


@dataclass
class LoopParityConfig(SheddingConfig):
    lam: float = ranged(0.0, 0.0, 1000.0)  # weight of shedding parity (λ)

    def validate(self) -> None:
        check(self.lam >= 0, "model.lam", "must be >= 0", self.lam)
        self.check_shedding("model")


class LoopParityNet(Classifier):
    """Reads "has a loop" (2 classes) from digit labels; its code is meant to hide parity."""

    class_names = ("no loop", "loop")

    def __init__(self, config: LoopParityConfig):
        super().__init__(config)
        c = config
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1),
            nn.ReLU(),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),  # (B, 64, 7, 7)
            nn.Flatten(),
            nn.Linear(64 * 49, c.code_dim),  # (B, code_dim)
            *([nn.BatchNorm1d(c.code_dim, affine=False)] if c.normalize_code else []),
        )
        self.loop_head = nn.Linear(c.code_dim, 2)
        self.parity_head = _mlp(c.code_dim, c.adversary_hidden)  # adversary 0: the one metrics report
        # the rest of the ensemble, alternately two hidden layers deep and one
        self.extra_heads = nn.ModuleList(self._head(k) for k in range(1, c.adversaries))
        self._reset_pending: int | None = None
        self._reset_epoch = 1
        # p(parity | loop) in the training data (rows: loop value), set by prepare()
        self.register_buffer("prior", torch.full((2, 2), 0.5))
        self.lam_now = c.lam

    def _head(self, k: int) -> nn.Module:
        c = self.config
        if k % 2 == 0:
            return _mlp(c.code_dim, c.adversary_hidden)
        h = c.adversary_hidden
        return nn.Sequential(nn.Linear(c.code_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))

    def heads(self) -> list[nn.Module]:
        return [self.parity_head, *self.extra_heads]

    def forward(self, x):
        return self.loop_head(self.encoder(x))

    def activations(self, x):
        z = self.encoder(x)
        return [("input", x), ("code", z), ("loop logits", self.loop_head(z))]

    def target(self, labels):
        return loop_of(labels)

    def _metrics(self, loop_logits, adv_logits, y) -> dict[str, torch.Tensor]:
        loop, parity = loop_of(y), parity_of(y)
        return {
            "acc": (loop_logits.argmax(1) == loop).float().mean(),
            "adversary_parity_acc": (adv_logits.argmax(1) == parity).float().mean(),
        }

    def scored(self, x, y):
        z = self.encoder(x)
        loop_logits = self.loop_head(z)
        out = {"loss": F.cross_entropy(loop_logits, loop_of(y)), **self._metrics(loop_logits, self.parity_head(z), y)}
        return out, loop_logits

    def prepare(self, train) -> None:
        loop, parity = loop_of(train.labels), parity_of(train.labels)
        counts = torch.stack([torch.bincount(parity[loop == v], minlength=2).float() for v in (0, 1)])
        self.prior.copy_(counts / counts.sum(1, keepdim=True).clamp_min(1))

    def start_epoch(self, epoch: int) -> None:
        w = self.config.warmup_epochs
        self.lam_now = self.config.lam * min(1.0, (epoch - 1) / w) if w else self.config.lam
        r = self.config.adversary_reset_epochs
        # epochs r+1, 2r+1, ... begin with one adversary renewed; an epoch resumed from a
        # checkpoint renews the same one the same way
        self._reset_pending = (epoch - 1) // r - 1 if r and epoch > 1 and (epoch - 1) % r == 0 else None
        self._reset_epoch = epoch

    def _renew(self, k: int, opt: torch.optim.Optimizer) -> None:
        head = self.heads()[k % len(self.heads())]
        g = torch.Generator().manual_seed(7919 * self._reset_epoch + k)
        with torch.no_grad():
            for m in head.modules():
                if isinstance(m, nn.Linear):
                    bound = 1 / m.in_features**0.5  # nn.Linear's own default range
                    m.weight.copy_(torch.empty(m.weight.shape).uniform_(-bound, bound, generator=g))
                    m.bias.copy_(torch.empty(m.bias.shape).uniform_(-bound, bound, generator=g))
        for p in head.parameters():
            opt.state.pop(p, None)  # its old moments describe the old weights

    def optimizers(self, make):
        adversary = [p for h in self.heads() for p in h.parameters()]
        return {
            "main": make([*self.encoder.parameters(), *self.loop_head.parameters()]),
            "adversary": make(adversary, self.config.adversary_lr_scale),
        }

    def _adversary_term(self, logits, loop, parity):
        """What the encoder minimises (times λ) about the adversary's parity prediction."""
        if self.config.adversary_loss == "negative":
            return -F.cross_entropy(logits, parity)
        return -(self.prior[loop] * F.log_softmax(logits, 1)).sum(1).mean()

    def train_step(self, x, y, optimizers, loss):
        c, lam = self.config, self.lam_now
        main, adv_opt = optimizers["main"], optimizers["adversary"]
        loop, parity = loop_of(y), parity_of(y)
        z = self.encoder(x)  # one encoder pass: the adversary reads it detached
        if c.method == "reversal":  # both at once: the reversed gradient trains the encoder against it
            adv = self.parity_head(_Reverse.apply(z, lam))
            loop_logits = self.loop_head(z)
            total = F.cross_entropy(loop_logits, loop) + F.cross_entropy(adv, parity)
            main.zero_grad(set_to_none=True)
            adv_opt.zero_grad(set_to_none=True)
            total.backward()
            main.step()
            adv_opt.step()
            return {"loss": total.detach(), **self._metrics(loop_logits.detach(), adv.detach(), y)}
        heads = self.heads()
        if self._reset_pending is not None:
            self._renew(self._reset_pending, adv_opt)
            self._reset_pending = None
        zd = z.detach()
        for _ in range(c.adversary_steps):
            adv_loss = sum(F.cross_entropy(h(zd), parity) for h in heads)
            adv_opt.zero_grad(set_to_none=True)
            adv_loss.backward()
            adv_opt.step()
        loop_logits, adv = self.loop_head(z), self.parity_head(z)
        total = F.cross_entropy(loop_logits, loop)
        if lam > 0:
            term = self._adversary_term(adv, loop, parity)
            for h in heads[1:]:
                term = term + self._adversary_term(h(z), loop, parity)
            total = total + lam * term / len(heads)
            if c.mmd_weight:
                total = total + lam * c.mmd_weight * conditional_mmd(z, loop, parity)
        main.zero_grad(set_to_none=True)
        total.backward()
        main.step()  # the parity head's gradients from this step are discarded
        return {"loss": total.detach(), **self._metrics(loop_logits.detach(), adv.detach(), y)}


@dataclass
class ReencodeConfig:
    base: str = "ae-dense"  # the registered autoencoder that gives the shape
    loss: str = "mse"  # how the decoder learns (the encoder learns consistency only)
    noise: float = ranged(0.0, 0.0, 1.0)
    # 'literal': the encoder minimises ||enc(dec(z)) - z||^2 alone, which a constant code
    # meets (the collapse the experiment shows). 'spread': the same objective, plus the two
    # terms VICReg uses to keep a code from collapsing: each code dimension's spread over the
    # batch held at >= 1 standard deviation (a hinge) and the dimensions decorrelated, so a
    # constant, a dead dimension or a copied one all cost.
    variant: str = "literal"
    consistency_weight: float = ranged(
        5.0, 0.0, 1000.0
    )  # spread only: weights of consistency, the variance hinge, covariance
    variance_weight: float = ranged(25.0, 0.0, 1000.0)
    covariance_weight: float = ranged(1.0, 0.0, 1000.0)

    def validate(self) -> None:
        check(
            get_spec(self.base).task == "reconstruct" and self.base != "ae-reencode",
            "model.base",
            "must be a registered autoencoder",
            self.base,
        )
        check(self.variant in ("literal", "spread"), "model.variant", "must be literal or spread", self.variant)
        for key in ("consistency_weight", "variance_weight", "covariance_weight"):
            check(getattr(self, key) >= 0, f"model.{key}", "must be >= 0", getattr(self, key))


def spread_terms(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's variance and covariance terms of a batch of codes (B, ...): the mean hinge
    max(0, 1 - std) over dimensions, and the squared off-diagonal covariances over D."""
    z = z.flatten(1).float()
    std = torch.sqrt(z.var(0) + 1e-4)
    zc = z - z.mean(0)
    cov = zc.T @ zc / max(len(z) - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return F.relu(1 - std).mean(), off.pow(2).sum() / z.shape[1]


class ReencodeAE(Autoencoder):
    """The base autoencoder's encoder and decoder (same weights from the same seed, same
    state-dict keys), trained by two optimisers, alternating each batch."""

    def __init__(self, config: ReencodeConfig):
        super().__init__(config)
        base = create_model(config.base)
        self.encoder, self.decoder = base.encoder, base.decoder

    def optimizers(self, make):
        return {"decoder": make(list(self.decoder.parameters())), "encoder": make(list(self.encoder.parameters()))}

    def train_step(self, x, y, optimizers, loss):
        dec_opt, enc_opt = optimizers["decoder"], optimizers["encoder"]
        # decoder step: reconstruct x from a code the encoder is not asked to change
        recon = self.decode(self.encode(x).detach())
        rec_loss = F.mse_loss(recon, x)
        dec_opt.zero_grad(set_to_none=True)
        rec_loss.backward()
        dec_opt.step()
        # encoder step: enc(dec(enc(x))) should equal enc(x); only the encoder moves
        z = self.encode(x)
        cons = F.mse_loss(self.encode(self.decode(z)), z)
        enc_loss = cons
        out = {"loss": rec_loss.detach(), "mse": rec_loss.detach(), "reencode_error": cons.detach()}
        if self.config.variant == "spread":
            var_term, cov_term = spread_terms(z)
            c = self.config
            enc_loss = c.consistency_weight * cons + c.variance_weight * var_term + c.covariance_weight * cov_term
            out.update(variance_hinge=var_term.detach(), covariance=cov_term.detach())
        enc_opt.zero_grad(set_to_none=True)
        enc_loss.backward()
        enc_opt.step()
        return out


register_model(
    "loop-parity",
    LoopParityNet,
    LoopParityConfig(),
    task="classify",
    train={"epochs": 40, "batch_size": 256},
    description="encoder keeping 'has a loop', shedding parity (adversary + MMD; set lam)",
)
register_model(
    "ae-reencode",
    ReencodeAE,
    ReencodeConfig(),
    task="reconstruct",
    train={"epochs": 10, "batch_size": 128},
    description="autoencoder whose encoder learns only re-encoding consistency",
)
