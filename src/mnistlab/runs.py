"""Run folders: the record of one training.

    runs/cnn-mnist-sample-20261122-101500/
      config.json      final config (model name + model, train, data sections)
      metrics.jsonl    one line per epoch
      summary.json     final metrics, timing, parameter count
      env.json         versions, device, seed, threads, git SHA
      checkpoint.pt    model name + args + weights + optimizer + epoch (tensors and plain data only)
      figures/         PNGs

- `config.json`: the final config: model name, `model`, `train`, `data` sections.
- `metrics.jsonl`: one line per epoch: train loss/accuracy, test (or validation)
  loss/accuracy, seconds, lr.
- `summary.json`: final test metrics, training time, parameter count, split sizes, device;
  written last: a run is finished once it exists.
- `env.json`: mnistlab, Python, torch, numpy versions, platform, threads, device, seed, git
  SHA, data source, the step (eager or captured) and precision used.
- `checkpoint.pt`: model name + args + weights + optimizer + epoch, and what resuming needs
  (schedule, data-order, augmentation and dropout random states, stage), written atomically
  after every epoch.
- `calibration.json`: a classifier's fitted temperature, and its expected calibration error
  before and after.
- `confusion.csv`: a classifier's confusion matrix on the test split.
- `figures/`: `curves.png`, `confusion.png`; autoencoders: reconstructions before and after
  training, code-space pictures, interpolation.
- `exports.json`: each `mnistlab export` of the model: file, format, opset, the check
  against torch, sha256.

Experiments write `results.json` and their parts as runs in sub-folders; sweeps write
`sweep.json` and a folder per trial. ``load_run(path)`` rebuilds the model from the folder
alone. Every file is written atomically; checkpoints load with ``weights_only=True`` so a
file can never run code.
"""

from __future__ import annotations

import dataclasses
import io
import os
import platform
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._io import Unreadable, atomic_open, kind_of, make_folder, read_json, read_jsonl, read_regular, write_json
from .checks import as_number, brief
from .errors import RunError
from .models import create_model, get_spec
from .runtime import cpu_model

CHECKPOINT = "checkpoint.pt"
CLAIM = ".mnistlab-run"  # made first, exclusively: this folder is taken
RUNS_ROOT_ENV = "MNISTLAB_RUNS"
MAX_CHECKPOINT = 2 << 30  # bytes; our checkpoints are megabytes
CHECKPOINT_FORMAT = 1  # what save_checkpoint writes; a file of another format is refused, not guessed at


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ROOT_ENV, "runs"))


