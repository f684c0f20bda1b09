"""Every headline figure over seeds, with its spread: ``mnistlab report``.

    mnistlab report                          # every figure, seeds 0-4, into report/
    mnistlab report --only cnn reencode --seeds 0-2 --out report-quick

Each *job* (a model's preset training, or an experiment) is run once per seed on the
bundled sample and yields named figures; its result is saved as
``OUT/results/JOB/seed-K.json`` as soon as it finishes, so a stopped report resumes where
it stopped (a finished (job, seed) is never redone). ``report.json`` holds, for every
figure, ``mean``, ``sd``, ``min``, ``max``, ``seeds``, ``values``, ``bar`` and ``met``
(every seed meets the bar: the *worst* seed is held to it; a bar on the mean says so);
``report.md`` is the same as a table, and each job gets a picture with error bars.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._io import write_json, write_text
from ..checks import brief
from ..errors import ConfigError
from ..names import SEED_MAX

DATASET = "mnist-sample"


@dataclass(frozen=True)
class Bar:
    """A figure's bar: `op` is '>=' or '<='; `on` is 'every' seed (the worst one) or the 'mean'."""

    op: str
    value: float
    on: str = "every"

    def met(self, values: list[float]) -> bool:
        xs = [statistics.mean(values)] if self.on == "mean" else values
        return all(x >= self.value if self.op == ">=" else x <= self.value for x in xs)

    def text(self) -> str:
        return f"{self.op} {self.value:g}" + (" (mean)" if self.on == "mean" else "")


@dataclass
class Job:
    name: str
    run: Callable[[int, Path], dict[str, float]]  # (seed, work folder) -> figures
    bars: dict[str, Bar] = field(default_factory=dict)
    about: str = ""
    across: Callable[[Path, list[int]], dict[str, float]] | None = None  # figures over all seeds at once


def _train(model: str, seed: int, folder: Path, sets: list[str] = ()) -> dict:
    from ..config import build_config
    from ..runs import load_run
    from ..train.run import resume_run, train_run

    if (folder / "summary.json").is_file():  # trained for another job already (the encoder)
        return load_run(folder).summary
    if (folder / "checkpoint.pt").is_file():  # stopped mid-way last time: go on from its checkpoint
        return resume_run(folder, progress=False).summary
    _aside(folder)
    run = train_run(
        build_config(model, flags={"dataset": DATASET, "seed": seed}, sets=list(sets)),
        folder,
        progress=False,
        figures=False,
    )
    return run.summary


def _aside(folder: Path) -> None:
    """Move an unfinished folder out of the way (kept, renamed), so the job can start afresh."""
    if folder.exists():
        folder.rename(folder.with_name(f"{folder.name}-unfinished-{time.strftime('%Y%m%d-%H%M%S')}"))


def _model_job(model: str, bar: Bar | None = None) -> Job:
    def run(seed: int, work: Path) -> dict:
        s = _train(model, seed, work / "runs" / f"{model}-seed{seed}")
        key = "test_acc" if "test_acc" in s else "test_mse"
        return {f"{model}.{key}": s[key], f"{model}.train_time_s": s["train_time_s"]}

    from ..models import get_spec

    metric = "test_acc" if get_spec(model).task == "classify" else "test_mse"
    return Job(model, run, {f"{model}.{metric}": bar} if bar else {}, about=f"{model} preset on the sample")


# Generated photos (mnistlab.reading.photos): the same sets for every training seed, so the spread
# is the training's. The three sets with bars in the README's "Photos and numbers".
PHOTO_SETS, PHOTO_SEED, PHOTOS_PER_SET = ("noisy-paper", "mixed", "numbers"), 1000, 200


def _cnn_robust(seed: int, work: Path) -> dict:
    from ..reading.photos import make_set
    from ..reading.reader import score
    from ..runs import load_run

    folder = work / "runs" / f"cnn-robust-seed{seed}"
    s = _train("cnn-robust", seed, folder)
    model = load_run(folder).model
    out = {"cnn-robust.test_acc": s["test_acc"], "cnn-robust.train_time_s": s["train_time_s"]}
    for c in PHOTO_SETS:
        out[f"cnn-robust.photos.{c}_acc"] = score(model, c, make_set(c, PHOTOS_PER_SET, seed=PHOTO_SEED))["accuracy"]
    return out


