"""Sweeps on Optuna: grid and search, pruning, argument errors, resuming after a killed
worker, several workers on one study (SQLite here, PostgreSQL in the slow tests)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnistlab.cli import main

optuna = pytest.importorskip("optuna", reason="the 'sweep' extra is not installed")
from mnistlab.studies.sweep.study import open_storage  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
# each trial's own figures are a training's (tested there); a sweep's figures are drawn either way
TINY = ["--dataset", "mnist-sample", "--epochs", "1", "--set", "limit_batches=2", "--no-progress", "--figures", "none"]


def table(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "table.csv").open()))


def finished_runs(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("t*") if (p / "summary.json").is_file())


@pytest.mark.slow("runs sweeps: trials, studies and worker processes")
def test_grid_sweep_end_to_end_records_failures(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "ae-dense", "--grid", "code=4,8", "--grid", "hidden=32|64", *TINY, "--out", str(out)])
    assert code == 0
    rows = table(out)
    # the table follows the grid's order; each point trained once, into its own run folder
    assert [(r["code"], r["hidden"], r["status"]) for r in rows] == [
        ("4", "32", "ok"),
        ("4", "64", "ok"),
        ("8", "32", "ok"),
        ("8", "64", "ok"),
    ]
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2, 3]
    assert all(0 < float(r["val_mse"]) < 1 and float(r["test_mse"]) > 0 for r in rows)
    assert len(finished_runs(out)) == 4 and all(Path(r["run"]).is_dir() for r in rows)
    for name in ("comparison.png", "history.png", "parallel.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
    assert "| trial | code | hidden | val_mse | test_mse |" in (out / "table.md").read_text()
    info = json.loads((out / "sweep.json").read_text())
    assert info["ok"] == 4 and info["complete"] and info["sampler"] == "grid" and info["direction"] == "minimize"
    best = min(rows, key=lambda r: float(r["val_mse"]))
    assert info["best_trial"] == Path(best["run"]).name
    # the runs sit in a sqlite study in the sweep folder: no server needed
    assert (out / "study.db").is_file()

    out2 = tmp_path / "sweep2"
    # (a value out of its declared range is refused before the sweep; one the model's own
    # checks refuse is a failed trial)
    assert main(["sweep", "ae-dense", "--grid", "code_act=relu,bogus", *TINY, "--out", str(out2)]) == 0
    rows = table(out2)
    assert [r["status"] for r in rows] == ["ok", "failed"] and "model.code_act" in rows[1]["error"]
    assert "trial" in capsys.readouterr().err


@pytest.mark.slow("runs sweeps: trials, studies and worker processes")
def test_rerunning_a_finished_sweep_trains_nothing_and_show_reprints_it(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", "cnn", "--grid", "lr=0.001,0.002", *TINY, "--out", str(out)]
    assert main(args) == 0
    first = table(out)
    mtimes = {p: p.stat().st_mtime for p in finished_runs(out)}
    capsys.readouterr()
    assert main(args) == 0  # the same command again: the study is complete, nothing retrains
    assert table(out) == first and {p: p.stat().st_mtime for p in finished_runs(out)} == mtimes
    assert "already finished" in capsys.readouterr().err
    study = json.loads((out / "sweep.json").read_text())["study"]
    assert main(["sweep", "--show", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "| trial | lr | val_acc | test_acc |" in shown and shown.count("| ok |") == 2
    assert (
        main(
            [
                "sweep",
                "--show",
                "--storage",
                f"sqlite:///{out / 'study.db'}",
                "--study",
                study,
                "--out",
                str(tmp_path / "shown"),
            ]
        )
        == 0
    )
    assert table(tmp_path / "shown") == first


@pytest.mark.slow("runs sweeps: trials, studies and worker processes")
@pytest.mark.outcome
def test_search_with_pruning_stops_hopeless_trials(tmp_path, capsys):
    """Two learning rates too small to learn in 3 epochs among good ones: the median pruner
    (two start-up trials) stops the hopeless ones after an epoch; their run folders stay unfinished."""
    out = tmp_path / "p"
    assert (
        main(
            [
                "sweep",
                "cnn",
                "--grid",
                "lr=0.000001,0.0000012,0.002,0.003",
                "--prune",
                "--dataset",
                "mnist-sample",
                "--epochs",
                "3",
                "--set",
                "limit_batches=12",
                "--no-progress",
                "--figures",
                "none",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = table(out)
    pruned = [r for r in rows if r["status"] == "pruned"]
    # the grid sampler's seeded order puts the two good rates first (the start-up trials)
    assert [r["trial"] for r in rows if float(r["lr"]) > 1e-3] == ["0", "1"], rows
    assert len(pruned) == 2 and all(float(r["lr"]) < 1e-5 for r in pruned), rows
    assert all(int(r["epochs"]) < 3 and "pruned after epoch" in r["error"] for r in pruned)
    for r in pruned:
        assert not (Path(r["run"]) / "summary.json").exists() and (Path(r["run"]) / "metrics.jsonl").is_file()
    assert {r["status"] for r in rows if float(r["lr"]) > 1e-3} == {"ok"}
    assert "pruned" in capsys.readouterr().out


@pytest.mark.slow("runs sweeps: trials, studies and worker processes")
def test_tpe_search_over_ranges(tmp_path):
    out = tmp_path / "t"
    assert (
        main(
            [
                "sweep",
                "ae-dense",
                "--search",
                "lr=0.0001:0.01:log",
                "--search",
                "code=2:16",
                "--search",
                "hidden=32|64",
                "--trials",
                "4",
                *TINY,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = table(out)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert 1e-4 <= float(r["lr"]) <= 1e-2 and 2 <= int(r["code"]) <= 16 and r["hidden"] in ("32", "64")
    assert json.loads((out / "sweep.json").read_text())["sampler"] == "tpe"
    cfg = json.loads((Path(rows[0]["run"]) / "config.json").read_text())
    assert cfg["model"]["code"] == int(rows[0]["code"]) and cfg["train"]["val_fraction"] == 0.1


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "at least one --grid"),
        (["--grid", "lr"], "expected key=v1,v2"),
        (["--grid", "lr=0.1,"], "empty value"),
        (["--grid", "lr=0.1,0.1"], "given twice"),
        (["--grid", "nosuch=1,2"], "nosuch"),
        (["--search", "lr=0.1:0.01"], "LOW must be below HIGH"),
        (["--search", "lr=0:1:log", "--trials", "2"], "log range needs LOW > 0"),
        (["--search", "lr=a:1"], "expected LOW:HIGH"),
        (["--search", "lr=0.001:0.1"], "needs --trials"),
        (["--search", "lr=0.001:0.1", "--sampler", "grid"], "needs listed values"),
        (["--grid", "lr=0.1,0.2", "--trials", "5"], "each of its 2 points once"),
        (["--grid", "lr=0.1,0.2", "--workers", "0"], "--workers 0"),
        (["--grid", "lr=0.1,0.2", "--timeout", "-1"], "--timeout"),
        (["--grid", "lr=0.1,0.2", "--study", "bad name/x"], "--study"),
        (["--grid", "lr=0.1,0.2", "--storage", "nosuchdb://x"], "cannot open the study storage"),
    ],
)
def test_sweep_argument_errors_are_one_line(tmp_path, capsys, args, message):
    code = main(["sweep", "cnn", *args, "--dataset", "mnist-sample", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and message in err and err.startswith("mnistlab: error:") and len(err.splitlines()) == 1, err
    assert not list(tmp_path.glob("o/t*"))  # nothing trained


def test_show_and_model_errors_are_one_line(tmp_path, capsys):
    assert main(["sweep", "--grid", "lr=0.1,0.2"]) == 1
    assert "needs a MODEL" in capsys.readouterr().err
    assert main(["sweep", "--show"]) == 1
    assert "--show needs --storage" in capsys.readouterr().err
    assert main(["sweep", "--show", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--study", "x"]) == 1
    assert "no study 'x'" in capsys.readouterr().err


@pytest.mark.slow("runs sweeps: trials, studies and worker processes")
def test_a_joining_worker_with_another_sweep_is_refused(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    assert (
        main(
            [
                "sweep",
                "ae-dense",
                "--grid",
                "code=4,8",
                *TINY,
                "--storage",
                db,
                "--study",
                "s",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sweep",
                "ae-dense",
                "--grid",
                "hidden=32,64",
                *TINY,
                "--storage",
                db,
                "--study",
                "s",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 1
    )
    assert "is another sweep" in capsys.readouterr().err


# ---------------------------------------------------------------- several processes


def _worker(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "sweep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def _kill_mid_trial(
    proc: subprocess.Popen, out: Path, storage: str | None = None, study: str | None = None, timeout: float = 180
) -> Path:
    """SIGKILL `proc` once a trial it runs has logged an epoch; returns that trial's folder.
    With `storage`, the trial is told by the pid it records, else it is the only one running."""
    deadline = time.monotonic() + timeout
    # one storage (one connection pool) for the whole wait: a new one per poll left a pool open
    # every 50 ms until the collector came, and PostgreSQL ran out of connections
    rdb = open_storage(storage) if storage else None
    while time.monotonic() < deadline:
        if storage:
            try:
                st = optuna.load_study(study_name=study, storage=rdb)
                trials = [t for t in st.get_trials(deepcopy=False) if t.user_attrs.get("pid") == proc.pid]
                mine = [
                    Path(t.user_attrs["run"]) for t in trials if t.state.name == "RUNNING" and "run" in t.user_attrs
                ]
                if not any(t.state.name == "COMPLETE" for t in trials):
                    mine = []  # let it finish one trial first
            except KeyError:  # the study is not created yet
                mine = []
        else:
            mine = list(out.glob("t*"))
        for d in mine:
            if (
                (d / "metrics.jsonl").is_file()
                and (d / "metrics.jsonl").stat().st_size
                and not (d / "summary.json").exists()
            ):
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return d
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no trial caught mid-way")


def _assert_complete(out: Path, points: int) -> list[dict]:
    rows = table(out)
    ok = [r for r in rows if r["status"] == "ok"]
    keys = [
        k
        for k in rows[0]
        if k
        not in (
            "trial",
            "status",
            "error",
            "host",
            "run",
            "params",
            "train_time_s",
            "epochs",
            "val_acc",
            "test_acc",
            "val_mse",
            "test_mse",
        )
    ]
    assert len(ok) == points and len({tuple(r[k] for k in keys) for r in ok}) == points, rows  # none twice
    assert len(finished_runs(out)) == points
    assert all(r["status"] in ("ok", "cut off") for r in rows), rows
    return rows


SLOWER = [
    "--dataset",
    "mnist-sample",
    "--epochs",
    "3",
    "--set",
    "limit_batches=12",
    "--no-progress",
    "--heartbeat",
    "1",
    "--figures",
    "none",
]


@pytest.mark.slow("runs sweeps: trials, studies and worker processes")
def test_a_killed_worker_s_trial_is_redone_when_the_sweep_is_run_again(tmp_path, capsys):
    out = tmp_path / "k"
    args = ["cnn", "--grid", "lr=0.001,0.002,0.003", *SLOWER, "--out", str(out)]
    killed = _kill_mid_trial(_worker(args), out)
    assert main(["sweep", *args]) == 0  # waits out the dead worker's heartbeat, then redoes its point
    rows = _assert_complete(out, 3)
    cut = [r for r in rows if r["status"] == "cut off"]
    assert [Path(r["run"]).name for r in cut] == [killed.name]
    assert "redoing" in capsys.readouterr().err
    assert (killed / "metrics.jsonl").is_file()  # the cut-off run's record is kept


@pytest.mark.slow("runs sweeps: trials, studies and worker processes")
def test_workers_on_one_machine_share_the_study(tmp_path):
    out = tmp_path / "w"
    assert (
        main(
            [
                "sweep",
                "ae-dense",
                "--grid",
                "code=2,4,8",
                "--grid",
                "hidden=32,64",
                *TINY,
                "--workers",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    _assert_complete(out, 6)


@pytest.mark.slow("starts PostgreSQL and sweep workers")
def test_two_workers_share_a_postgresql_study_and_survive_a_kill(tmp_path, postgres_url):
    """The bar: two worker processes on one PostgreSQL study of a 6-point grid share it out;
    one is killed mid-trial, the other waits out its heartbeat and redoes that point, and the
    sweep re-run finds the study complete: 6 complete trials, no point twice, 6 complete run
    folders, the cut-off trial recorded as failed."""
    grid = ["--grid", "lr=0.001,0.002,0.003", "--grid", "batch_size=64,128"]
    out = tmp_path / "pg"
    args = ["cnn", *grid, *SLOWER, "--storage", postgres_url, "--study", "pg-grid", "--out", str(out)]
    a, b = _worker(args), _worker(args)
    killed = _kill_mid_trial(a, out, postgres_url, "pg-grid")
    assert b.wait(600) == 0, b.communicate()
    study = optuna.load_study(study_name="pg-grid", storage=postgres_url)
    pids = {t.user_attrs.get("pid") for t in study.trials if t.state.name == "COMPLETE"}
    assert a.pid in pids and b.pid in pids  # both workers finished trials of the one study
    assert main(["sweep", *args]) == 0  # the re-run: nothing lost, nothing to do
    rows = _assert_complete(out, 6)
    assert [Path(r["run"]).name for r in rows if r["status"] == "cut off"] == [killed.name]
    states = [
        t.state.name
        for t in optuna.load_study(study_name="pg-grid", storage=postgres_url).trials
        if "duplicate_of" not in t.user_attrs
    ]
    assert states.count("COMPLETE") == 6 and states.count("FAIL") == 1
    assert len({r["host"] for r in rows}) == 1  # both on this machine; each trial records where it ran
