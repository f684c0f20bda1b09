"""Hyperparameter sweeps on an Optuna study: a grid, or a search (TPE or random) with pruning,
in one process, several, or on several machines sharing one study.

    mnistlab sweep cnn --grid lr=0.0005,0.001,0.002 --grid batch_size=64,128
    mnistlab sweep cnn --search lr=1e-4:1e-2:log --search dropout=0.1:0.5 --trials 20 --prune
    mnistlab sweep cnn --grid lr=0.001,0.002,0.004 --storage postgresql+psycopg://lab@db/optuna \\
        --study cnn-lr --workers 2          # the same line on another machine joins the study

Every trial trains into a run folder of its own (``tNNN-KEY-VALUE...`` in the sweep folder),
named in the trial's attributes with its host. Trials report the validation metric after
every epoch (a sweep carves ``val_fraction=0.1`` from the training set unless told
otherwise, so choosing never looks at the test split); ``--prune`` stops poor ones there.

Optuna does the sampling, pruning, storage and heartbeats; this module decides which trial
to start so that, with any number of workers, every grid point trains exactly once: a
point is settled by a finished trial (complete, pruned, or failed with an error of its
own); a trial cut off (its worker killed, marked failed by Optuna's heartbeat, or
interrupted) leaves its point to be done again; a trial that finds its point already taken
by another steps aside before training (recorded, no run folder).
"""
from __future__ import annotations

import collections
import csv
import hashlib
import io
import itertools
import json
import math
import os
import random
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..._io import atomic_open, write_json
from ...checks import brief
from ...config import build_config
from ...errors import ConfigError, MnistlabError, RunError
from ...runs import runs_root

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband")
DEFAULT_VAL_FRACTION = 0.1
MAX_REDO = 3  # a grid point cut off this many times is not started again
HEARTBEAT_S = 10  # a worker's running trial is marked failed after 3 missed beats
_RANGE = re.compile(r"^\s*([-+0-9.eE]+)\s*:\s*([-+0-9.eE]+)\s*(?::\s*(log))?\s*$")


def _optuna():
    try:
        import optuna
    except ImportError as e:
        raise MnistlabError(f"sweeps need the 'sweep' extra ({e.name} is missing): pip install 'mnistlab[sweep]'") \
            from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one-line notes say what happens
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, pictures
    return optuna


# ---------------------------------------------------------------- the search space

def _split_values(item: str, flag: str) -> tuple[str, list[str]]:
    if "=" not in item:
        raise ConfigError(f"{flag} {item!r}: expected key=v1,v2,..." + (" or key=LOW:HIGH[:log]" if flag == "--search"
                                                                        else ""))
    key, values = (s.strip() for s in item.split("=", 1))
    if not key:
        raise ConfigError(f"{flag} {item!r}: no key before '='")
    parts = [v.strip() for v in values.split("|" if "|" in values else ",")]
    if not all(parts):
        raise ConfigError(f"{flag} {item!r}: empty value")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"{flag} {item!r}: a value is given twice")
    return key, parts


MAX_GRID = 10_000  # points of one grid, counted (Space.size) before any is listed


@dataclass
class Range:
    low: float
    high: float
    log: bool
    integer: bool


@dataclass
class Space:
    """Keys to vary: each a list of values (categorical) or a numeric Range."""

    dims: dict[str, list[str] | Range] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return list(self.dims)

    @property
    def discrete(self) -> bool:
        return all(isinstance(v, list) for v in self.dims.values())

    @property
    def size(self) -> int:
        """How many grid points: counted, never built (a 10^10-point grid must not be listed)."""
        return math.prod(len(v) for v in self.dims.values() if isinstance(v, list))

    def points(self) -> list[tuple[str, ...]]:
        """Every grid point, in the order the values were given (the table's order); plan_sweep
        has bounded their count (MAX_GRID)."""
        return list(itertools.product(*self.dims.values()))

    def spec(self) -> dict:
        return {k: v if isinstance(v, list) else {"low": v.low, "high": v.high, "log": v.log, "int": v.integer}
                for k, v in self.dims.items()}

    def suggest(self, trial) -> dict[str, str]:
        """The trial's values, as --set strings."""
        out = {}
        for k, v in self.dims.items():
            if isinstance(v, list):
                out[k] = trial.suggest_categorical(k, v)
            elif v.integer:
                out[k] = str(trial.suggest_int(k, int(v.low), int(v.high), log=v.log))
            else:
                out[k] = repr(trial.suggest_float(k, v.low, v.high, log=v.log))
        return out


