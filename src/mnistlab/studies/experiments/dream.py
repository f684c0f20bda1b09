"""Class images by input optimisation, fed back as an 11th class.

A CNN with 11 outputs (the ten digits and class 10, "optimised image") is trained on real
digits. Each round, with the model fixed, one input per digit (``per_digit`` as an
option) is optimised from noise to raise that digit's probability; the images join the
training data labelled 10 and the model trains further. Images that merely fool the model
get learned as fakes, so later rounds must find inputs that look more like digits.

The honest measure: a judge CNN trained only on real digits (a different seed, never on
optimised images) classifies each round's images; per round we report how many of the
ten digits it reads as intended and its mean confidence in the intended digit.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ... import runtime
from ...checks import check, check_count, ranged
from ...config import MAX_EPOCHS
from ...data.splits import Split
from ...errors import RunError
from ...infer import batched, evaluate, predict
from ...train.loop import fit
from ...train.run import finish_run, record_epochs
from .base import ExperimentConfig

OPTIMISED = 10  # the 11th class


@dataclass
class Config(ExperimentConfig):
    rounds: int = ranged(5, 1, 1000)
    epochs: int = ranged(4, 1, MAX_EPOCHS)  # first training, on real digits only
    epochs_per_round: int = ranged(2, 1, MAX_EPOCHS)
    judge_epochs: int = ranged(5, 1, MAX_EPOCHS)
    per_digit: int = ranged(
        4, 1, 10_000
    )  # images optimised per digit per round; the first of each is pictured and judged
    optimised_share: float = ranged(
        0.1, 0.001, 0.999
    )  # fraction of each training epoch made of (repeated) optimised images
    steps: int = ranged(300, 1, 1_000_000)
    step_lr: float = ranged(0.1, 1e-6, 100.0)
    # Pixels kept in [0, 1]: 'clamp' after each step, or a 'sigmoid' reparametrisation. Clamp
    # is the default: from a dark start the sigmoid's gradient vanishes, and in later rounds
    # (once faint noise is learned as "optimised") the images stay dark and fail.
    constraint: str = "clamp"
    jitter: int = ranged(2, 0, 14)  # random shift of up to this many pixels each step
    blur_every: int = ranged(4, 0, 1_000_000)  # Gaussian blur of the image every N steps (0: never)
    blur_sigma: float = ranged(0.5, 0.0, 10.0)
    tv: float = ranged(0.3, 0.0, 1000.0)  # total-variation weight
    l2: float = ranged(0.02, 0.0, 1000.0)  # weight of the mean squared pixel value

    def validate(self) -> None:
        super().validate()
        most = {
            "rounds": 1000,
            "epochs": MAX_EPOCHS,
            "epochs_per_round": MAX_EPOCHS,
            "judge_epochs": MAX_EPOCHS,
            "per_digit": 10_000,
            "steps": 1_000_000,
        }
        for key, top in most.items():
            check_count(getattr(self, key), f"experiment.{key}", top)
        check(0 < self.optimised_share < 1, "experiment.optimised_share", "must be in (0, 1)", self.optimised_share)
        check(
            self.constraint in ("sigmoid", "clamp"),
            "experiment.constraint",
            "must be sigmoid or clamp",
            self.constraint,
        )
        for key in ("jitter", "blur_every", "blur_sigma", "tv", "l2", "step_lr"):
            check(getattr(self, key) >= 0, f"experiment.{key}", "must be >= 0", getattr(self, key))


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(round(2 * sigma)))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def optimise_inputs(model, targets: torch.Tensor, cfg: Config, generator: torch.Generator) -> torch.Tensor:
    """Inputs (N, 1, 28, 28) in [0, 1] that the fixed `model` gives the `targets` classes."""
    device = next(model.parameters()).device
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # faint noise on a dark ground, as MNIST digits have: a grey start is easy to learn as fake
    noise = (0.02 + 0.1 * torch.rand(len(targets), 1, 28, 28, generator=generator)).to(device)
    param = torch.logit(noise) if cfg.constraint == "sigmoid" else noise.clone()
    param.requires_grad_(True)
    opt = runtime.optimizer(torch.optim.Adam, [param], lr=cfg.step_lr)
    image = torch.sigmoid if cfg.constraint == "sigmoid" else (lambda t: t)
    targets = targets.to(device)
    for step in range(cfg.steps):
        x = image(param)
        seen = x
        if cfg.jitter:
            dy, dx = (torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=generator)).tolist()
            seen = torch.roll(x, (dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(seen), targets) + cfg.tv * total_variation(x) + cfg.l2 * (x**2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            if cfg.constraint == "clamp":
                param.clamp_(0, 1)
            if cfg.blur_every and (step + 1) % cfg.blur_every == 0 and step + 1 < cfg.steps:
                blurred = _blur(image(param), cfg.blur_sigma).clamp(1e-4, 1 - 1e-4)
                param.copy_(torch.logit(blurred) if cfg.constraint == "sigmoid" else blurred)
    for p in model.parameters():
        p.requires_grad_(True)
    return image(param).detach().cpu()


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] * 255).round().clamp(0, 255).to(torch.uint8)


def _with_optimised(real: Split, fakes: torch.Tensor, share: float) -> Split:
    """Real digits plus the optimised images (label 10), repeated to make up `share` of the set."""
    reps = max(1, round(share / (1 - share) * len(real) / len(fakes)))
    images = torch.cat([real.images, fakes.repeat(reps, 1, 1)])
    labels = torch.cat([real.labels, torch.full((len(fakes) * reps,), OPTIMISED, dtype=real.labels.dtype)])
    return Split(images, labels)


def judge_rounds(judge, images: torch.Tensor) -> list[dict]:
    """images: (rounds, 10, per_digit, 28, 28) uint8. Per round: the judge's verdict."""
    rows = []
    digits = torch.arange(10)
    for r, batch in enumerate(images, start=1):
        flat = batch.reshape(-1, 28, 28)
        probs = torch.softmax(predict(judge, flat), 1).view(10, -1, 10)  # (digit, copy, class)
        intended = probs[digits, :, digits]  # (10, per_digit)
        first = probs[:, 0].argmax(1) == digits
        rows.append(
            {
                "round": r,
                "recognised_of_10": int(first.sum()),
                "recognised_fraction": float((probs.argmax(2) == digits[:, None]).float().mean()),
                "mean_confidence": float(intended.mean()),
                "judged_as": probs[:, 0].argmax(1).tolist(),
            }
        )
    return rows


