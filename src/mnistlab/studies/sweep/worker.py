"""One worker of a sweep: which trial to start next so that every grid point trains exactly once
with any number of workers (a point is settled by a finished trial; one cut off is done again;
one whose point is taken steps aside), each trial a run folder; ``run_sweep`` starts the workers.
"""

from __future__ import annotations

import collections
import math
import os
import socket
import time
import warnings
from pathlib import Path

from ..._io import make_folder
from ...config import build_config
from ...errors import ConfigError, MnistlabError, RunError
from .results import _fmt, write_results
from .space import _slug
from .study import HEARTBEAT_S, Sweep, _optuna, _safe_url, open_storage, open_study, plan_sweep

MAX_REDO = 3  # a grid point cut off this many times is not started again


# ---------------------------------------------------------------- one worker


class _Duplicate(Exception):
    """This trial's grid point is already taken by another trial."""


def _point(trial, keys) -> tuple | None:
    params = trial.params if all(k in trial.params for k in keys) else trial.system_attrs.get("fixed_params")
    if not params or not all(k in params for k in keys):
        return None
    return tuple(str(params[k]) for k in keys)


def _settled(trial, ts) -> bool:
    """The trial has an outcome of its own: complete, pruned, or failed by its own error."""
    return trial.state in (ts.COMPLETE, ts.PRUNED) or (trial.state == ts.FAIL and "error" in trial.user_attrs)


def _next_step(study, sweep: Sweep) -> tuple[str, object]:
    """What a worker does next: ('run', None), ('redo', params), ('wait', n_running) or ('done', None)."""
    ts = _optuna().trial.TrialState
    trials = [t for t in study.get_trials(deepcopy=False) if "duplicate_of" not in t.user_attrs]
    running = [t for t in trials if t.state in (ts.RUNNING, ts.WAITING)]
    if sweep.sampler != "grid":
        counted = sum(_settled(t, ts) for t in trials) + len(running)
        if counted < sweep.trials:
            return "run", None
        return ("wait", len(running)) if running else ("done", None)
    keys = sweep.space.keys
    cut = collections.Counter(_point(t, keys) for t in trials if t.state == ts.FAIL and not _settled(t, ts))
    taken = {_point(t, keys) for t in trials if _settled(t, ts) or t.state in (ts.RUNNING, ts.WAITING)}
    taken |= {p for p, n in cut.items() if n >= MAX_REDO}  # a point that keeps killing its worker is given up
    unknown = sum(1 for t in running if _point(t, keys) is None)  # just started, no values yet
    pending = [p for p in sweep.space.points() if p not in taken]
    if len(pending) > unknown:
        if any(t.state == ts.WAITING for t in trials) or len(study.get_trials(deepcopy=False)) < sweep.trials:
            return "run", None  # a waiting redo, or the grid sampler's next unvisited point
        return "redo", dict(zip(keys, pending[0]))
    return ("wait", len(running)) if running else ("done", None)