def _number(text: str, item: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise ConfigError(f"--search {item!r}: {text!r} is not a number") from None
    if not math.isfinite(x):
        raise ConfigError(f"--search {item!r}: bounds must be finite")
    return x


def parse_space(grid: list[str] | None = None, search: list[str] | None = None) -> Space:
    """--grid key=v1,v2 (values split on '|' when there is one, for list values) and --search
    key=LOW:HIGH[:log] (int when both bounds are) or key=a|b|c."""
    space = Space()
    for flag, items in (("--grid", grid or []), ("--search", search or [])):
        for item in items:
            m = _RANGE.match(item.split("=", 1)[1]) if flag == "--search" and "=" in item else None
            if m:
                key = item.split("=", 1)[0].strip()
                lo, hi = _number(m[1], item), _number(m[2], item)
                if not lo < hi:
                    raise ConfigError(f"--search {item!r}: LOW must be below HIGH")
                if m[3] and lo <= 0:
                    raise ConfigError(f"--search {item!r}: a log range needs LOW > 0")
                integer = all(re.fullmatch(r"[-+]?\d+", s.strip()) for s in (m[1], m[2]))
                value: list[str] | Range = Range(lo, hi, bool(m[3]), integer)
            elif flag == "--search" and "=" in item and ":" in item.split("=", 1)[1] and not re.search(
                    r"[|,]", item.split("=", 1)[1]):
                raise ConfigError(f"--search {item!r}: expected LOW:HIGH[:log] with numbers LOW < HIGH")
            else:
                key, value = _split_values(item, flag)
            if key in space.dims:
                raise ConfigError(f"{flag} {item!r}: {key} is given twice")
            space.dims[key] = value
    if not space.dims:
        raise ConfigError("a sweep needs at least one --grid key=v1,v2 or --search key=LOW:HIGH")
    return space


def _slug(combo: dict[str, str]) -> str:
    def short(v: str) -> str:
        try:
            x = float(v)
        except ValueError:
            return v
        return v if len(v) <= 8 else f"{x:.4g}"

    return "_".join(f"{k.split('.')[-1]}-{re.sub(r'[^A-Za-z0-9.]+', '-', short(v))}" for k, v in combo.items())[:100]


# ---------------------------------------------------------------- the sweep's settings

@dataclass
class Sweep:
    """One sweep: what to train, over what, with which sampler and pruner, where recorded."""

    model: str
    space: Space
    sampler: str
    trials: int  # how many trials the study should hold (a grid: its size)
    metric: str  # per-epoch row key reported to Optuna, e.g. val_acc
    direction: str  # maximize or minimize
    study: str
    storage: str
    out: Path
    flags: dict = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)
    prune: str | None = None
    timeout: float | None = None
    seed: int = 0
    epochs: int = 1  # per trial (the pruner's resource)
    figures: bool = True  # each trial's run draws its figures (after its summary.json)

    def identity(self) -> dict:
        """What makes two workers' sweeps the same study (checked when one joins)."""
        return {"model": self.model, "space": self.space.spec(), "metric": self.metric, "direction": self.direction,
                "flags": {k: v for k, v in self.flags.items() if v is not None}, "sets": self.sets}


def _task(model: str) -> str:
    from ...models import get_spec

    return get_spec(model).task


