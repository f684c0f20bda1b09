"""Run folders: the record of one training.

    runs/cnn-mnist-sample-20261122-101500/
      config.json      final config (model name + model, train, data sections)
      metrics.jsonl    one line per epoch
      summary.json     final metrics, timing, parameter count
      env.json         versions, device, seed, threads, git SHA
      checkpoint.pt    model name + args + weights + optimizer + epoch (tensors and plain data only)
      figures/         PNGs

``load_run(path)`` rebuilds the model from the folder alone. Every file is written
atomically; checkpoints load with ``weights_only=True`` so a file can never run code.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_open, read_jsonl, write_json
from .errors import RunError

CHECKPOINT = "checkpoint.pt"
RUNS_ROOT_ENV = "MNISTLAB_RUNS"


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
    """Create an empty run folder; refuse to write over an existing run."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise RunError(f"{path} already holds a run: pass --reuse to load it, or choose another --run-dir")
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} is a file, not a run folder")
    (path / "figures").mkdir(parents=True, exist_ok=True)
    return path


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
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
    state = {
        "format": 1,
        "model_name": model.model_name,
        "model_args": _plain(dataclasses.asdict(model.config)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
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
    if not path.exists():
        raise RunError(f"{path}: no checkpoint (was the training interrupted before the first epoch ended?)")
    try:
        state = load_state(path)
    except RunError as e:
        raise RunError(str(e).replace("mnistlab file", "mnistlab checkpoint")) from None
    if not isinstance(state, dict) or "model_name" not in state or "state_dict" not in state:
        raise RunError(f"{path}: not a mnistlab checkpoint")
    return state


def save_state(path: Path, state: dict) -> None:
    """Atomically save plain data and tensors (experiments' models, optimised images)."""
    with atomic_open(path) as f:
        torch.save(state, f)


def load_state(path: Path) -> dict:
    """Load what save_state wrote, never running code from the file."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: missing (was the experiment interrupted?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean a bad file
        raise RunError(f"{path}: not a readable mnistlab file ({str(e).splitlines()[0][:200]})") from None


def model_from_checkpoint(state: dict, source: str = "checkpoint"):
    from .registry import create_model

    try:
        model = create_model(state["model_name"], **state["model_args"])
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise RunError(f"{source}: weights do not fit model {state.get('model_name')!r} "
                       f"({str(e).splitlines()[0]})") from None
    return model


@dataclass
class Run:
    path: Path
    config: Any  # RunConfig
    model: Any = None
    metrics: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return getattr(self.model, "task", "")

    @property
    def figures(self) -> Path:
        return self.path / "figures"


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model of a run folder, in eval mode, on `device`."""
    from .config import config_from_dict

    path = Path(path)
    if not path.is_dir():
        raise RunError(f"{path}: no such run folder")
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise RunError(f"{path}: not a run folder (no config.json)")
    try:
        config = config_from_dict(json.loads(cfg_file.read_text()))
    except json.JSONDecodeError as e:
        raise RunError(f"{cfg_file}: corrupt ({e})") from None
    state = load_checkpoint(path / CHECKPOINT)
    model = model_from_checkpoint(state, str(path / CHECKPOINT)).to(device).eval()
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else {}
    return Run(path, config, model, read_jsonl(path / "metrics.jsonl"), summary)


def list_runs(root: Path | None = None) -> list[dict]:
    """Run folders under `root`, oldest first, with their key facts (no weights loaded)."""
    root = Path(root or runs_root())
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)):
        cfg_file = d / "config.json"
        if not (d.is_dir() and cfg_file.exists()):
            continue
        try:
            cfg = json.loads(cfg_file.read_text())
            summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        except json.JSONDecodeError:
            continue
        out.append({"path": d, "model": cfg.get("model_name"), "dataset": cfg.get("data", {}).get("dataset"),
                    # Finished: summary.json is written after the last epoch; a run killed
                    # mid-way has a checkpoint but no summary (and can be resumed).
                    "summary": summary, "complete": (d / CHECKPOINT).exists() and (d / "summary.json").exists()})
    return out


def latest_run(root: Path | None = None, *, model: str | None = None, task: str | None = None,
               dataset: str | None = None) -> Path:
    from .registry import get_spec

    found = [r for r in list_runs(root) if r["complete"]
             and (model is None or r["model"] == model)
             and (dataset is None or r["dataset"] == dataset)
             and (task is None or _task_of(r["model"], get_spec) == task)]
    if not found:
        what = model or (f"{task}" if task else "any")
        raise RunError(f"no finished {what} run under {Path(root or runs_root())}/ "
                       f"(train one first, e.g. `mnistlab train {model or 'cnn'}`, or pass --run)")
    return found[-1]["path"]


def _task_of(name, get_spec):
    try:
        return get_spec(name).task
    except Exception:
        return None


__all__ = ["Run", "load_run", "list_runs", "latest_run", "save_checkpoint", "load_checkpoint",
           "new_run_dir", "prepare_run_dir", "environment", "write_json"]