def _objective(sweep: Sweep, ds, *, progress, say, threads: int = 0):
    from ...train.run import train_run

    optuna = _optuna()
    ts = optuna.trial.TrialState

    def objective(trial):
        try:
            return attempt(trial)
        except (optuna.TrialPruned, _Duplicate):
            raise
        except Exception as e:  # a failing trial is a result (its own error), not the end of the sweep
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            trial.set_user_attr("error", msg)
            say(f"trial {trial.number}: failed: {msg}")
            raise

    def attempt(trial):
        combo = sweep.space.suggest(trial)
        point = tuple(combo[k] for k in sweep.space.keys)
        if sweep.sampler == "grid":
            for t in trial.study.get_trials(deepcopy=False):
                if t.number == trial.number or "duplicate_of" in t.user_attrs or _point(t, sweep.space.keys) != point:
                    continue
                if _settled(t, ts) or (t.state == ts.RUNNING and t.number < trial.number):
                    trial.set_user_attr("duplicate_of", t.number)
                    raise _Duplicate(f"point taken by trial {t.number}")
        what = " ".join(f"{k}={v}" for k, v in combo.items())
        sets = [*sweep.sets, *(f"{k}={v}" for k, v in combo.items())]
        if threads:
            sets.append(f"threads={threads}")
        folder = sweep.out / f"t{trial.number:03d}-{_slug(combo)}"
        trial.set_user_attr("run", str(folder.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        try:
            cfg = build_config(sweep.model, flags=sweep.flags, sets=sets)

            def report(row):
                value = row.get(sweep.metric)
                if value is None or not math.isfinite(value):
                    return
                trial.report(value, row["epoch"])
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

            run = train_run(cfg, folder, dataset=ds, progress=progress, after_epoch=report, figures=sweep.figures)
        except optuna.TrialPruned as e:
            say(f"trial {trial.number} {what}: {e}")
            raise
        s, last = run.summary, run.metrics[-1]
        for k in ("test_acc", "test_mse", "test_loss", "params", "train_time_s", "epochs"):
            if s.get(k) is not None:
                trial.set_user_attr(k, s[k])
        value = last.get(sweep.metric, s.get(sweep.metric))
        if value is None or not math.isfinite(value):
            raise RunError(f"no finite {sweep.metric} to report")
        say(f"trial {trial.number} {what}: {sweep.metric} {_fmt(sweep.metric, value)} in {s['train_time_s']:.1f} s")
        return value

    return objective


def work(
    sweep: Sweep,
    *,
    progress=None,
    notice=None,
    heartbeat: int = HEARTBEAT_S,
    threads: int = 0,
    prefix: str = "",
    poll: float | None = None,
    study=None,
) -> int:
    """One worker: start trials until the study holds what the sweep asks for, waiting on
    trials other workers run (one of them may have been killed: its trial is then redone).
    `study`: the study already opened in this process (else it is opened here). Returns how
    many trials this worker ran."""
    from ...data.sources import dataset_for

    optuna = _optuna()
    say = (lambda m: notice(prefix + m)) if notice else (lambda m: None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    study = study or open_study(sweep, open_storage(sweep.storage, heartbeat))
    ds = dataset_for(build_config(sweep.model, flags=sweep.flags, sets=sweep.sets).data, notice=notice)
    objective = _objective(sweep, ds, progress=progress, say=say, threads=threads)
    started, ran, waiting_said = time.monotonic(), 0, False
    poll = poll or min(5.0, heartbeat / 2)
    while True:
        if sweep.timeout is not None and time.monotonic() - started > sweep.timeout:
            say(f"--timeout {sweep.timeout:g} s reached; no new trials from this worker")
            break
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed, its point redone
        step, arg = _next_step(study, sweep)
        if step == "done":
            break
        if step == "wait":
            if not waiting_said:
                say(f"waiting for {arg} trial(s) running elsewhere")
                waiting_said = True
            time.sleep(poll)
            continue
        waiting_said = False
        if step == "redo":
            say(f"redoing {' '.join(f'{k}={v}' for k, v in arg.items())} (its trial was cut off)")
            study.enqueue_trial(arg, user_attrs={"redo": True})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
        ran += 1
    return ran


def _worker_main(sweep: Sweep, heartbeat: int, threads: int, index: int, progress, parent: int = 0) -> None:
    """A worker process (started by run_sweep for --workers K); it ends with the command that
    started it, even a killed one."""
    import sys

    from ...distributed import die_with_parent

    die_with_parent(parent or None)
    try:
        work(
            sweep,
            progress=progress,
            heartbeat=heartbeat,
            threads=threads,
            prefix=f"[worker {index}] ",
            notice=lambda m: print(f"mnistlab: {m}", file=sys.stderr, flush=True),
        )
    except KeyboardInterrupt:
        sys.exit(130)
    except MnistlabError as e:
        print(f"mnistlab: error: [worker {index}] {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def run_sweep(
    model: str,
    grid: list[str] | None = None,
    *,
    search: list[str] | None = None,
    trials: int | None = None,
    sampler: str | None = None,
    prune: str | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    flags: dict | None = None,
    sets: list[str] | None = None,
    out_dir: str | Path | None = None,
    progress=None,
    notice=None,
    heartbeat: int = HEARTBEAT_S,
    figures: bool = True,
) -> tuple[Path, list[dict]]:
    """Run (or resume, or join) a sweep; returns its folder and table rows once the study holds
    every trial it asks for (or the timeout passed)."""
    cpus = os.cpu_count() or 1
    if not 1 <= workers <= cpus:
        raise ConfigError(
            f"--workers {workers}: must be in 1..{cpus} (one process per CPU at most; "
            "more machines join with the same --storage and --study)"
        )
    if not 1 <= heartbeat <= 3600:
        raise ConfigError(f"--heartbeat {heartbeat}: must be in 1..3600 seconds")
    sweep = plan_sweep(
        model,
        grid=grid,
        search=search,
        trials=trials,
        sampler=sampler,
        prune=prune,
        timeout=timeout,
        storage=storage,
        study=study,
        flags=flags,
        sets=sets,
        out_dir=out_dir,
        figures=figures,
    )
    storage = open_storage(sweep.storage, heartbeat)  # before any folder: a bad storage leaves none
    make_folder(sweep.out)
    opened = open_study(sweep, storage)  # created once, here
    if notice:
        done = sum(t.state.is_finished() for t in opened.get_trials(deepcopy=False))
        notice(
            f"study {sweep.study!r} in {_safe_url(sweep.storage)}: {sweep.sampler} sampler, "
            f"{sweep.trials} trials{f', {done} already finished' if done else ''}"
        )
    if workers == 1:
        work(sweep, progress=progress, notice=notice, heartbeat=heartbeat, study=opened)
    else:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = mp.get_context("spawn")
        procs = [
            ctx.Process(target=_worker_main, args=(sweep, heartbeat, threads, i + 1, False, os.getpid()), daemon=False)
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join()
        except KeyboardInterrupt:
            for p in procs:
                p.join(timeout=30)
            raise
        bad = [i + 1 for i, p in enumerate(procs) if p.exitcode not in (0, None)]
        if bad and notice:
            notice(f"worker(s) {', '.join(map(str, bad))} stopped early; the study keeps what they finished")
    rows = write_results(opened, sweep.out, sweep=sweep)  # it reads the storage afresh
    return sweep.out, rows