def plan_sweep(model: str, *, grid: list[str] | None = None, search: list[str] | None = None,
               trials: int | None = None, sampler: str | None = None, prune: str | None = None,
               timeout: float | None = None, storage: str | None = None, study: str | None = None,
               flags: dict | None = None, sets: list[str] | None = None, out_dir: str | Path | None = None,
               figures: bool = True) -> Sweep:
    """Check the arguments (one clear error each) and settle names, folders and storage."""
    space = parse_space(grid, search)
    if space.discrete and space.size > MAX_GRID:
        raise ConfigError(f"the grid has {space.size:,} points (the product of its value counts); at most "
                          f"{MAX_GRID:,}: give fewer values")
    sampler = sampler or ("grid" if not search else "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: must be one of {', '.join(SAMPLERS)}")
    if prune is not None and prune not in PRUNERS:
        raise ConfigError(f"--prune {prune!r}: must be one of {', '.join(PRUNERS)}")
    if trials is not None and not 1 <= trials <= 100_000:
        raise ConfigError(f"--trials {trials}: must be in 1..100,000")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--timeout {timeout}: must be a positive number of seconds")
    if sampler == "grid":
        if not space.discrete:
            ranges = [k for k, v in space.dims.items() if isinstance(v, Range)]
            raise ConfigError(f"--sampler grid needs listed values, not ranges ({', '.join(ranges)}): "
                              "give them as key=a|b|c or use --sampler tpe/random")
        size = len(space.points())
        if trials is not None and trials != size:
            raise ConfigError(f"--trials {trials}: a grid runs each of its {size} points once (leave --trials out)")
        trials = size
    elif trials is None:
        if search:
            raise ConfigError(f"--sampler {sampler} needs --trials N (how many trials the study should hold)")
        trials = len(space.points())
    sets = [f"val_fraction={DEFAULT_VAL_FRACTION}", *(sets or [])]  # choose on validation; a --set wins
    flags = dict(flags or {})
    base = build_config(model, flags=flags, sets=sets)  # fail early on a bad base config
    for point in itertools.islice(space.points(), 64) if space.discrete else ():  # and on a bad listed value
        build_config(model, flags=flags, sets=[*sets, *(f"{k}={v}" for k, v in zip(space.keys, point))],
                     validate=False)
    task = _task(model)
    split = "val" if base.train.val_fraction > 0 else "test"
    metric, direction = (f"{split}_acc", "maximize") if task == "classify" else (f"{split}_mse", "minimize")
    sweep = Sweep(model, space, sampler, trials, metric, direction, "", "", Path(), flags, sets, prune, timeout,
                  seed=base.train.seed, epochs=base.train.epochs, figures=figures)
    digest = hashlib.sha1(json.dumps(sweep.identity(), sort_keys=True).encode()).hexdigest()[:8]
    sweep.study = study or f"{model}-{digest}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", sweep.study):
        raise ConfigError(f"--study {sweep.study!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    sweep.out = Path(out_dir) if out_dir else runs_root() / f"sweep-{sweep.study}"
    if storage is not None:
        check_storage_url(storage)
    sweep.storage = storage or f"sqlite:///{(sweep.out / 'study.db').resolve()}"
    return sweep


# ---------------------------------------------------------------- the study

def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def check_storage_url(url: str) -> None:
    """A study must live where every worker can reach it: a SQLite file or a database server."""
    if not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise ConfigError(f"--storage {brief(url, 80)}: not a database URL (e.g. sqlite:///study.db or "
                          "postgresql+psycopg://user@host/db)")
    if url.startswith("sqlite:") and url.split("?")[0] in ("sqlite://", "sqlite:///", "sqlite:///:memory:"):
        raise ConfigError(f"--storage {brief(url, 80)}: an in-memory SQLite study cannot hold a sweep "
                          "(its workers and heartbeats need a file): give sqlite:///PATH")


def open_storage(url: str, heartbeat: int = HEARTBEAT_S):
    """Optuna's RDB storage (SQLite, PostgreSQL, ... any SQLAlchemy URL) with heartbeats, so a
    killed worker's trial is marked failed."""
    optuna = _optuna()
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        for attempt in range(6):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                                  grace_period=3 * heartbeat)
            except Exception as e:  # workers creating a new database's tables at once: one wins, retry
                if attempt == 5 or not re.search(r"IntegrityError|UniqueViolation|already exists|locked",
                                                 f"{type(e).__name__} {e}"):
                    raise
                time.sleep(0.2 + random.random() * (attempt + 1))
    except ModuleNotFoundError as e:
        raise MnistlabError(f"--storage {_safe_url(url)}: the driver {e.name!r} is missing "
                            "(pip install 'mnistlab[sweep]' brings psycopg for PostgreSQL)") from None
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"--storage {_safe_url(url)}: cannot open the study storage ({msg[:200]})") from None


