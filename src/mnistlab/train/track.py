"""Tracking in the tools users already look at: TensorBoard event files and MLflow runs.

The run folder stays the record; a tracker mirrors it: the config as parameters, each
epoch's metrics row as scalars (step = epoch), the summary's figures at the end and the
PNG figures. ``--track`` may be given more than once. Both are optional extras
(``pip install 'mnistlab[track]'``), imported only when asked for.

- ``tensorboard``: event files in ``RUN/tensorboard/`` (``tensorboard --logdir runs``);
- ``mlflow``: ``$MLFLOW_TRACKING_URI``, else a local SQLite store ``RUNS_ROOT/mlflow.db``
  (``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``), experiment ``mnistlab``, one
  MLflow run per run folder (a resumed run goes on in the same MLflow run).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path

from .._io import Refused, check_folder, check_sqlite_file, make_folder, write_json
from ..errors import ConfigError
from ..runs import runs_root


def _numbers(d: dict, prefix: str = "") -> dict[str, float]:
    return {prefix + k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = str(v)
    return out


def _needs(extra_module: str, tracker: str):
    try:
        return importlib.import_module(extra_module)
    except ImportError as e:
        raise ConfigError(
            f"--track {tracker} needs the 'track' extra ({e.name} is missing): pip install 'mnistlab[track]'"
        ) from None


class TensorBoard:
    name = "tensorboard"

    def __init__(self, path: Path, config: dict):
        _needs("tensorboard", self.name)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(path / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def epoch(self, row: dict) -> None:
        step = int(row["epoch"])
        for k, v in _numbers(row).items():
            if k != "epoch":
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def finish(self, summary: dict, figures: Path) -> None:
        for k, v in _numbers(summary, "summary/").items():
            self.writer.add_scalar(k, v, 0)
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()


class MLflow:
    name = "mlflow"
    ID_FILE = "mlflow.json"  # the MLflow run of this folder, so a resumed run goes on in it

    def __init__(self, path: Path, config: dict):
        self.mlflow = _needs("mlflow", self.name)
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no table-creation chatter on stderr
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        self.mlflow.set_tracking_uri(uri or self.default_uri())
        if not uri and self.mlflow.get_experiment_by_name("mnistlab") is None:
            # Artifacts beside the store, not in whatever folder the command ran from.
            self.mlflow.create_experiment(
                "mnistlab", artifact_location=(runs_root() / "mlflow-artifacts").resolve().as_uri()
            )
        self.mlflow.set_experiment("mnistlab")
        known = path / self.ID_FILE
        run_id = json.loads(known.read_text())["run_id"] if known.exists() else None
        self.run = self.mlflow.start_run(run_id=run_id, run_name=path.name)
        if run_id is None:
            write_json(
                known,
                {"run_id": self.run.info.run_id, "tracking_uri": self.mlflow.get_tracking_uri()},
                run_file=True,
            )
            params = _flat(config)
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
                self.mlflow.log_params(dict(list(params.items())[i : i + 100]))
            self.mlflow.set_tag("run_folder", str(path))

    @staticmethod
    def default_uri() -> str:
        root = runs_root()
        make_folder(root)
        return f"sqlite:///{(root / 'mlflow.db').resolve()}"

    def epoch(self, row: dict) -> None:
        self.mlflow.log_metrics({k: v for k, v in _numbers(row).items() if k != "epoch"}, step=int(row["epoch"]))

    def finish(self, summary: dict, figures: Path) -> None:
        self.mlflow.log_metrics(_numbers(summary, "summary_"))
        if figures.is_dir() and any(figures.glob("*.png")):
            self.mlflow.log_artifacts(str(figures), artifact_path="figures")
        self.mlflow.end_run()

    def abort(self) -> None:
        self.mlflow.end_run(status="KILLED")  # `--resume` reopens it


TRACKERS = {t.name: t for t in (TensorBoard, MLflow)}

# Schemes MLflow reads as tracking stores; anything else fails late and with a traceback.
MLFLOW_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
CHECK_TIMEOUT_S = 5.0


def check_services(names, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Before a run folder is made: each tracker the run asked for can be reached, within
    `timeout` seconds, or one ConfigError line naming its URL."""
    if "tensorboard" in names:
        _needs("tensorboard", "tensorboard")
    if "mlflow" in names:
        _needs("mlflow", "mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        check_mlflow_uri(uri or f"sqlite:///{(runs_root() / 'mlflow.db').absolute()}", timeout)


def check_mlflow_uri(uri: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    from urllib.parse import urlsplit

    from ..checks import brief

    shown = brief(uri, 100)
    try:
        parts = urlsplit(uri)
    except ValueError as e:
        raise ConfigError(f"MLFLOW_TRACKING_URI={shown}: not a URI ({e})") from None
    scheme = parts.scheme.split("+")[0].lower()
    if scheme not in MLFLOW_SCHEMES:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={shown}: not a tracking store MLflow reads "
            f"(a URI starting {', '.join(s + ':' for s in MLFLOW_SCHEMES)})"
        )
    if scheme in ("sqlite", "file"):  # local stores are checked as remote ones are: before any folder
        where = _local_path(uri, parts)
        try:
            if scheme == "sqlite":
                check_sqlite_file(where)
            else:
                check_folder(where)
        except Refused as e:
            raise ConfigError(f"MLFLOW_TRACKING_URI={shown}: {e.filename}: {e.strerror}") from None
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        probe = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            with urllib.request.urlopen(probe, timeout=timeout) as resp:
                ok = resp.status == 200
        except urllib.error.HTTPError as e:
            raise ConfigError(
                f"MLFLOW_TRACKING_URI={shown}: answers HTTP {e.code}, not as an MLflow tracking server"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            why = getattr(e, "reason", e)
            raise ConfigError(
                f"MLFLOW_TRACKING_URI={shown}: cannot be reached within {timeout:g} s ({brief(str(why), 100)})"
            ) from None
        if not ok:
            raise ConfigError(f"MLFLOW_TRACKING_URI={shown}: does not answer as an MLflow tracking server")


def _local_path(uri: str, parts) -> Path:
    """The file (sqlite:///PATH, sqlite:////abs) or folder (file:///PATH) a local store URI names."""
    from urllib.parse import unquote

    if parts.scheme.lower().startswith("sqlite"):
        rest = uri.split(":///", 1)[1] if ":///" in uri else ""
        return Path(unquote(rest.split("?", 1)[0]) or ":memory:")
    return Path(unquote(parts.path) or ".")


class Trackers:
    """The trackers a run asked for, called together; none asked for costs nothing."""

    def __init__(self, names, path: Path, config: dict):
        unknown = [n for n in names if n not in TRACKERS]
        if unknown:
            raise ConfigError(f"unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)}")
        self.active = []
        for n in dict.fromkeys(names):
            try:
                self.active.append(TRACKERS[n](path, config))
            except ConfigError:
                raise
            except Exception as e:  # the tracker's own library failed to start its run
                self.abort()
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ConfigError(f"--track {n}: could not start ({first[:200]})") from None

    def epoch(self, row: dict) -> None:
        for t in self.active:
            t.epoch(row)

    def finish(self, summary: dict, figures: Path) -> None:
        for t in self.active:
            t.finish(summary, figures)

    def abort(self) -> None:
        """Training stopped early (an error, Ctrl-C): close what is open."""
        for t in self.active:
            t.abort()
