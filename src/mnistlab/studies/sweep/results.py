"""A sweep's results: the table of trials (CSV and Markdown), the comparison and Optuna's figures,
sweep.json; ``show_sweep`` writes them again from a study in any storage."""

from __future__ import annotations

import csv
import io
import itertools
import json
import warnings
from pathlib import Path

from ..._io import atomic_open, make_folder, write_json
from ...errors import ConfigError, RunError
from ...runs import runs_root
from .study import Sweep, _optuna, _safe_url, load_study

# ---------------------------------------------------------------- results


def _fmt(metric: str, v) -> str:
    if v is None or v == "":
        return ""
    if metric.endswith("acc"):
        return f"{v:.2%}"
    if metric.endswith(("mse", "loss")):
        return f"{v:.5f}"
    return str(v)


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
        row = {
            "trial": t.number,
            **{k: params.get(k, "") for k in keys},
            "value": t.value,
            **{k: t.user_attrs.get(k) for k in ("test_acc", "test_mse", "params", "train_time_s", "epochs")},
            "status": _status(t, ts),
            "host": t.user_attrs.get("host", ""),
            "run": t.user_attrs.get("run", ""),
            "error": t.user_attrs.get("error", ""),
        }
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
    order = (
        list(itertools.product(*held.values())) if held and all(isinstance(v, list) for v in held.values()) else None
    )
    keys, rows = study_rows(study, space_keys, order)
    make_folder(out)
    write_tables(out, model, keys, rows, metric=metric)
    ts = _optuna().trial.TrialState
    done = [t for t in study.get_trials(deepcopy=False) if t.state == ts.COMPLETE]
    best = study.best_trial if done else None
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "pruned", "failed", "cut off", "running")}
    info = {
        "kind": "sweep",
        "model": model,
        "study": study.study_name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "space": ident.get("space", {}),
        "storage": _safe_url(sweep.storage) if sweep else None,
        "sampler": sweep.sampler if sweep else None,
        "pruner": sweep.prune if sweep else None,
        "trials": len(rows),
        **{k.replace(" ", "_"): v for k, v in counts.items()},
        "complete": counts["running"] == 0
        and (sweep is None or counts["ok"] + counts["pruned"] + counts["failed"] >= sweep.trials),
        "dataset": (sweep.flags.get("dataset") if sweep else None),
    }
    if best is not None:
        run = Path(best.user_attrs.get("run", ""))
        info.update(best_trial_number=best.number, best_value=best.value, best_params=best.params, best_run=str(run))
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
    for name, draw in (
        ("history", ovm.plot_optimization_history),
        ("parallel", ovm.plot_parallel_coordinate),
        ("importances", ovm.plot_param_importances),
    ):
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


def show_sweep(
    storage: str | None = None, study: str | None = None, out_dir: str | Path | None = None
) -> tuple[Path, str]:
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