def _sampler(sweep: Sweep):
    optuna = _optuna()
    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler({k: list(v) for k, v in sweep.space.dims.items()}, seed=sweep.seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=None)  # workers must not draw the same points
    return optuna.samplers.TPESampler(n_startup_trials=min(10, max(2, sweep.trials // 4)))


def _pruner(sweep: Sweep):
    optuna = _optuna()
    if sweep.prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, sweep.trials // 4)))
    if sweep.prune == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(sweep.epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, storage):
    """Create the study, or join it if it exists and is the same sweep (else one clear error)."""
    optuna = _optuna()
    try:
        study = optuna.create_study(storage=storage, study_name=sweep.study, direction=sweep.direction,
                                    sampler=_sampler(sweep), pruner=_pruner(sweep), load_if_exists=True)
    except ValueError as e:  # e.g. the stored study optimises the other way
        raise RunError(f"study {sweep.study!r}: {e}") from None
    ident = sweep.identity()
    held = study.user_attrs.get("mnistlab")
    if held is None:
        study.set_user_attr("mnistlab", ident)
    elif held != json.loads(json.dumps(ident)):
        raise RunError(f"study {sweep.study!r} in {_safe_url(sweep.storage)} is another sweep "
                       f"({held.get('model')} over {', '.join(held.get('space', {}))}); give another --study")
    return study


def load_study(storage_url: str, name: str | None):
    optuna = _optuna()
    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"--storage {_safe_url(storage_url)} holds {len(names)} studies "
                              f"({', '.join(names[:10]) or 'none'}): name one with --study")
        name = names[0]
    if name not in names:
        raise RunError(f"no study {name!r} in {_safe_url(storage_url)} (it holds: {', '.join(names[:10]) or 'none'})")
    return optuna.load_study(study_name=name, storage=storage)


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
        say(f"trial {trial.number} {what}: {sweep.metric} {_fmt(sweep.metric, value)} "
            f"in {s['train_time_s']:.1f} s")
        return value

    return objective


def _fmt(metric: str, v) -> str:
    if v is None or v == "":
        return ""
    if metric.endswith("acc"):
        return f"{v:.2%}"
    if metric.endswith(("mse", "loss")):
        return f"{v:.5f}"
    return str(v)


def work(sweep: Sweep, *, progress=None, notice=None, heartbeat: int = HEARTBEAT_S, threads: int = 0,
         prefix: str = "", poll: float | None = None, study=None) -> int:
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
        work(sweep, progress=progress, heartbeat=heartbeat, threads=threads, prefix=f"[worker {index}] ",
             notice=lambda m: print(f"mnistlab: {m}", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        sys.exit(130)
    except MnistlabError as e:
        print(f"mnistlab: error: [worker {index}] {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def run_sweep(model: str, grid: list[str] | None = None, *, search: list[str] | None = None,
              trials: int | None = None, sampler: str | None = None, prune: str | None = None,
              timeout: float | None = None, storage: str | None = None, study: str | None = None,
              workers: int = 1, flags: dict | None = None, sets: list[str] | None = None,
              out_dir: str | Path | None = None, progress=None, notice=None,
              heartbeat: int = HEARTBEAT_S, figures: bool = True) -> tuple[Path, list[dict]]:
    """Run (or resume, or join) a sweep; returns its folder and table rows once the study holds
    every trial it asks for (or the timeout passed)."""
    cpus = os.cpu_count() or 1
    if not 1 <= workers <= cpus:
        raise ConfigError(f"--workers {workers}: must be in 1..{cpus} (one process per CPU at most; "
                          "more machines join with the same --storage and --study)")
    if not 1 <= heartbeat <= 3600:
        raise ConfigError(f"--heartbeat {heartbeat}: must be in 1..3600 seconds")
    sweep = plan_sweep(model, grid=grid, search=search, trials=trials, sampler=sampler, prune=prune,
                       timeout=timeout, storage=storage, study=study, flags=flags, sets=sets, out_dir=out_dir,
                       figures=figures)
    sweep.out.mkdir(parents=True, exist_ok=True)
    opened = open_study(sweep, open_storage(sweep.storage, heartbeat))  # created once, here
    if notice:
        done = sum(t.state.is_finished() for t in opened.get_trials(deepcopy=False))
        notice(f"study {sweep.study!r} in {_safe_url(sweep.storage)}: {sweep.sampler} sampler, "
               f"{sweep.trials} trials{f', {done} already finished' if done else ''}")
    if workers == 1:
        work(sweep, progress=progress, notice=notice, heartbeat=heartbeat, study=opened)
    else:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_worker_main, args=(sweep, heartbeat, threads, i + 1, False, os.getpid()),
                             daemon=False)
                 for i in range(workers)]
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


# ---------------------------------------------------------------- results

def _status(t, ts) -> str:
    if t.state == ts.COMPLETE:
        return "ok"
    if t.state == ts.PRUNED:
        return "pruned"
    if t.state == ts.FAIL:
        return "failed" if "error" in t.user_attrs else "cut off"
    return t.state.name.lower()


def study_rows(study, keys: list[str] | None = None, order: list[tuple] | None = None) -> tuple[list[str], list[dict]]:
    """One row per trial (steps-aside left out): its values, metrics, status, host and run folder."""
    ts = _optuna().trial.TrialState
    trials = [t for t in study.get_trials(deepcopy=False) if "duplicate_of" not in t.user_attrs]
    if keys is None:
        keys = list(dict.fromkeys(k for t in trials for k in (t.params or t.system_attrs.get("fixed_params") or {})))
    rows = []
    for t in trials:
        params = t.params or t.system_attrs.get("fixed_params") or {}
        row = {"trial": t.number, **{k: params.get(k, "") for k in keys}, "value": t.value,
               **{k: t.user_attrs.get(k) for k in ("test_acc", "test_mse", "params", "train_time_s", "epochs")},
               "status": _status(t, ts), "host": t.user_attrs.get("host", ""),
               "run": t.user_attrs.get("run", ""), "error": t.user_attrs.get("error", "")}
        if t.state == ts.PRUNED:
            row["epochs"] = len(t.intermediate_values)
            row["error"] = f"pruned after epoch {max(t.intermediate_values, default=0)}"
        rows.append(row)
    if order is not None:
        rank = {p: i for i, p in enumerate(order)}
        rows.sort(key=lambda r: (rank.get(tuple(str(r[k]) for k in keys), len(rank)), r["trial"]))
    return keys, rows


def write_results(study, out: Path, *, sweep: Sweep | None = None) -> list[dict]:
    """table.md, table.csv, sweep.json, comparison.png and Optuna's own pictures of a study."""
    ident = study.user_attrs.get("mnistlab", {})
    model = ident.get("model", sweep.model if sweep else "?")
    metric = sweep.metric if sweep else ident.get("metric", "value")
    held = ident.get("space", {})
    space_keys = sweep.space.keys if sweep else list(held) or None
    # listed values only: rows in the order the values were given, else in trial order
    order = (list(itertools.product(*held.values())) if held and all(isinstance(v, list) for v in held.values())
             else None)
    keys, rows = study_rows(study, space_keys, order)
    out.mkdir(parents=True, exist_ok=True)
    write_tables(out, model, keys, rows, metric=metric)
    ts = _optuna().trial.TrialState
    done = [t for t in study.get_trials(deepcopy=False) if t.state == ts.COMPLETE]
    best = study.best_trial if done else None
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "pruned", "failed", "cut off", "running")}
    info = {"kind": "sweep", "model": model, "study": study.study_name, "metric": metric,
            "direction": study.direction.name.lower(), "space": ident.get("space", {}),
            "storage": _safe_url(sweep.storage) if sweep else None,
            "sampler": sweep.sampler if sweep else None, "pruner": sweep.prune if sweep else None,
            "trials": len(rows), **{k.replace(" ", "_"): v for k, v in counts.items()},
            "complete": counts["running"] == 0 and (sweep is None or counts["ok"] + counts["pruned"] + counts["failed"]
                                                    >= sweep.trials),
            "dataset": (sweep.flags.get("dataset") if sweep else None)}
    if best is not None:
        run = Path(best.user_attrs.get("run", ""))
        info.update(best_trial_number=best.number, best_value=best.value, best_params=best.params,
                    best_run=str(run))
        if run.parent.resolve() == out.resolve():
            info["best_trial"] = run.name
        if (run / "summary.json").is_file() and not info["dataset"]:
            info["dataset"] = (json.loads((run / "summary.json").read_text()) or {}).get("dataset")
    write_json(out / "sweep.json", info)
    _optuna_figures(study, out)
    return rows


