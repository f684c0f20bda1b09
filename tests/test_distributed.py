"""Training with PyTorch's DistributedDataParallel: 2 CPU processes (gloo), through
`mnistlab train --nproc 2` and through torchrun itself; only rank 0 writes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnistlab.cli import main
from mnistlab.data.batches import Batches
from mnistlab.models import list_models

# Two gloo processes on the CPU, asked for: on a one-GPU machine 'auto' would mean NCCL and refuse two.
DRY = ["--dataset", "mnist-sample", "--epochs", "1", "--set", "limit_batches=6", "--no-progress", "--device", "cpu"]


def mnistlab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnistlab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def test_shards_split_every_batch_between_the_ranks():
    images, labels = torch.zeros(101, 28, 28, dtype=torch.uint8), torch.arange(101)
    passes = []
    for rank in range(3):
        b = Batches(images, labels, batch_size=16, generator=torch.Generator().manual_seed(5), shard=(rank, 3))
        passes.append([y for _, y in b])
    whole = [y for _, y in Batches(images, labels, batch_size=16, generator=torch.Generator().manual_seed(5))]
    for k, batch in enumerate(whole[:-1]):  # the last (5 samples) is too small to give each rank two
        parts = [passes[r][k] for r in range(3)]
        assert torch.equal(torch.cat(parts), batch) and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(len(p) == len(whole) - 1 for p in passes)  # every rank takes the same number of steps
    assert len(Batches(images, labels, batch_size=16, generator=torch.Generator(), shard=(0, 3))) == len(whole) - 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nproc", "0"], "--nproc 0"),
        (["--nproc", "2", "--reuse"], "does not go with --reuse"),
        (["--nproc", "2", "--set", "lr=-1"], "train.lr: must be in"),
    ],
)
def test_nproc_errors_are_one_line_before_any_process_starts(capsys, args, message):
    assert main(["train", "cnn", "--dataset", "mnist-sample", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mnistlab: error:") and message in err and len(err.splitlines()) == 1, err
    assert "MNISTLAB_LAUNCHED" not in os.environ


@pytest.mark.slow("starts a two-process distributed job")
def test_torchrun_itself_runs_the_same_training(tmp_path):
    run = tmp_path / "tr"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "mnistlab",
            "train",
            "ae-dense",
            *DRY,
            "--run-dir",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "summary.json").read_text())["processes"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def _ranks_of(parent: int) -> dict[int, int]:
    """rank -> pid of the processes under `parent` that torch's launcher started."""

    def ancestors(pid):
        while pid > 1:
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                return
            yield pid

    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = dict(
                kv.split("=", 1)
                for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in kv
            )
        except OSError:
            continue
        if env.get("MNISTLAB_LAUNCHED") == "1" and "RANK" in env and parent in ancestors(int(d.name)):
            found[int(env["RANK"])] = int(d.name)
    return found


# Started in every rank of the job below: once the run's first checkpoint is written, rank 1 is
# killed from outside, and rank 0, as a survivor torn down by gloo would, prints the C++
# runtime's line and aborts, both within a few milliseconds (the launcher sees them in one pass).
_DIE_TOGETHER = """
import os, signal, sys, threading, time
rank, marker = os.environ.get("RANK"), os.environ.get("DIE_TOGETHER_AT")
if rank in ("0", "1") and marker and os.environ.get("MNISTLAB_LAUNCHED"):
    def act():
        while not (os.path.isfile(marker) and os.path.getsize(marker)):
            time.sleep(0.005)
        if rank == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(float(os.environ.get("DIE_TOGETHER_DELAY", "0")))
        os.write(2, b"terminate called without an active exception\\n")
        os.abort()
    threading.Thread(target=act, daemon=True).start()
"""