# The faithfulness bars explanations are held to, on the first EXPLAIN_DIGITS held-out digits of each seed's cnn
EXPLAIN_DIGITS = 200
EXPLAIN_DELETION = {"saliency": 0.85, "smoothgrad": 0.85, "ig": 0.95, "occlusion": 0.95, "gradcam": 0.75}
EXPLAIN_SPEARMAN = {"saliency": 0.3, "smoothgrad": 0.3, "occlusion": 0.3, "gradcam": 0.4}


def _explain(seed: int, work: Path) -> dict:
    from ..attribution.faithfulness import deletion, randomization
    from ..attribution.maps import METHODS
    from ..data.sources import dataset_for
    from ..runs import load_run

    folder = work / "runs" / f"cnn-seed{seed}"  # the cnn job's run, when it ran first
    s = _train("cnn", seed, folder)
    run = load_run(folder)
    x = dataset_for(run.config.data, notice=lambda m: None).test.images[:EXPLAIN_DIGITS, None].float() / 255
    out = {"explain.cnn.test_acc": s["test_acc"]}
    for method in METHODS:
        d = deletion(run.model, x, method)
        r = randomization(run.model, x, method)
        out[f"explain.{method}.deletion_beats_random"] = d.beats_random
        out[f"explain.{method}.insertion_beats_random"] = d.insertion_beats_random
        out[f"explain.{method}.spearman"] = r.median
    return out


def _explain_bars() -> dict[str, Bar]:
    bars = {f"explain.{m}.deletion_beats_random": Bar(">=", v) for m, v in EXPLAIN_DELETION.items()}
    return bars | {f"explain.{m}.spearman": Bar("<=", v) for m, v in EXPLAIN_SPEARMAN.items()}


def _encoder_classifier(seed: int, work: Path) -> dict:
    enc = work / "runs" / f"ae-convbn-seed{seed}"
    _train("ae-convbn", seed, enc)
    s = _train("encoder-classifier", seed, work / "runs" / f"encoder-classifier-seed{seed}", [f"model.encoder={enc}"])
    return {"encoder-classifier.test_acc": s["test_acc"], "encoder-classifier.train_time_s": s["train_time_s"]}


def _experiment(name: str, seed: int, work: Path, sets: list[str] = ()):
    from .experiments import build_experiment_config, run_experiment

    cfg = build_experiment_config(name, sets=[f"seed={seed}", f"dataset={DATASET}", *sets])
    folder = work / "runs" / f"{name}-seed{seed}"
    reuse = (folder / "summary.json").is_file()
    if not reuse:
        _aside(folder)  # an experiment stopped mid-way starts again; what it wrote is kept aside
    return run_experiment(name, cfg, run_dir=folder, reuse=reuse, progress=False, log=lambda m: None)[1]


def _reencode(seed: int, work: Path) -> dict:
    m = _experiment("reencode", seed, work)
    out = {}
    for part, label in (("reencode", "literal"), ("spread", "spread"), ("plain", "plain")):
        r = m[part]
        out.update(
            {
                f"reencode.{label}.test_mse": r["test_mse"],
                f"reencode.{label}.reencode_error_relative": r["reencode_error_relative"],
                f"reencode.{label}.dead_code_dims": r["dead_code_dims"],
                f"reencode.{label}.linear_probe_acc": r["linear_probe_acc"],
            }
        )
    out["reencode.spread_mse_over_plain"] = m["spread"]["test_mse"] / m["plain"]["test_mse"]
    out["reencode.spread_minus_plain_relative_error"] = (
        m["spread"]["reencode_error_relative"] - m["plain"]["reencode_error_relative"]
    )
    return out