def _columns(keys, rows, metric):
    extra = [m for m in ("test_acc", "test_mse") if any(r.get(m) is not None for r in rows)]
    return ["trial", *keys, metric, *extra, "params", "epochs", "train_time_s", "status", "error"]


def write_tables(out: Path, model: str, keys: list[str], rows: list[dict], *, metric: str = "value") -> None:
    rows = [{**r, metric: r.get("value")} for r in rows]
    cols = _columns(keys, rows, metric)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*cols, "host", "run"], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    with atomic_open(out / "table.csv", "w") as f:
        f.write(buf.getvalue())

    def cell(r, c):
        v = r.get(c)
        if v is None or v == "":
            return ""
        if c in (metric, "test_acc", "test_mse"):
            return _fmt(c, v)
        if c == "params":
            return f"{v:,}"
        return _fmt_param(v) if c in keys else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in rows]
    with atomic_open(out / "table.md", "w") as f:
        f.write(f"# Sweep of {model}\n\n" + "\n".join(lines) + "\n")
    _plot(out, model, keys, rows, metric)


def _plot(out: Path, model: str, keys, rows, metric) -> None:
    from ...viz import _plt, save_figure

    ok = [r for r in rows if r["status"] == "ok" and r.get(metric) is not None]
    if not ok:
        return
    plt = _plt()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 0.4 * len(ok) + 2))
    labels = [f"t{r['trial']}: " + ", ".join(f"{k}={_fmt_param(r[k])}" for k in keys) for r in ok]
    a0.barh(labels, [r[metric] for r in ok], color="tab:blue")
    a0.set_xlabel(metric)
    a0.invert_yaxis()
    a1.scatter([r["params"] or 0 for r in ok], [r[metric] for r in ok])
    for lab, r in zip(labels, ok):
        a1.annotate(lab, (r["params"] or 0, r[metric]), fontsize=7)
    if all(r["params"] for r in ok):
        a1.set_xscale("log")
    a1.set_xlabel("parameters")
    a1.set_ylabel(metric)
    fig.suptitle(f"sweep of {model}")
    fig.tight_layout()
    save_figure(fig, out / "comparison.png")