def _figure(images: torch.Tensor, verdicts: list[dict], path) -> None:
    """The first image of each digit in each round, one row a round, each under the judge's
    reading (green when it reads the intended digit, red when not)."""
    import numpy as np

    from ...viz import _plt, save_figure, tile

    plt = _plt()
    rounds, gap, side = len(images), 10, 28
    sheet = np.full((rounds * (side + gap), 10 * (side + 2) - 2), np.nan)
    for r in range(rounds):
        sheet[r * (side + gap) + gap : (r + 1) * (side + gap), :] = tile(images[r, :, 0].numpy() / 255.0)
    fig, ax = plt.subplots(figsize=(11, 1.25 * rounds + 0.6))
    ax.imshow(sheet, cmap=plt.get_cmap("gray").with_extremes(bad="white"), vmin=0, vmax=1, interpolation="nearest")
    for r in range(rounds):
        for d in range(10):
            judged = verdicts[r]["judged_as"][d]
            ax.text(
                d * (side + 2) + side / 2,
                r * (side + gap) + gap - 2,
                f"judge: {judged}",
                ha="center",
                va="bottom",
                fontsize=7,
                color="green" if judged == d else "red",
            )
    ax.set_yticks(
        [r * (side + gap) + gap + side / 2 for r in range(rounds)],
        [f"round {r + 1}" for r in range(rounds)],
        fontsize=8,
    )
    ax.set_xticks([d * (side + 2) + side / 2 for d in range(10)], [f"digit {d}" for d in range(10)], fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("optimised class images per round (judge: a CNN trained on real digits only)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _curve(rows: list[dict], path) -> None:
    from ...viz import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    rounds = [r["round"] for r in rows]
    ax.plot(rounds, [r["recognised_of_10"] / 10 for r in rows], marker="o", label="judge: recognised (of 10)")
    ax.plot(rounds, [r["mean_confidence"] for r in rows], marker="s", label="judge: mean confidence")
    if all("mlp_recognised_of_10" in r for r in rows):
        ax.plot(
            rounds,
            [r["mlp_recognised_of_10"] / 10 for r in rows],
            marker="o",
            ls="--",
            label="MLP judge: recognised (of 10)",
        )
        ax.plot(rounds, [r["mlp_mean_confidence"] for r in rows], marker="s", ls="--", label="MLP judge: confidence")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _train_rounds(ctx) -> tuple[torch.Tensor, list[dict]]:
    """Train the 11-class model (the run ``model/``, one metrics row per epoch tagged with its
    round) and optimise each round's images; returns them (rounds, 10, per_digit, 28, 28)."""
    cfg: Config = ctx.config
    ds, dev = ctx.data, ctx.device
    gen = torch.Generator().manual_seed(cfg.seed)
    run = ctx.start("model", ctx.run_config("cnn", cfg.epochs, num_classes=11))
    model, tc = run.model, run.config.train
    model.class_names = (*ds.classes, "optimised image")  # this process's figures; a reload says "class 10"
    keep = {"progress": ctx.progress, "device": dev}
    # Each round trains on different data (the images found so far): not resumable mid-way.
    mark = {"resume_extra": lambda: {"part_of": "dream"}}
    t0 = time.perf_counter()
    ctx.log("training the 11-class model on real digits")
    fit(model, ds.train, {}, tc, on_epoch=record_epochs(run, tag={"round": 0}, **mark), **keep)
    fakes = torch.empty(0, 28, 28, dtype=torch.uint8)
    rounds, history = [], []
    targets = torch.arange(10).repeat_interleave(cfg.per_digit)
    for r in range(1, cfg.rounds + 1):
        ctx.log(f"round {r}: optimising {len(targets)} inputs")
        x = optimise_inputs(model, targets, cfg, gen)
        p_fake = torch.softmax(batched(model, model, x, as_images=False), 1)[:, OPTIMISED].mean().item()
        new = _to_uint8(x)
        rounds.append(new.view(10, cfg.per_digit, 28, 28))
        fakes = torch.cat([fakes, new])
        fit(
            model,
            _with_optimised(ds.train, fakes, cfg.optimised_share),
            {},
            dataclasses.replace(tc, epochs=cfg.epochs_per_round, seed=tc.seed + r),
            on_epoch=record_epochs(run, offset=len(run.metrics), tag={"round": r}, **mark),
            **keep,
        )
        acc = evaluate(model, ds.test)["acc"]
        history.append({"round": r, "model_p_optimised_class_before": p_fake, "model_test_acc_real": acc})
    finish_run(run, ds, dev, train_time=time.perf_counter() - t0, n_train=len(ds.train))
    return torch.stack(rounds), history


def run(ctx) -> dict:
    cfg: Config = ctx.config
    ds = ctx.data
    judge = ctx.train("judge", ctx.run_config("cnn", cfg.judge_epochs, seed_offset=1000)).model
    # a second judge of another family (dense layers, no convolution), so "the images come to
    # look like digits" is not a claim about one CNN's quirks
    judge2 = None
    if not ctx.reuse or (ctx.path / "judge-mlp" / "summary.json").is_file():
        judge2 = ctx.train("judge-mlp", ctx.run_config("mlp", cfg.judge_epochs * 2, seed_offset=2000)).model
    if ctx.reuse:
        if not (ctx.path / "model" / "summary.json").is_file():  # the model is part of the record
            raise RunError(f"{ctx.path}: the 11-class model's run (model/) is missing or unfinished")
        state = ctx.load("images.pt")
        images, history = state["images"], state["history"]
    else:
        images, history = _train_rounds(ctx)
        ctx.save("images.pt", {"images": images, "history": history})
    verdicts = judge_rounds(judge, images)
    rows = [{**h, **v} for h, v in zip(history, verdicts)]
    if judge2 is not None:
        for row, v in zip(rows, judge_rounds(judge2, images)):
            row.update({f"mlp_{k}": v[k] for k in ("recognised_of_10", "recognised_fraction", "mean_confidence")})
    for row, batch in zip(rows, images):  # how alike one digit's copies are (RMS pixel distance, 0-1)
        row["within_digit_distance"] = _spread(batch)
    _figure(images, verdicts, ctx.figures / "rounds.png")
    _curve(rows, ctx.figures / "judge.png")
    last = rows[-1]
    out = {
        "rounds": rows,
        "final_recognised_of_10": last["recognised_of_10"],
        "final_mean_confidence": last["mean_confidence"],
        "judge_test_acc": evaluate(judge, ds.test)["acc"],
        "main": "model",
    }
    if judge2 is not None:
        out["mlp_judge_test_acc"] = evaluate(judge2, ds.test)["acc"]
    return out


def _spread(batch: torch.Tensor) -> float:
    """Mean pairwise RMS distance (pixels in 0-1) between the copies of each digit, averaged
    over digits; 0 when there is one copy."""
    x = batch.float().flatten(2) / 255  # (10, copies, 784)
    if x.shape[1] < 2:
        return 0.0
    d = torch.cdist(x, x) / 28  # RMS over 784 pixels
    n = x.shape[1]
    return float(d.sum() / (10 * n * (n - 1)))


def pairwise_distance(images: list[torch.Tensor]) -> float:
    """Mean pairwise RMS pixel distance between the same digit's images from different runs
    (seeds): images is a list of (10, 28, 28) uint8, one per run."""
    return _spread(torch.stack(images, 1))  # (10, runs, 28, 28)


def rows(m: dict) -> list[dict]:
    """metrics.jsonl: one row per round."""
    return m["rounds"]


def headline(m: dict) -> dict:
    """The figures `mnistlab runs` shows: the judge's reading of the last round."""
    last = m["rounds"][-1]
    return {
        "headline": f"judge {last['recognised_of_10']}/10 in round {last['round']}",
        "judge_recognised_of_10": last["recognised_of_10"],
        "judge_mean_confidence": last["mean_confidence"],
        "judge_test_acc": m["judge_test_acc"],
    }


def summary_lines(m: dict) -> list[str]:
    out = [f"judge (CNN on real digits only, held-out accuracy {m['judge_test_acc']:.2%}) on each round's images:"]
    for r in m["rounds"]:
        out.append(
            f"  round {r['round']}: recognised {r['recognised_of_10']}/10 as intended, "
            f"mean confidence {r['mean_confidence']:.2f}; model's p(optimised) before retraining "
            f"{r['model_p_optimised_class_before']:.2f}, its real-digit accuracy {r['model_test_acc_real']:.2%}"
        )
    if "mlp_judge_test_acc" in m:
        out.append(f"second judge (MLP, no convolution, held-out accuracy {m['mlp_judge_test_acc']:.2%}):")
        for r in m["rounds"]:
            out.append(
                f"  round {r['round']}: recognised {r['mlp_recognised_of_10']}/10, mean confidence "
                f"{r['mlp_mean_confidence']:.2f}; copies of one digit {r['within_digit_distance']:.3f} apart "
                "(RMS pixel distance)"
            )
    return out
