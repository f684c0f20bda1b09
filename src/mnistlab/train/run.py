"""A training as a run folder: it is started (config, model from the seed), each epoch of the
loop recorded (metrics row, checkpoint with what resuming needs), and finished (test figures,
calibration, summary.json, figures); a stopped run resumes, a finished one is reused.

    from mnistlab import build_config, train_run
    run = train_run(build_config("cnn", flags={"dataset": "mnist-sample", "epochs": 2}))
    print(run.summary["test_acc"])
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch

from .. import distributed, runtime
from .._io import append_jsonl, write_json, write_jsonl
from ..config import RunConfig
from ..data.printed import with_printed_digits
from ..data.sources import dataset_for
from ..data.splits import Dataset, Split, is_labelled
from ..errors import DataError, DivergedError, RunError
from ..infer import evaluate_and_predict, evaluate_and_score, predict
from ..models import create_model, get_spec
from ..runs import (
    CHECKPOINT,
    Run,
    check_checkpoint,
    environment,
    load_checkpoint,
    load_run,
    model_from_checkpoint,
    new_run_dir,
    prepare_run_dir,
    read_metrics,
    read_run_json,
    save_checkpoint,
    stored_config,
    write_confusion,
)
from .loop import StepInfo, fit
from .track import Trackers


def start_run(cfg: RunConfig, path: Path, ds: Dataset, device) -> Run:
    """A new run folder for `cfg` (config.json) and its model, built from the seed. env.json is
    written once, with the first epoch that knows how the steps run (``record_epochs``)."""
    path = prepare_run_dir(path)
    write_json(path / "config.json", cfg.to_dict(), run_file=True)
    ctx = distributed.current()
    runtime.seed_everything(cfg.train.seed)
    model = create_model(cfg.model_name, cfg.model, load_run=load_run).to(device)
    env = {
        **environment(device, cfg.train.seed),
        "data_source": ds.source,
        **({"distributed": ctx.record()} if ctx.active else {}),
    }
    return Run(path, cfg, model, [], {}, env=env)


def record_epochs(
    run: Run,
    *,
    offset: int = 0,
    tag: dict | None = None,
    resume_extra: Callable[[], dict] = dict,
    on_row: Callable[[dict], None] | None = None,
):
    """An ``on_epoch`` for fit that keeps the run's record: each epoch's row (numbered on from
    `offset`, with `tag`, e.g. the stage or round) appended to metrics.jsonl and run.metrics, and
    a checkpoint holding what resuming needs (fit's state and `resume_extra()`); and env.json, once,
    as soon as fit knows how its steps run (a captured step is settled by its capture)."""

    def on_epoch(row, state):
        row.update(epoch=row["epoch"] + offset, **(tag or {}))
        if run.env is not None and state.plan is not None:
            write_json(run.path / "env.json", {**run.env, **state.plan.record()}, run_file=True)
            run.env = None
        append_jsonl(run.path / "metrics.jsonl", row, run_file=True)
        run.metrics.append(row)
        if on_row is not None:
            on_row(row)
        extra = {"resume": {**state.state_dict(), **resume_extra()}}
        save_checkpoint(
            run.path / CHECKPOINT,
            run.model,
            extra["resume"]["optimizers"][next(iter(state.optimizers))],
            row["epoch"],
            extra,
        )  # the main optimiser's state, with plain-float hyper-parameters

    return on_epoch


def finish_run(
    run: Run,
    ds: Dataset,
    device,
    *,
    train_time: float,
    n_train: int,
    figures: bool = True,
    before=None,
    val: Split | None = None,
) -> Run:
    """Evaluate the trained model on the test split, calibrate it (on `val`, the run's validation
    split, when it has one), write summary.json (which marks the run finished), then the
    figures: after training, and before it from `before` (a copy of the model as it started),
    so none of them delays the result."""
    model, tc = run.model, run.config.train
    test, logits = evaluate_and_score(model, ds.test, tc.eval_batch_size)
    predictions = None if logits is None else logits.argmax(1)
    if not all(math.isfinite(v) for v in test.values()):
        raise DivergedError(
            f"the trained model gives non-finite test figures ({test}); lower the learning "
            "rate. The run stays unfinished"
        )
    summary = {
        **{f"test_{k}": v for k, v in test.items()},
        "train_time_s": round(train_time, 2),
        "epochs": len(run.metrics),
        "params": model.num_parameters(),
        "dataset": ds.name,
        "n_train": n_train,
        "n_test": len(ds.test),
        "device": str(device),
    }
    if "test_mse" in summary:
        summary["test_mse_sum_per_image"] = summary["test_mse"] * 28 * 28
    if logits is not None and is_labelled(ds.test) and len(ds.test) >= 20:
        cal = calibrate_run(run, ds, logits, val)
        summary.update(temperature=cal["temperature"], ece_before=cal["ece_before"], ece_after=cal["ece_after"])
    if (ctx := distributed.current()).active:
        summary["processes"] = ctx.world
    write_json(run.path / "summary.json", summary, run_file=True)
    run.model, run.summary = model.eval(), summary
    if predictions is not None and is_labelled(ds.test):
        write_confusion(run, ds, predictions)  # data, not a picture: written with --figures none too
    if figures:
        from ..viz import run_figures

        run_figures(run, ds, "after", predictions)
        if before is not None:
            run_figures(dataclasses.replace(run, model=before.eval()), ds, "before")
    return run


def calibrate_run(run: Run, ds: Dataset, test_logits: torch.Tensor, val: Split | None = None) -> dict:
    """Fit the run's temperature (calibrate.py) on held-out digits, write calibration.json and set
    it on the model: on `val`, the run's validation split, when it has one (the ECE then
    reported on the test split), else on a seeded half of the test split (the ECE on the other
    half)."""
    from .. import calibrate

    tc = run.config.train
    target = getattr(run.model, "target", lambda y: y)  # the class each label stands for (loop-parity: a loop)
    labels = target(ds.test.labels)
    if val is not None:
        val_logits = predict(run.model, val.images, tc.eval_batch_size)
        cal = calibrate.calibration((val_logits, target(val.labels)), (test_logits, labels), "validation split")
    else:
        fit, report = calibrate.split_halves(len(labels), tc.seed)
        cal = calibrate.calibration(
            (test_logits[fit], labels[fit]), (test_logits[report], labels[report]), "half of the test split (seeded)"
        )
    write_json(run.path / "calibration.json", cal, run_file=True)
    run.model.temperature = cal["temperature"]
    return cal


def train_run(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    progress: bool | None = None,
    notice: Callable[[str], None] | None = None,
    figures: bool = True,
    after_epoch: Callable[[dict], None] | None = None,
    on_step: Callable[[StepInfo], bool | None] | None = None,
) -> Run:
    """Train the model `cfg` describes and record everything in a run folder. `after_epoch(row)`
    is called once each epoch is recorded and checkpointed (a sweep reports to its pruner
    there; an exception it raises stops the run, which stays unfinished). `on_step`, fit's live
    view (``loop.StepInfo``): returning True stops the training where it is, and the run is
    finished as it stands (tested, recorded, drawn), its last row marked ``stopped``."""
    tc = cfg.train
    ctx, device = distributed.setup(tc.device, tc.threads)  # under torchrun: this rank's device
    ds = dataset or dataset_for(cfg.data, notice=notice if ctx.main else None)
    cfg.data.dataset = ds.name  # record what was used, not 'auto'
    if get_spec(cfg.model_name).task == "classify" and not (is_labelled(ds.train) and is_labelled(ds.test)):
        raise DataError(
            f"{cfg.model_name} is a classifier and needs labels: give --train-labels and "
            "--test-labels (or CSV/NPZ files that hold them)"
        )
    n_classes = getattr(cfg.model, "num_classes", None)
    if n_classes is not None and len(ds.train) and (top := int(ds.train.labels.max())) >= n_classes:
        raise DataError(
            f"{ds.name} has labels up to {top}, but {cfg.model_name} scores {n_classes} classes: "
            f"set model.num_classes={top + 1}"
        )
    if ctx.main and tc.track:  # an unreachable tracker fails here, before any run folder is made
        from .track import check_services

        check_services(tc.track)
    if not ctx.main:  # another rank of a distributed run: the same model, nothing written
        runtime.seed_everything(tc.seed)
        model = create_model(cfg.model_name, cfg.model, load_run=load_run).to(device)
        # no folder: this rank writes nothing
        return _train(Run(cast(Path, None), cfg, model, [], {}), ds, device, progress=False)
    run = start_run(cfg, Path(run_dir) if run_dir else new_run_dir(cfg.model_name, ds.name), ds, device)
    before = copy.deepcopy(run.model) if figures else None  # drawn at the end, with the rest
    return _train(
        run, ds, device, progress=progress, figures=figures, after_epoch=after_epoch, before=before, on_step=on_step
    )


def resume_run(
    path: str | Path, *, model: str | None = None, progress: bool | None = None, notice=None, figures: bool = True
) -> Run:
    """Go on with a run that was stopped mid-way (killed, interrupted) from its last checkpoint:
    weights, optimiser, schedule, random generators and epoch, so it ends as if never stopped.
    The folder is trusted only as far as it checks: its stored config is validated as a new one
    is, and the checkpoint must hold the model config.json describes."""
    path = Path(path)
    if not path.is_dir() or not os.path.lexists(path / "config.json"):
        raise RunError(f"{path}: no run folder to resume (no config.json)")
    cfg = stored_config(read_run_json(path / "config.json"), path / "config.json", training=True)
    if model is not None and cfg.model_name != model:
        raise RunError(f"{path} holds a {cfg.model_name!r} run, not {model!r}")
    if os.path.lexists(path / "summary.json"):
        raise RunError(f"{path}: this run finished; nothing to resume")
    state = load_checkpoint(path / CHECKPOINT)
    check_checkpoint(state, cfg, path / CHECKPOINT)
    resume = state.get("extra", {}).get("resume") if isinstance(state.get("extra"), dict) else None
    if not isinstance(resume, dict) or not resume:
        raise RunError(f"{path}: its checkpoint holds no training state to resume from")
    if resume.get("part_of"):
        raise RunError(
            f"{path}: part of a {resume['part_of']} experiment, trained round by round; run the experiment again"
        )
    ctx, device = distributed.setup(cfg.train.device, cfg.train.threads)
    history = read_metrics(path / "metrics.jsonl", notice=notice if ctx.main else None)
    if len(history) < state["epoch"]:
        raise RunError(
            f"{path}: metrics.jsonl holds {len(history)} epochs but the checkpoint is at epoch "
            f"{state['epoch']}; the record is incomplete, so the run cannot go on as if never stopped"
        )
    ds = dataset_for(cfg.data, notice=notice if ctx.main else None)
    net = model_from_checkpoint(state, str(path / CHECKPOINT)).to(device)
    # Epochs logged after the checkpoint (killed between the two writes) are done again.
    history = history[: state["epoch"]]
    if ctx.main:
        write_jsonl(path / "metrics.jsonl", history, run_file=True)
    run = Run(path, cfg, net, history, {})
    return _train(run, ds, device, progress=progress, resume=resume, figures=figures)


def _train(
    run: Run,
    ds: Dataset,
    device,
    *,
    progress=None,
    resume: dict | None = None,
    figures: bool = True,
    after_epoch: Callable[[dict], None] | None = None,
    before=None,
    on_step=None,
) -> Run:
    """Train a run's model stage by stage (from `resume` on, if given), checkpointing every epoch
    with what resuming needs; then evaluate, write summary.json and the figures. In a
    distributed job every rank trains and only rank 0 records."""
    model, tc = run.model, run.config.train
    train_split, evals = ds.train, {}
    if tc.val_fraction > 0:
        train_split, evals["val"] = ds.split_validation(tc.val_fraction, tc.seed)
    else:
        evals["test"] = ds.test
    if tc.printed > 0:
        train_split = with_printed_digits(train_split, tc.printed, tc.seed)

    main = distributed.current().main
    trackers = Trackers(tc.track if main else (), run.path, run.config.to_dict())
    elapsed = float(resume.get("elapsed", 0.0)) if resume else 0.0
    first = int(resume.get("stage", 0)) if resume else 0
    t0 = time.perf_counter()
    stages = model.stages(tc)
    try:
        for k, stage in enumerate(stages[first:], start=first):
            stage.setup()
            resuming = resume if k == first else None
            on_epoch = (
                record_epochs(
                    run,
                    offset=len(run.metrics) - (resuming["epoch"] if resuming else 0),
                    tag={"stage": stage.name} if len(stages) > 1 else None,
                    on_row=trackers.epoch,
                    resume_extra=_resume_extra(k, elapsed, t0),
                )
                if main
                else None
            )
            if after_epoch is not None and on_epoch is not None:
                on_epoch = _then(on_epoch, after_epoch)
            st = dataclasses.replace(stage.train, seed=stage.train.seed + k)
            rows = fit(
                model,
                train_split,
                evals,
                st,
                device=device,
                on_epoch=on_epoch,
                on_step=on_step,
                progress=progress,
                resume=resuming,
            )
            if rows and rows[-1].get("stopped"):
                break  # stopped by the live view: no later stage
    except BaseException:
        trackers.abort()
        raise
    if not main:
        # wait while rank 0 tests, records and draws: a rank that left first would tear the
        # process group down under it (gloo aborted such a rank now and then)
        distributed.barrier()
        return run
    finish_run(
        run,
        ds,
        device,
        train_time=elapsed + time.perf_counter() - t0,
        n_train=len(train_split),
        figures=figures,
        before=before,
        val=evals.get("val"),
    )
    trackers.finish(run.summary, run.figures)
    distributed.barrier()
    return run


def _resume_extra(stage: int, elapsed: float, t0: float) -> Callable[[], dict]:
    """What a checkpoint of `stage` adds for resuming: the stage and the training time so far."""
    return lambda: {"stage": stage, "elapsed": elapsed + time.perf_counter() - t0}


def _then(on_epoch, after):
    def both(row, state):
        stop = on_epoch(row, state)
        after(row)
        return stop

    return both


def reuse_run(path: str | Path, *, notice=None) -> Run:
    """Load a finished run, evaluate it on its dataset's test split again, redraw its figures."""
    run = load_run(path)
    if not run.summary:
        raise RunError(f"{run.path}: this run never finished (no summary.json); go on with it with --resume")
    cfg = run.config
    ds = dataset_for(cfg.data, notice=notice)
    test, predictions = evaluate_and_predict(run.model, ds.test, cfg.train.eval_batch_size)
    run.summary.update({f"test_{k}": v for k, v in test.items()})
    from ..viz import run_figures

    if predictions is not None and is_labelled(ds.test):
        write_confusion(run, ds, predictions)
    run_figures(run, ds, "after", predictions)
    return run
