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

Optuna does the sampling, pruning, storage and heartbeats. This module holds the sweep's
settings (``plan_sweep``) and opens its study and storage; ``space`` parses the search space,
``worker`` runs trials so that every grid point trains exactly once, ``results`` writes the
table and figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..._io import Refused, check_sqlite_file, make_folder
from ...checks import brief, check_ranges, ranged
from ...config import MAX_EPOCHS, build_config
from ...errors import ConfigError, MnistlabError, RunError
from ...names import SEED_MAX
from ...runs import runs_root
from .space import MAX_GRID, Range, Space, parse_space

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband")
DEFAULT_VAL_FRACTION = 0.1
HEARTBEAT_S = 10  # a worker's running trial is marked failed after 3 missed beats


def _optuna():
    try:
        import optuna
    except ImportError as e:
        raise MnistlabError(
            f"sweeps need the 'sweep' extra ({e.name} is missing): pip install 'mnistlab[sweep]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one-line notes say what happens
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, pictures
    return optuna


# ---------------------------------------------------------------- the sweep's settings


@dataclass
class Sweep:
    """One sweep: what to train, over what, with which sampler and pruner, where recorded."""

    model: str
    space: Space
    sampler: str
    trials: int = ranged(dataclasses.MISSING, 1, 100_000)  # trials the study should hold (a grid: its size)
    metric: str  # per-epoch row key reported to Optuna, e.g. val_acc
    direction: str  # maximize or minimize
    study: str
    storage: str
    out: Path
    flags: dict = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)
    prune: str | None = None
    timeout: float | None = ranged(None, 0.001, 1e7, "seconds")
    seed: int = ranged(0, 0, SEED_MAX)
    epochs: int = ranged(1, 1, MAX_EPOCHS)  # per trial (the pruner's resource)
    figures: bool = True  # each trial's run draws its figures (after its summary.json)

    def __post_init__(self) -> None:
        check_ranges(self, "sweep")

    def identity(self) -> dict:
        """What makes two workers' sweeps the same study (checked when one joins)."""
        return {
            "model": self.model,
            "space": self.space.spec(),
            "metric": self.metric,
            "direction": self.direction,
            "flags": {k: v for k, v in self.flags.items() if v is not None},
            "sets": self.sets,
        }


def _task(model: str) -> str:
    from ...models import get_spec

    return get_spec(model).task


def plan_sweep(
    model: str,
    *,
    grid: list[str] | None = None,
    search: list[str] | None = None,
    trials: int | None = None,
    sampler: str | None = None,
    prune: str | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    flags: dict | None = None,
    sets: list[str] | None = None,
    out_dir: str | Path | None = None,
    figures: bool = True,
) -> Sweep:
    """Check the arguments (one clear error each) and settle names, folders and storage."""
    space = parse_space(grid, search)
    if space.discrete and space.size > MAX_GRID:
        raise ConfigError(
            f"the grid has {space.size:,} points (the product of its value counts); at most "
            f"{MAX_GRID:,}: give fewer values"
        )
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
            raise ConfigError(
                f"--sampler grid needs listed values, not ranges ({', '.join(ranges)}): "
                "give them as key=a|b|c or use --sampler tpe/random"
            )
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
        build_config(model, flags=flags, sets=[*sets, *(f"{k}={v}" for k, v in zip(space.keys, point))], validate=False)
    task = _task(model)
    split = "val" if base.train.val_fraction > 0 else "test"
    metric, direction = (f"{split}_acc", "maximize") if task == "classify" else (f"{split}_mse", "minimize")
    sweep = Sweep(
        model,
        space,
        sampler,
        trials,
        metric,
        direction,
        "",
        "",
        Path(),
        flags,
        sets,
        prune,
        timeout,
        seed=base.train.seed,
        epochs=base.train.epochs,
        figures=figures,
    )
    digest = hashlib.sha1(json.dumps(sweep.identity(), sort_keys=True).encode()).hexdigest()[:8]
    sweep.study = study or f"{model}-{digest}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", sweep.study):
        raise ConfigError(
            f"--study {brief(repr(sweep.study), 60)}: use letters, digits, '.', '_' and '-' (at most 100)"
        )
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
        raise ConfigError(
            f"--storage {brief(url, 80)}: not a database URL (e.g. sqlite:///study.db or "
            "postgresql+psycopg://user@host/db)"
        )
    if url.startswith("sqlite:") and url.split("?")[0] in ("sqlite://", "sqlite:///", "sqlite:///:memory:"):
        raise ConfigError(
            f"--storage {brief(url, 80)}: an in-memory SQLite study cannot hold a sweep "
            "(its workers and heartbeats need a file): give sqlite:///PATH"
        )


def open_storage(url: str, heartbeat: int = HEARTBEAT_S):
    """Optuna's RDB storage (SQLite, PostgreSQL, ... any SQLAlchemy URL) with heartbeats, so a
    killed worker's trial is marked failed."""
    optuna = _optuna()
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///") :].split("?", 1)[0])
        try:  # the file checked first: a FIFO would hang SQLite, a text file fail late
            make_folder(check_sqlite_file(db).parent)
        except Refused as e:
            raise RunError(f"--storage {_safe_url(url)}: {brief(str(e.filename), 100)}: {e.strerror}") from None
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
    try:
        for attempt in range(6):
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=3 * heartbeat
                )
            except Exception as e:  # workers creating a new database's tables at once: one wins, retry
                if attempt == 5 or not re.search(
                    r"IntegrityError|UniqueViolation|already exists|locked", f"{type(e).__name__} {e}"
                ):
                    raise
                time.sleep(0.2 + random.random() * (attempt + 1))
    except ModuleNotFoundError as e:
        raise MnistlabError(
            f"--storage {_safe_url(url)}: the driver {e.name!r} is missing "
            "(pip install 'mnistlab[sweep]' brings psycopg for PostgreSQL)"
        ) from None
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
        study = optuna.create_study(
            storage=storage,
            study_name=sweep.study,
            direction=sweep.direction,
            sampler=_sampler(sweep),
            pruner=_pruner(sweep),
            load_if_exists=True,
        )
    except ValueError as e:  # e.g. the stored study optimises the other way
        raise RunError(f"study {sweep.study!r}: {e}") from None
    ident = sweep.identity()
    held = study.user_attrs.get("mnistlab")
    if held is None:
        study.set_user_attr("mnistlab", ident)
    elif held != json.loads(json.dumps(ident)):
        raise RunError(
            f"study {sweep.study!r} in {_safe_url(sweep.storage)} is another sweep "
            f"({held.get('model')} over {', '.join(held.get('space', {}))}); give another --study"
        )
    return study


def load_study(storage_url: str, name: str | None):
    optuna = _optuna()
    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name is None:
        if len(names) != 1:
            raise ConfigError(
                f"--storage {_safe_url(storage_url)} holds {len(names)} studies "
                f"({', '.join(names[:10]) or 'none'}): name one with --study"
            )
        name = names[0]
    if name not in names:
        held = brief(", ".join(names[:10]) or "none", 200)
        raise RunError(f"no study {brief(repr(name), 60)} in {brief(_safe_url(storage_url), 100)} (it holds: {held})")
    return optuna.load_study(study_name=name, storage=storage)