@pytest.mark.parametrize(
    "survivor, code", [("abort", -6), ("launcher's SIGTERM", -15), ("peer lost", 75), ("exit code 1", 1)]
)
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_the_rank_that_died_is_named_not_the_survivor_it_took_down(tmp_path, survivor, code, order):
    """Both exits seen in one pass of the launcher (one timestamp), in either order: the rank
    killed by a signal is named, not the survivor aborted by the runtime, stopped by the
    launcher, or exiting because its peer went; a rank's own error comes before any signal."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from mnistlab.distributed import PEER_LOST, first_failure

    code = PEER_LOST if survivor == "peer lost" else code

    def failure(rank, exitcode, error_file=tmp_path / "none.json"):
        f = ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(error_file))
        f.timestamp = 1_796_000_000
        return f

    failures = {r: failure(r, -9 if r == 1 else code) for r in order}
    assert first_failure(failures)[0] == 1
    own = tmp_path / "error.json"
    own.write_text(json.dumps({"message": "train.lr: must be > 0", "timestamp": 1_796_000_000}))
    failures[0] = failure(0, 1, own)
    assert first_failure(failures)[0] == 0 and first_failure(failures)[1].message == "train.lr: must be > 0"


@pytest.mark.slow("starts a two-process distributed job")
def test_a_rank_that_dies_ends_the_job_with_one_clear_error_and_the_run_resumes(tmp_path):
    run = tmp_path / "k"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_DIE_TOGETHER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")])),
        "DIE_TOGETHER_AT": str(run / "checkpoint.pt"),
    }  # written whole (renamed into place)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistlab",
            "train",
            "cnn",
            "--dataset",
            "mnist-sample",
            "--epochs",
            "4",
            "--set",
            "limit_batches=4",
            "--nproc",
            "2",
            "--run-dir",
            str(run),
            "--device",
            "cpu",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnistlab: error: rank 1 of 2 failed: Signal 9"), p.stderr
    assert "terminate called" not in p.stderr and "--resume" in lines[0] and not (run / "summary.json").exists()
    # resumed by 2 processes: one run, written once, by rank 0
    p = mnistlab("train", "cnn", "--resume", str(run), "--nproc", "2", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("test accuracy") == 1 and "Traceback" not in p.stderr  # rank 0 reports, once
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 5)) and all(0 < r["test_acc"] <= 1 for r in rows)
    env = json.loads((run / "env.json").read_text())
    assert env["distributed"] == {"world_size": 2, "local_world_size": 2, "nodes": 1, "backend": "gloo"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["epochs"] == 4
    assert len(list(Path(os.environ["MNISTLAB_RUNS"]).glob("*"))) == 0  # no stray run folder from rank 1
    assert (run / "figures" / "curves.png").is_file()


@pytest.mark.outcome
@pytest.mark.slow("starts a two-process distributed job")
def test_two_processes_reach_the_single_process_accuracy(tmp_path):
    """The bar: 2 gloo processes train cnn to within 0.5 points of one process, same global
    batch and seed."""
    args = [
        "train",
        "cnn",
        "--dataset",
        "mnist-sample",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--no-progress",
        "--device",
        "cpu",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert mnistlab(*args, "--run-dir", str(one)).returncode == 0
    p = mnistlab(*args, "--nproc", "2", "--run-dir", str(two))
    assert p.returncode == 0, p.stderr
    acc = [json.loads((d / "summary.json").read_text())["test_acc"] for d in (one, two)]
    assert acc[0] > 0.94 and abs(acc[0] - acc[1]) <= 0.005, acc


@pytest.mark.slow("starts a two-process distributed job")
def test_every_registered_model_trains_under_ddp(tmp_path):
    """One 2-process job trains each registered model (coupled optimisers and the two-stage
    encoder classifier too) for a few batches; rank 0 writes each run."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(Path(__file__).with_name("ddp_every_model.py")),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    done = {r["model"]: r["summary"] for r in map(json.loads, p.stdout.splitlines())}
    assert set(done) == set(list_models("*"))
    for model, summary in done.items():
        assert summary["processes"] == 2, model
        assert all(v == v for k, v in summary.items() if k.startswith("test_")), (model, summary)  # no NaN
        assert (tmp_path / model / "summary.json").is_file()
    stages = [json.loads(line).get("stage") for line in (tmp_path / "encoder-classifier" / "metrics.jsonl").open()]
    assert stages == ["frozen", "finetune"]


@pytest.mark.parametrize("command", [["experiment", "reencode"], ["sweep", "cnn", "--grid", "lr=0.1,0.2"]])
def test_experiments_and_sweeps_refuse_to_run_under_torchrun(monkeypatch, capsys, command):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main([*command, "--dataset", "mnist-sample"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mnistlab: error: rank 1:") and "only `train` runs distributed" in err, err