def new_run_dir(model_name: str, dataset: str, root: Path | None = None) -> Path:
    root = Path(root or runs_root())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{model_name}-{dataset}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def prepare_run_dir(path: Path) -> Path:
    """Claim a run folder: create it, or take an existing empty one; refuse one that holds a
    run or is being claimed. The claim is exclusive (a marker file made with O_EXCL), so two
    processes given the same folder at the same moment never both get it."""
    path = Path(path)
    if os.path.islink(path) and not path.exists():
        raise RunError(f"{path} is a dangling link: remove it or choose another --run-dir")
    if path.exists() and not path.is_dir():
        what = kind_of(os.stat(path).st_mode) or "a file"
        raise RunError(f"{path} is {what}, not a run folder")
    try:
        make_folder(path)
        fd = os.open(path / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        raise RunError(f"{path} already holds a run: pass --reuse to load it, or choose another --run-dir") from None
    except OSError as e:
        raise RunError(f"{path}: cannot create the run folder ({e.strerror or e})") from None
    os.close(fd)
    if any(p.name != CLAIM for p in path.iterdir()):
        (path / CLAIM).unlink()  # not ours to take: leave the folder as it was
        raise RunError(f"{path} already holds files: pass --reuse to load a run, or choose another --run-dir")
    (path / "figures").mkdir(exist_ok=True)
    return path


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device, seed: int) -> dict:
    import numpy

    from . import __version__

    env = {
        "mnistlab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu": cpu_model(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "seed": seed,
        "git_sha": git_sha(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def save_checkpoint(path: Path, model, optimizer=None, epoch: int = 0, extra: dict | None = None) -> None:
    """Model name, settings and weights, with `optimizer` (a torch optimiser or its state dict)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model.model_name,
        "model_args": _plain(dataclasses.asdict(model.config)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer,
        "epoch": epoch,
        "extra": extra or {},
    }
    save_state(path, state)


def _plain(obj):
    """Tuples to lists so the args survive weights_only loading and JSON alike."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not os.path.lexists(path):
        raise RunError(f"{path}: no checkpoint (was the training interrupted before the first epoch ended?)")
    state = load_state(path, "mnistlab checkpoint")
    if not isinstance(state, dict) or "model_name" not in state or not isinstance(state.get("state_dict"), dict):
        raise RunError(f"{path}: not a mnistlab checkpoint")
    if state.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise RunError(
            f"{path}: checkpoint format {brief(repr(state.get('format')))}, this mnistlab reads format "
            f"{CHECKPOINT_FORMAT}: train again, or load it with the mnistlab that wrote it"
        )
    bad = [
        k
        for k, v in state["state_dict"].items()
        if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise RunError(
            f"{path}: its weights are not finite numbers ({brief(', '.join(map(str, bad[:3])), 80)}): the training "
            "diverged; train it again with a lower learning rate"
        )
    return state


def save_state(path: Path, state: dict) -> None:
    """Atomically save plain data and tensors (experiments' models, optimised images)."""
    with atomic_open(path, run_file=True) as f:
        torch.save(state, f)


def load_state(path: Path, what: str = "mnistlab file") -> dict:
    """Load what save_state wrote, never running code from the file (`what` names it in errors)."""
    path = Path(path)
    if not os.path.lexists(path):
        raise RunError(f"{path}: missing (was the experiment interrupted?)")
    try:
        blob = read_regular(path, MAX_CHECKPOINT)
    except Unreadable as e:
        raise RunError(f"not a readable {what}: {e}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own advice on pickles is not ours to pass on
            return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean a bad file
        first = (str(e).splitlines() or [type(e).__name__])[0]
        # torch's refusal of a pickle of code is an UnpicklingError like a corrupt file's; only
        # its text tells them apart
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "WeightsUnpickler" in str(e):
            first = "it holds Python objects or code, which mnistlab never loads"
        raise RunError(f"{path}: not a readable {what} ({brief(first, 200)})") from None


def model_from_checkpoint(state: dict, source: str = "checkpoint"):
    try:
        model = create_model(state["model_name"], **state["model_args"])
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise RunError(
            f"{source}: weights do not fit model {state.get('model_name')!r} ({str(e).splitlines()[0]})"
        ) from None
    return model


@dataclass
class Run:
    path: Path
    config: Any  # RunConfig
    model: Any = None
    metrics: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    env: dict | None = None  # env.json to write once the steps' plan is known (train.run.record_epochs)

    @property
    def task(self) -> str:
        return getattr(self.model, "task", "")

    @property
    def figures(self) -> Path:
        return self.path / "figures"


def confusion_matrix(pred: torch.Tensor, true: torch.Tensor, rows: int, cols: int | None = None):
    """Counts (rows: true class, columns: predicted class), a numpy array. Rectangular when the
    model scores classes the labels never name (dream's "optimised image": 10 rows, 11 columns)."""
    cols = rows if cols is None else cols
    return torch.bincount(true.long() * cols + pred.long().cpu(), minlength=rows * cols).reshape(rows, cols).numpy()


def run_confusion(run: Run, ds, predictions: torch.Tensor) -> tuple[Any, tuple, tuple]:
    """A classifier run's test confusion matrix, sized by the model's classes (columns) and the
    classes its targets name (rows); with the row and column names."""
    model = run.model
    cols, rows = model.classes(ds.classes), model.true_classes(ds.classes)
    return confusion_matrix(predictions, model.target(ds.test.labels.cpu()), len(rows), len(cols)), rows, cols


def write_confusion(run: Run, ds, predictions: torch.Tensor):
    """confusion.csv: a classifier run's test confusion matrix (rows: true class); returns it."""
    cm, rows, cols = run_confusion(run, ds, predictions)
    with atomic_open(run.path / "confusion.csv", "w") as f:
        f.write("true\\pred," + ",".join(cols) + "\n")
        for c, row in zip(rows, cm):
            f.write(f"{c}," + ",".join(map(str, row)) + "\n")
    return cm


def experiment_sections(cfg: dict) -> tuple[str | None, dict]:
    """An experiment's config.json as (name, settings): sectioned ({"kind": "experiment",
    "name", "experiment": {...}, "data": {...}}) or the older flat form; (None, {}) if none."""
    if cfg.get("kind") == "experiment" and isinstance(cfg.get("experiment"), dict):
        name = cfg.get("name")
        return (name if isinstance(name, str) else None), {**cfg["experiment"], **(cfg.get("data") or {})}
    if isinstance(cfg.get("experiment"), str):
        flat = cfg.get("config")
        return cfg["experiment"], flat if isinstance(flat, dict) else {}
    return None, {}


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model of a run folder, in eval mode, on `device`. An experiment's folder
    loads its main part (named in its summary.json), a sweep's folder its best trial: runs in
    their sub-folders."""
    path = Path(path)
    if not path.is_dir():
        if os.path.lexists(path):
            try:
                what = kind_of(os.stat(path).st_mode) or "a file"
            except OSError:
                what = "a dangling link"
            raise RunError(f"{path}: {what}, not a run folder")
        raise RunError(f"{path}: no such run folder")
    if (path / "sweep.json").is_file():
        best = _sweep(path)[0]["summary"].get("best_trial")
        if not best:
            raise RunError(f"{path}: a sweep with no finished trial to load")
        return load_run(path / best, device)
    cfg_file = path / "config.json"
    if not os.path.lexists(cfg_file):
        raise RunError(f"{path}: not a run folder (no config.json)")
    data = read_run_json(cfg_file)
    name, _ = experiment_sections(data)
    if name is not None:
        main = (_json_dict(path / "summary.json") or {}).get("main")
        if not isinstance(main, str) or not (path / main / "config.json").is_file():
            raise RunError(f"{path}: a {name} experiment with no finished model to load")
        return load_run(path / main, device)
    config = stored_config(data, cfg_file)
    state = load_checkpoint(path / CHECKPOINT)
    check_checkpoint(state, config, path / CHECKPOINT)
    model = model_from_checkpoint(state, str(path / CHECKPOINT)).to(device).eval()
    summary = _run_dict(path / "summary.json")
    model.temperature = _temperature(path / "calibration.json")
    return Run(path, config, model, read_metrics(path / "metrics.jsonl"), summary)


def _temperature(path: Path) -> float:
    """The run's fitted temperature (calibrate.py), 1.0 when it has none; a tampered value is refused."""
    cal = _run_dict(path)
    if "temperature" not in cal and os.path.lexists(path):
        raise RunError(f"{path}: corrupt (no temperature); delete it to use the model uncalibrated")
    t = cal.get("temperature", 1.0)
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0.01 <= t <= 100:
        raise RunError(f"{path}: temperature {brief(repr(t))} is no fitted temperature (0.01..100)")
    return float(t)


def read_run_json(path: Path) -> dict:
    """A run file's JSON object, or one RunError line saying what is wrong with it."""
    try:
        data = read_json(path)
    except Unreadable as e:
        raise RunError(f"corrupt run file: {e}") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: corrupt (not a JSON object)")
    return data


def read_metrics(path: Path, notice=None) -> list[dict]:
    try:
        return read_jsonl(path, notice=notice)
    except Unreadable as e:
        raise RunError(f"corrupt run file: {e}") from None


def stored_config(data: dict, where: Path, training: bool = False):
    """A run's RunConfig from its config.json, checked as a new one is: a stored config that
    asks for 10^9 epochs or a batch of -1 is refused as the command line would refuse it. Whether
    training fits in memory is asked only when it will train (`training`, on --resume): to load,
    the checkpoint's check (weight shapes on the meta device) bounds what is built."""
    from .config import config_from_dict
    from .errors import ConfigError

    try:
        config = config_from_dict(data)
        config.validate(data=False, fits=training)
    except KeyError as e:
        raise RunError(f"{where}: not a run's config (no {e})") from None
    except (ConfigError, TypeError, AttributeError) as e:
        raise RunError(f"{where}: not a valid run config ({brief(str(e))})") from None
    return config


def check_checkpoint(state: dict, config, where: Path) -> None:
    """A checkpoint is trusted only as far as it matches its run: the model it names, its
    epoch, and each weight's shape against the model config.json describes (built on the meta
    device, so no memory is spent)."""
    if state.get("model_name") != config.model_name:
        raise RunError(
            f"{where}: holds a {state.get('model_name')!r} model but config.json says "
            f"{config.model_name!r}; the folder was altered"
        )
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= config.train.epochs * 100:
        raise RunError(
            f"{where}: checkpoint epoch {brief(repr(epoch))} does not fit the run ({config.train.epochs} epochs)"
        )
    saved, said = _plain(state.get("model_args")), _plain(dataclasses.asdict(config.model))
    # what config.json sets must be what the weights were saved with; fields a model fills in
    # as it builds (an encoder classifier's encoder settings, read from its autoencoder run)
    # are empty in config.json and not compared
    if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in said.items() if v not in (None, "", {}, [])):
        raise RunError(
            f"{where}: the model it was saved with differs from config.json's model section; the folder was altered"
        )
    try:
        with torch.device("meta"):
            expected = create_model(config.model_name, config.model, load_run=_meta_encoder).state_dict()
    except Exception:  # a model that reads another run to build: shapes checked on load instead
        return
    held = state.get("state_dict")
    if not isinstance(held, dict):
        raise RunError(f"{where}: no weights in the checkpoint")
    shapes = {k: tuple(v.shape) for k, v in held.items() if isinstance(v, torch.Tensor)}
    want = {k: tuple(v.shape) for k, v in expected.items()}
    if shapes != want:
        diff = sorted(set(shapes) ^ set(want)) or [k for k in want if shapes.get(k) != want[k]]
        raise RunError(
            f"{where}: its weights do not match the model config.json describes "
            f"({brief(', '.join(diff[:3]))}{'...' if len(diff) > 3 else ''}); the folder was altered"
        )


def _meta_encoder(path):
    raise RunError("built from another run")


def _run_dict(path: Path) -> dict:
    """A run file's JSON object, {} when there is none; else one RunError saying what is there
    instead (a FIFO, a device, a list, bad UTF-8, ...)."""
    return read_run_json(path) if os.path.lexists(path) else {}


def _json_dict(path: Path) -> dict | None:
    """A JSON object from `path`: {} when there is no file, None when it is unreadable or no object."""
    if not os.path.lexists(path):
        return {}
    try:
        data = read_json(path)
    except Unreadable:
        return None
    return data if isinstance(data, dict) else None


def _describe(d: Path, kind: str = "training") -> dict | None:
    """One run folder's facts (no weights loaded), or None when it is no run folder at all."""
    if not os.path.lexists(d / "config.json"):  # a config.json that is a FIFO or a device is listed, unreadable
        return None
    cfg, summary = _json_dict(d / "config.json"), _json_dict(d / "summary.json")
    out = {"path": d, "kind": kind, "model": None, "dataset": None, "summary": summary or {}, "complete": False}
    if cfg is None or summary is None:
        return {**out, "kind": "unreadable"}
    name, conf = experiment_sections(cfg)
    if name is not None:
        return {
            **out,
            "kind": "experiment",
            "experiment": name,
            "dataset": conf.get("dataset"),
            "complete": bool(summary),
        }
    data = cfg.get("data")
    data = data if isinstance(data, dict) else {}
    return {
        **out,
        "model": cfg.get("model_name"),
        "dataset": data.get("dataset"),
        "complete": (d / CHECKPOINT).exists() and bool(summary),
    }


def _parts(d: Path, kind: str) -> list[dict]:
    """The runs in a folder's sub-folders (a sweep's trials, an experiment's parts)."""
    return [t for t in (_describe(p, kind) for p in sorted(d.iterdir()) if p.is_dir()) if t]


def _sweep(d: Path) -> list[dict]:
    """A sweep folder (sweep.json) and the trials in it. The best trial is the one its study
    chose (on the validation metric), when sweep.json names one in this folder."""
    info = _json_dict(d / "sweep.json") or {}
    trials = _parts(d, "trial")
    done = [t for t in trials if t["complete"]]
    metric = "test_acc" if any("test_acc" in t["summary"] for t in done) else "test_mse"
    named = info.get("best_trial")
    best = next((t for t in done if t["path"].name == named), None) if isinstance(named, str) else None
    if best is None:  # trials whose figure is no number (a tampered summary) are not candidates
        scored = [t for t in done if as_number(t["summary"].get(metric)) is not None]
        best = (max if metric == "test_acc" else min)(
            scored, key=lambda t: as_number(t["summary"][metric]) or 0.0, default=None
        )
    summary = {**info, "trials": len(trials), "finished": len(done)}
    if best is not None:
        summary.update(best_trial=best["path"].name, **{f"best_{metric}": best["summary"].get(metric)})
    complete = info["complete"] if isinstance(info.get("complete"), bool) else len(done) == len(trials)
    head = {
        "path": d,
        "kind": "sweep",
        "model": info.get("model"),
        "dataset": info.get("dataset"),
        "summary": summary,
        "complete": bool(info) and complete,
    }
    return [head, *trials]


def list_runs(root: Path | None = None) -> list[dict]:
    """Every run under `root`, oldest first: trainings, experiments and their parts, sweeps and
    their trials (``kind``), with their key facts and summary; no weights loaded. A folder that cannot be
    read is listed as kind 'unreadable', never a reason to fail."""
    root = Path(root or runs_root())
    if not root.is_dir():
        return []
    folders = []
    for d in root.iterdir():
        try:
            if d.is_dir():
                folders.append((d.stat().st_mtime, d.name, d))
        except OSError:  # a dangling link, a folder we may not read
            continue
    out = []
    for _, _, d in sorted(folders):
        try:
            if (d / "sweep.json").is_file() or (d / "table.csv").is_file():
                out += _sweep(d)
            elif (entry := _describe(d)) is not None:
                out.append(entry)
                if entry["kind"] == "experiment":
                    out += _parts(d, "part")
        except OSError:
            out.append(
                {"path": d, "kind": "unreadable", "model": None, "dataset": None, "summary": {}, "complete": False}
            )
    return out


def latest_run(
    root: Path | None = None, *, model: str | None = None, task: str | None = None, dataset: str | None = None
) -> Path:
    found = [
        r
        for r in list_runs(root)
        if r["complete"]
        and r["kind"] == "training"
        and (model is None or r["model"] == model)
        and (dataset is None or r["dataset"] == dataset)
        and (task is None or _task_of(r["model"], get_spec) == task)
    ]
    if not found:
        what = model or (f"{task}" if task else "any")
        raise RunError(
            f"no finished {what} run under {Path(root or runs_root())}/ "
            f"(train one first, e.g. `mnistlab train {model or 'cnn'}`, or pass --run)"
        )
    return found[-1]["path"]


def _task_of(name, get_spec):
    try:
        return get_spec(name).task
    except Exception:
        return None


__all__ = [
    "Run",
    "load_run",
    "list_runs",
    "latest_run",
    "save_checkpoint",
    "load_checkpoint",
    "new_run_dir",
    "prepare_run_dir",
    "environment",
    "write_json",
]