def _unbiased(seed: int, work: Path) -> dict:
    m = _experiment("unbiased", seed, work)
    out = {}
    for r in m["rows"]:
        lam = f"{r['lambda']:g}"
        out[f"unbiased.lambda{lam}.loop_acc"] = r["loop_acc"]
        out[f"unbiased.lambda{lam}.probe_minus_floor"] = r["probe_parity_acc"] - r["loop_only_floor"]
        if "probe2_parity_acc" in r:
            out[f"unbiased.lambda{lam}.probe2_minus_floor"] = r["probe2_parity_acc"] - r["loop_only_floor"]
    strongest = max(m["rows"], key=lambda r: r["lambda"])
    out["unbiased.default.loop_acc"] = strongest["loop_acc"]
    out["unbiased.default.probe_minus_floor"] = strongest["probe_parity_acc"] - strongest["loop_only_floor"]
    return out


def _dream(seed: int, work: Path) -> dict:
    m = _experiment("dream", seed, work)
    out = {"dream.judge_test_acc": m["judge_test_acc"]}
    if "mlp_judge_test_acc" in m:
        out["dream.mlp_judge_test_acc"] = m["mlp_judge_test_acc"]
    for r in m["rounds"]:
        for key in (
            "recognised_of_10",
            "mean_confidence",
            "mlp_recognised_of_10",
            "mlp_mean_confidence",
            "within_digit_distance",
        ):
            if key in r:
                label = key if key.startswith(("mlp", "within")) else f"judge_{key}"
                out[f"dream.round{r['round']}.{label}"] = r[key]
    return out


def _dream_across_seeds(work: Path, seeds: list[int]) -> dict[str, float]:
    """Per round: how far apart the same digit's optimised images are from seed to seed (mean
    pairwise RMS pixel distance of each digit's first copy), one value over all seeds."""
    from ..runs import load_state
    from .experiments.dream import pairwise_distance

    runs = [load_state(f)["images"] for s in seeds if (f := work / "runs" / f"dream-seed{s}" / "images.pt").is_file()]
    if len(runs) < 2:
        return {}
    return {
        f"dream.round{r + 1}.across_seed_distance": pairwise_distance([im[r, :, 0] for im in runs])
        for r in range(min(len(im) for im in runs))
    }


def jobs() -> dict[str, Job]:
    """Every job of the report, in the order it runs (cheap ones first)."""
    js = [
        _model_job("cnn", Bar(">=", 0.96)),
        _model_job("cnn-fast", Bar(">=", 0.96)),
        Job(
            "cnn-robust",
            _cnn_robust,
            {
                "cnn-robust.photos.noisy-paper_acc": Bar(">=", 0.95),
                "cnn-robust.photos.mixed_acc": Bar(">=", 0.85),
                "cnn-robust.photos.numbers_acc": Bar(">=", 0.85),
            },
            about=f"the photo reader: held-out digits and generated photos ({PHOTOS_PER_SET} per set, "
            f"set seed {PHOTO_SEED})",
        ),
        _model_job("ae-dense", Bar("<=", 0.020)),
        _model_job("ae-convtranspose", Bar("<=", 0.015)),
        _model_job("ae-upsample", Bar("<=", 0.015)),
        _model_job("ae-code3d", Bar("<=", 0.040)),
        _model_job("ae-code4x4"),
        _model_job("ae-convbn"),
        Job(
            "encoder-classifier",
            _encoder_classifier,
            {"encoder-classifier.test_acc": Bar(">=", 0.95)},
            about="frozen then fine-tuned on each seed's ae-convbn",
        ),
        Job(
            "reencode",
            _reencode,
            {
                "reencode.spread.dead_code_dims": Bar("<=", 0, "mean"),
                "reencode.spread_mse_over_plain": Bar("<=", 1.3, "mean"),
                "reencode.spread_minus_plain_relative_error": Bar("<=", 0.0, "mean"),
            },
            about="literal, spread and plain autoencoders (ae-dense shape, 10 epochs)",
        ),
        Job(
            "dream",
            _dream,
            about="class images by input optimisation, judged per round by a CNN and an MLP",
            across=_dream_across_seeds,
        ),
        Job(
            "unbiased",
            _unbiased,
            {
                "unbiased.default.loop_acc": Bar(">=", 0.95, "mean"),
                "unbiased.default.probe_minus_floor": Bar("<=", 0.03, "mean"),
            },
            about="loop kept, parity shed, per λ; 'default' is the strongest λ",
        ),
        Job(
            "explain",
            _explain,
            _explain_bars(),
            about=f"attribution methods on each seed's cnn, first {EXPLAIN_DIGITS} held-out digits: deletion "
            "and insertion against random ink-first orders, Spearman after re-initialising the weights",
        ),
    ]
    return {j.name: j for j in js}