def _fmt_param(v) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(v) if len(str(v)) <= 8 else f"{x:.4g}"


def _optuna_figures(study, out: Path) -> list[Path]:
    """Optuna's own pictures: optimisation history, parallel coordinates, parameter importances."""
    optuna = _optuna()
    from ...viz import _plt, save_figure

    ts = optuna.trial.TrialState
    if sum(t.state == ts.COMPLETE for t in study.get_trials(deepcopy=False)) < 2:
        return []
    _plt()  # the non-interactive backend, before Optuna draws
    import optuna.visualization.matplotlib as ovm

    made = []
    for name, draw in (("history", ovm.plot_optimization_history), ("parallel", ovm.plot_parallel_coordinate),
                       ("importances", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            made.append(save_figure(fig, out / f"{name}.png"))
        except Exception:  # too few distinct values for importances, say: the picture is left out
            continue
    return made


def show_sweep(storage: str | None = None, study: str | None = None, out_dir: str | Path | None = None) -> tuple[Path,
                                                                                                             str]:
    """Rewrite and return the table of a stored study (by --storage/--study, or a sweep folder)."""
    out = Path(out_dir) if out_dir else (runs_root() / f"sweep-{study}" if study else None)
    if storage is None:
        if out is None:
            raise ConfigError("--show needs --storage URL (and --study NAME), or --out SWEEP_FOLDER")
        db = out / "study.db"
        if not db.is_file():
            raise RunError(f"{out}: no study.db (pass --storage URL --study NAME)")
        storage = f"sqlite:///{db.resolve()}"
    st = load_study(storage, study)
    out = out or runs_root() / f"sweep-{st.study_name}"
    write_results(st, out)
    return out, (out / "table.md").read_text()