MAX_SEEDS = 1000


def parse_seeds(text: str) -> list[int]:
    """'0-4', '0,2,5' or '3'."""
    shown = brief(repr(text), 60)
    if len(text) > 10_000:
        raise ConfigError(f"--seeds {shown}: too long")
    ranges = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d{1,10})\s*(?:-\s*(\d{1,10})\s*)?", part)
        if not m or (m[2] and int(m[2]) < int(m[1])):
            raise ConfigError(f"--seeds {shown}: expected e.g. 0-4 or 0,1,2")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi > SEED_MAX:
            raise ConfigError(f"--seeds {shown}: a seed is at most 2^32-1")
        ranges.append((lo, hi))
    # counted before any list is built: 0-300000000 must not take the machine's memory first
    if sum(hi - lo + 1 for lo, hi in ranges) > MAX_SEEDS:
        raise ConfigError(f"--seeds {shown}: at most {MAX_SEEDS:,} seeds")
    seeds = [s for lo, hi in ranges for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {shown}: each seed once")
    return seeds


def select_jobs(only: list[str] | None = None) -> list[Job]:
    """The jobs `only` names, by name or glob ('ae-*', as --help lists); all when None."""
    table = jobs()
    names: list[str] = []
    for pattern in only or list(table):
        hits = [n for n in table if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ConfigError(
                f"--only {brief(repr(pattern), 60)}: no such figure job (choose from "
                f"{', '.join(table)}; globs such as 'ae-*' work too)"
            )
        names += [n for n in hits if n not in names]
    return [table[n] for n in names]


def run_report(
    seeds: list[int],
    only: list[str] | None = None,
    out: str | Path = "report",
    *,
    progress: bool | None = None,
    notice=None,
) -> dict:
    """Run (or resume) the report's jobs over `seeds`; write report.json, report.md and pictures."""
    from ..train.loop import progress_bar

    chosen = select_jobs(only)
    out = Path(out)
    todo = [(j, s) for j in chosen for s in seeds if not (out / "results" / j.name / f"seed-{s}.json").is_file()]
    if notice and len(todo) < len(chosen) * len(seeds):
        notice(f"{len(chosen) * len(seeds) - len(todo)} of {len(chosen) * len(seeds)} (job, seed) pairs already done")
    bar = progress_bar(len(todo), "report", progress)
    for job, seed in todo:
        bar.set_postfix_str(f"{job.name} seed {seed}")
        t0 = time.perf_counter()
        figures = job.run(seed, out)
        write_json(
            out / "results" / job.name / f"seed-{seed}.json",
            {"job": job.name, "seed": seed, "wall_s": round(time.perf_counter() - t0, 1), "figures": figures},
        )
        if notice and bar.disable:
            notice(f"{job.name} seed {seed}: done in {time.perf_counter() - t0:.0f} s")
        bar.update(1)
    bar.close()
    return write_report(out, chosen, seeds)


def _collect(out: Path, job: Job, seeds: list[int]) -> tuple[dict[str, list[float]], list[int], float]:
    values: dict[str, list[float]] = {}
    done, wall = [], 0.0
    for s in seeds:
        f = out / "results" / job.name / f"seed-{s}.json"
        if not f.is_file():
            continue
        r = json.loads(f.read_text())
        done.append(s)
        wall += r.get("wall_s", 0.0)
        for k, v in r["figures"].items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                values.setdefault(k, []).append(float(v))
    return values, done, wall


def write_report(out: Path, chosen: list[Job], seeds: list[int]) -> dict:
    figures, walls = {}, {}
    for job in chosen:
        values, done, wall = _collect(out, job, seeds)
        walls[job.name] = wall
        if job.across is not None:
            for k, v in job.across(out, done).items():
                figures[k] = {
                    "job": job.name,
                    "mean": v,
                    "sd": 0.0,
                    "min": v,
                    "max": v,
                    "seeds": done,
                    "values": [v],
                    "bar": None,
                    "met": None,
                    "over_seeds": True,
                }
        for k, vs in values.items():
            bar = job.bars.get(k)
            sd = statistics.stdev(vs) if len(vs) > 1 else 0.0
            figures[k] = {
                "job": job.name,
                "mean": statistics.mean(vs),
                "sd": sd,
                "min": min(vs),
                "max": max(vs),
                "seeds": done,
                "values": vs,
                "bar": bar.text() if bar else None,
                "met": bar.met(vs) if bar else None,
            }
    report = {
        "dataset": DATASET,
        "seeds": seeds,
        "figures": figures,
        "wall_s": walls,
        "wall_s_total": round(sum(walls.values()), 1),
    }
    write_json(out / "report.json", report)
    lines = [
        f"# Report: every figure over seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} seeds), {DATASET}",
        "",
        f"Wall time of the jobs: {report['wall_s_total'] / 60:.1f} min.",
        "",
    ]
    for job in chosen:
        keys = [k for k, f in figures.items() if f["job"] == job.name]
        if not keys:
            continue
        lines += [
            f"## {job.name}" + (f": {job.about}" if job.about else ""),
            "",
            "| figure | mean ± sd | min | max | seeds | bar | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for k in keys:
            f = figures[k]
            lines.append(
                f"| {k} | {_num(k, f['mean'])} ± {_num(k, f['sd']).lstrip('+')} | {_num(k, f['min'])} | "
                f"{_num(k, f['max'])} | {len(f['seeds'])} | {f['bar'] or '-'} | "
                f"{'-' if f['met'] is None else 'yes' if f['met'] else 'NO'} |"
            )
        lines.append("")
        _picture(out / f"{job.name}.png", job.name, {k: figures[k] for k in keys})
    write_text(out / "report.md", "\n".join(lines))
    return report


def _num(key: str, v: float) -> str:
    if key.endswith(("_acc", "_confidence", "_beats_random")):
        return f"{v:.2%}"
    if key.endswith(".spearman"):
        return f"{v:+.3f}"
    if key.endswith(("_mse", "_relative", "over_plain", "relative_error", "_floor")):
        return f"{v:.4f}"
    return f"{v:.4g}"


def _picture(path: Path, title: str, figures: dict) -> None:
    """The job's figures as bars with ±sd error bars, one panel per kind of figure."""
    from ..viz import _plt, save_figure

    kinds: dict[str, list[str]] = {}
    for k in figures:
        if not k.endswith("train_time_s"):
            kinds.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    if not kinds:
        return
    plt = _plt()
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False)
    for ax, (kind, keys) in zip(axes[0], kinds.items()):
        labels = [k.rsplit(".", 1)[0].split(".", 1)[-1] for k in keys]
        ax.bar(
            range(len(keys)),
            [figures[k]["mean"] for k in keys],
            yerr=[figures[k]["sd"] for k in keys],
            capsize=4,
            color="tab:blue",
            alpha=0.8,
        )
        for i, k in enumerate(keys):
            ax.plot([i] * len(figures[k]["values"]), figures[k]["values"], "k.", ms=4)
        ax.set_xticks(range(len(keys)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(kind, fontsize=9)
    fig.suptitle(f"{title}: mean ± sd over seeds (dots: each seed)")
    fig.tight_layout()
    save_figure(fig, path)
