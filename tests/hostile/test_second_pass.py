"""The second adversarial pass (issue 22), class by class: special files wherever mnistlab
reads, numbers that size work, tampered run folders, children outliving their command,
outside services, terminal text. Each is one `mnistlab: error:` line and a non-zero exit, or
the documented behaviour; never a traceback, a hang, or a machine's worth of memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnistlab.cli import main
from mnistlab.runs import list_runs, load_run

from .test_inputs import BASE, HWM, SMALL, fails_cleanly


@pytest.fixture(autouse=True)
def _no_hang():
    """A read that blocks (a FIFO) fails the test after 60 s instead of hanging the suite."""

    def timeout(*_):
        raise TimeoutError("hung: a read blocked")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("second-pass")
    assert main(["train", "cnn", *SMALL, "--run-dir", str(root / "good"), "--figures", "none"]) == 0
    return root / "good"


# ---------------------------------------------------------------- special files, everywhere

SPECIALS = {
    "fifo": ("a FIFO", lambda p, tmp: os.mkfifo(p)),
    "dev-zero": ("a character device", lambda p, tmp: p.symlink_to("/dev/zero")),
    "folder": ("a folder", lambda p, tmp: p.mkdir()),
    "loop": ("a symlink loop", lambda p, tmp: p.symlink_to(p)),
    "dangling": ("a dangling link", lambda p, tmp: p.symlink_to(tmp / "nowhere")),
}


@pytest.mark.parametrize("kind", list(SPECIALS))
@pytest.mark.parametrize("place", ["data-dir npz", "data-dir csv", "data-dir idx", "train-images", "config"])
def test_special_files_where_data_and_config_are_read(tmp_path, capsys, kind, place):
    said, make = SPECIALS[kind]
    d = tmp_path / "d"
    d.mkdir()
    name = {
        "data-dir npz": "mnist.npz",
        "data-dir csv": "train.csv",
        "data-dir idx": "train-images-idx3-ubyte",
        "train-images": "images.npz",
        "config": "c.toml",
    }[place]
    make(d / name, tmp_path)
    if place == "data-dir csv":
        (d / "test.csv").write_text("")
    args = {
        "data-dir npz": ["--data-dir", str(d)],
        "data-dir csv": ["--data-dir", str(d)],
        "data-dir idx": ["--data-dir", str(d)],
        "train-images": ["--train-images", str(d / name)],
        "config": ["--config", str(d / name), "--dataset", "mnist-sample"],
    }[place]
    t0 = time.monotonic()
    line = fails_cleanly(["train", "cnn", "--dry-run", "--no-progress", *args], capsys, name)
    assert said in line, line
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("kind", list(SPECIALS))
@pytest.mark.parametrize("file", ["summary.json", "config.json", "checkpoint.pt", "metrics.jsonl"])
def test_special_files_in_a_run_folder(good_run, tmp_path, capsys, monkeypatch, kind, file):
    """`runs` lists the folder (or passes it over), a default pick never chooses it, and naming
    it answers one line."""
    said, make = SPECIALS[kind]
    runs = tmp_path / "runs"
    runs.mkdir()
    bad = runs / "bad"
    bad.mkdir()
    for f in ("config.json", "summary.json", "checkpoint.pt", "metrics.jsonl"):
        if f != file:
            (bad / f).write_bytes((good_run / f).read_bytes())
    make(bad / file, tmp_path)
    monkeypatch.setenv("MNISTLAB_RUNS", str(runs))
    assert main(["runs"]) == 0 and main(["runs", "--json"]) == 0
    capsys.readouterr()
    if file == "metrics.jsonl" and kind == "dangling":
        return  # a run may have no metrics yet: loadable
    fails_cleanly(["predict", "3", "--run", str(bad)], capsys, file)


# ---------------------------------------------------------------- the run-folder reader, fuzzed

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=10,
)
file_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 30000).map(lambda n: b"[" * n + b"]" * n),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=file_bodies, summary=file_bodies, metrics=file_bodies)
def test_any_run_folder_is_listed_or_refused_in_one_line(good_run, tmp_path_factory, config, summary, metrics):
    from mnistlab.errors import MnistlabError

    root = tmp_path_factory.mktemp("fuzz")
    d = root / "r"
    d.mkdir()
    (d / "checkpoint.pt").write_bytes((good_run / "checkpoint.pt").read_bytes())
    for name, body in (("config.json", config), ("summary.json", summary), ("metrics.jsonl", metrics)):
        (d / name).write_bytes(body)
    assert [r["path"] for r in list_runs(root)] in ([], [d])
    try:
        load_run(d)
    except MnistlabError:
        pass


# ---------------------------------------------------------------- tampered runs on --resume


def _cut_run(tmp_path, good_run) -> Path:
    """A copy of a finished 1-epoch run made unfinished: resumable, as after a kill."""
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in ("config.json", "checkpoint.pt", "metrics.jsonl", "env.json"):
        (cut / f).write_bytes((good_run / f).read_bytes())
    cfg = json.loads((cut / "config.json").read_text())
    cfg["train"]["epochs"] = 2
    (cut / "config.json").write_text(json.dumps(cfg))
    return cut


def test_a_metrics_line_cut_mid_write_is_dropped_with_a_notice(good_run, tmp_path, capsys):
    cut = _cut_run(tmp_path, good_run)
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')
    assert main(["train", "cnn", "--resume", str(cut), "--no-progress", "--figures", "none"]) == 0
    assert "cut short" in capsys.readouterr().err
    assert [json.loads(x)["epoch"] for x in (cut / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (cut / "figures").exists()  # --figures none holds on --resume


def _edit_config(cut, fn):
    cfg = json.loads((cut / "config.json").read_text())
    fn(cfg)
    (cut / "config.json").write_text(json.dumps(cfg))


def _mlp_checkpoint(cut, good_run, tmp_path):
    from mnistlab.models import create_model
    from mnistlab.runs import save_checkpoint

    save_checkpoint(cut / "checkpoint.pt", create_model("mlp"), epoch=1, extra={"resume": {"epoch": 1}})


def _checkpoint_epoch(value):
    def edit(cut, good_run, tmp_path):
        state = torch.load(cut / "checkpoint.pt", weights_only=True)
        state["epoch"] = value
        torch.save(state, cut / "checkpoint.pt")

    return edit


TAMPERED = {
    "garbage line": (lambda cut, g, t: (cut / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n'), "metrics.jsonl"),
    "metrics missing": (lambda cut, g, t: (cut / "metrics.jsonl").unlink(), "the record is incomplete"),
    "config invalid": (lambda cut, g, t: (cut / "config.json").write_text("{nope"), "config.json"),
    "config a list": (lambda cut, g, t: (cut / "config.json").write_text("[1]"), "not a JSON object"),
    "config deep": (
        lambda cut, g, t: (cut / "config.json").write_text("[" * 100_000 + "]" * 100_000),
        "nested too deeply",
    ),
    "batch -1": (lambda cut, g, t: _edit_config(cut, lambda c: c["train"].update(batch_size=-1)), "batch_size"),
    "epochs 10^9": (lambda cut, g, t: _edit_config(cut, lambda c: c["train"].update(epochs=10**9)), "epochs"),
    "mlp checkpoint": (_mlp_checkpoint, "'mlp'"),
    "channels edited": (
        lambda cut, g, t: _edit_config(cut, lambda c: c["model"].update(channels=[8, 16])),
        "config.json's model section",
    ),
    "epoch -5": (_checkpoint_epoch(-5), "epoch -5"),
    "epoch 10^12": (_checkpoint_epoch(10**12), "does not fit the run"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_run_is_refused_in_one_line_and_stays_unfinished(good_run, tmp_path, capsys, case):
    tamper, message = TAMPERED[case]
    cut = _cut_run(tmp_path, good_run)
    tamper(cut, good_run, tmp_path)
    fails_cleanly(["train", "cnn", "--resume", str(cut), "--no-progress"], capsys, message)
    assert not (cut / "summary.json").exists()


@pytest.mark.parametrize("case", ["mlp checkpoint", "channels edited", "epoch 10^12"])
def test_a_tampered_finished_run_is_not_used(good_run, tmp_path, capsys, case):
    tamper, message = TAMPERED[case]
    cut = _cut_run(tmp_path, good_run)
    (cut / "summary.json").write_bytes((good_run / "summary.json").read_bytes())
    tamper(cut, good_run, tmp_path)
    fails_cleanly(["predict", "3", "--run", str(cut)], capsys, message)


# ---------------------------------------------------------------- numbers that size work

# Each case in turn in one child: its exit code, its stderr, its seconds, and the child's memory
# high-water mark above torch's import after it. The mark only rises, so a case that used more
# than the bound shows at that case; one child for all (each child costs a second of start-up).
_BOUNDED = (
    BASE + "import contextlib, io, json, sys, time\nfrom mnistlab.cli import main\n"
    "for args in json.loads(sys.argv[1]):\n"
    "    err, t0 = io.StringIO(), time.monotonic()\n"
    "    with contextlib.redirect_stderr(err):\n"
    "        rc = main(args)\n"
    f"    print(json.dumps({{'rc': rc, 'stderr': err.getvalue(), 'seconds': time.monotonic() - t0, "
    f"'peak_kb': {HWM} - _base}}), flush=True)\n"
)

SIZES = [
    (["report", "--only", "cnn", "--seeds", "0-300000000"], "at most 1,000 seeds"),
    (["report", "--only", "cnn", "--seeds", "0-4294967296"], "at most 2^32-1"),
    (
        [
            "sweep",
            "cnn",
            *(
                f"--grid={k}={','.join(map(str, range(1, 101)))}"
                for k in ("lr", "seed", "epochs", "batch_size", "weight_decay")
            ),
        ],
        "10,000,000,000 points",
    ),
    # widths within their declared ranges (a width past them is refused by the range, issue 32)
    # and a batch of a million: the estimate, not the range, refuses these
    (["train", "cnn", "--dry-run", "--set", "model.channels=256,256", "--set", "batch_size=1000000"], "GiB to train"),
    (["train", "ae-dense", "--dry-run", "--set", "code=4096", "--set", "batch_size=1000000"], "GiB to train"),
    (["train", "mlp", "--dry-run", "--set", "hidden=1024,1024", "--set", "batch_size=1000000"], "GiB to train"),
    (["train", "cnn", "--dry-run", "--set", "threads=100000"], "train.threads"),
    (["train", "cnn", "--dry-run", "--nproc", "1000"], "--nproc 1000"),
    (["sweep", "cnn", "--grid", "lr=0.1,0.2", "--workers", "256"], "--workers 256"),
]


@pytest.mark.slow("measures memory in a child process")
def test_numbers_that_size_work_are_refused_before_the_work(mb: float = 150, seconds: float = 10):
    """Each refused in one line, within 10 s, the child's memory above torch's own import under
    150 MB (in a child: ru_maxrss and VmHWM are a process's own)."""
    p = subprocess.run(
        [sys.executable, "-c", _BOUNDED, json.dumps([args for args, _ in SIZES])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in p.stderr, p.stderr
    results = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(results) == len(SIZES), (p.stdout, p.stderr)
    for (args, message), got in zip(SIZES, results):
        lines = [ln for ln in got["stderr"].splitlines() if ln.startswith("mnistlab: error:")]
        assert got["rc"] == 1 and len(lines) == 1 and message in lines[0], (args, got)
        assert got["peak_kb"] / 1024 < mb and got["seconds"] < seconds, (args, got)


def test_model_size_is_judged_against_the_memory_there_is():
    from mnistlab.config import build_config
    from mnistlab.errors import ConfigError
    from mnistlab.models.sizing import check_fits, estimate

    cfg = build_config("cnn")
    params, acts = estimate("cnn", cfg.model, 128)
    assert params == sum(p.numel() for p in __import__("mnistlab").create_model("cnn").parameters())
    assert acts > 128 * 32 * 26 * 26  # the first convolution's output alone
    check_fits("cnn", cfg.model, 128, memory=1 << 30)
    with pytest.raises(ConfigError, match="narrower"):
        check_fits("cnn", cfg.model, 128, memory=1 << 20)


# ---------------------------------------------------------------- children die with their parent


@pytest.mark.slow("starts a two-process distributed job")
def test_a_killed_launcher_leaves_no_worker(tmp_path):
    from tests.test_distributed import _ranks_of

    run = tmp_path / "orphans"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnistlab",
            "train",
            "cnn",
            "--dataset",
            "mnist-sample",
            "--epochs",
            "50",
            "--nproc",
            "2",
            "--device",
            "cpu",
            "--run-dir",
            str(run),
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    ranks: dict = {}
    while len(ranks) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.3)
        ranks = _ranks_of(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in ranks.values()):
        assert time.monotonic() < deadline, f"workers {ranks} outlived their launcher"
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


# ---------------------------------------------------------------- outside services fail fast


def test_an_in_memory_sqlite_study_is_refused(capsys, tmp_path):
    pytest.importorskip("optuna")
    for url in ("sqlite:///", "sqlite:///:memory:"):
        fails_cleanly(
            ["sweep", "cnn", "--grid", "lr=0.1,0.2", "--storage", url, "--out", str(tmp_path / "s")],
            capsys,
            "in-memory SQLite",
        )
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "uri,message",
    [
        ("junk://x", "not a tracking store"),
        ("::::", "not a tracking store"),
        ("http://127.0.0.1:1", "cannot be reached"),
    ],
)
def test_a_bad_tracking_uri_fails_before_a_run_folder_is_made(capsys, tmp_path, monkeypatch, uri, message):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.monotonic()
    fails_cleanly(["train", "cnn", *SMALL, "--track", "mlflow", "--run-dir", str(tmp_path / "r")], capsys, message)
    assert time.monotonic() - t0 < 10 and not (tmp_path / "r").exists()


def test_a_host_that_answers_404_is_no_mlflow_server(capsys, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{server.server_address[1]}")
        fails_cleanly(
            ["train", "cnn", *SMALL, "--track", "mlflow", "--run-dir", str(tmp_path / "r")], capsys, "HTTP 404"
        )
    finally:
        server.shutdown()
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- terminal text and messages


def test_runs_escapes_what_it_prints_from_disk(good_run, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    forged = runs / "a\nforged-row\x1b]0;owned\x07\x1b[2J"
    forged.mkdir()
    for f in ("config.json", "summary.json", "checkpoint.pt"):
        (forged / f).write_bytes((good_run / f).read_bytes())
    _edit_config(forged, lambda c: c["data"].update(dataset="x\x1b]8;;http://evil\x07y"))
    monkeypatch.setenv("MNISTLAB_RUNS", str(runs))
    capsys.readouterr()
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert len(out.strip().splitlines()) == 2  # the header and one row: no forged row
    assert "\\n" in out and "\\x1b" in out


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ('a: &a ["x","x"]\nb: &b [*a,*a]\ntrain:\n  lr: [*b,*b]\n', "aliases"),
        ("train:\n  lr: 0.1\n  lr: 0.2\n", "given twice"),
    ],
)
def test_yaml_without_aliases_or_repeated_keys(tmp_path, capsys, yaml_text, message):
    (tmp_path / "c.yaml").write_text(yaml_text)
    fails_cleanly(["train", "cnn", "--dry-run", "--config", str(tmp_path / "c.yaml")], capsys, message)


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_a_config_that_is_not_utf8(tmp_path, capsys, suffix):
    (tmp_path / f"c{suffix}").write_bytes(b"[train]\nlr = 0.1 # \xff\xfe\n")
    fails_cleanly(["train", "cnn", "--dry-run", "--config", str(tmp_path / f"c{suffix}")], capsys, "not UTF-8")


@pytest.mark.parametrize(
    "save,message", [("/proc/version", "under /proc"), ("x" * 300 + ".png", "too long"), (".", "a folder")]
)
def test_output_paths_that_cannot_be_written(tmp_path, capsys, monkeypatch, save, message):
    monkeypatch.chdir(tmp_path)
    fails_cleanly(["show", "3", "--dataset", "mnist-sample", "--save", save], capsys, message)


def test_a_dangling_run_dir_link_is_named_as_one(tmp_path, capsys):
    (tmp_path / "r").symlink_to(tmp_path / "nowhere")
    fails_cleanly(["train", "cnn", "--dry-run", "--run-dir", str(tmp_path / "r")], capsys, "dangling link")


def test_predicting_from_the_users_files_names_them_and_save_alone_saves(good_run, tmp_path, capsys):
    import numpy as np

    from mnistlab.data.sources import load_dataset

    ds = load_dataset("mnist-sample")
    np.savez(tmp_path / "ok.npz", x_train=ds.test.images[:20].numpy(), y_train=ds.test.labels[:20].numpy())
    capsys.readouterr()
    assert (
        main(["predict", "3", "--train", "--run", str(good_run), "--train-images", str(tmp_path / "ok.npz"), "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert "mnist-sample" not in out["input"] and out["input"].startswith("files")
    assert (
        main(["predict", "3", "--run", str(good_run), "--dataset", "mnist-sample", "--save", str(tmp_path / "p.png")])
        == 0
    )
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_the_same_file_as_train_and_test_is_said(tmp_path, capsys):
    import numpy as np

    from mnistlab.data.formats import load_files
    from mnistlab.data.sources import load_dataset

    ds = load_dataset("mnist-sample")
    np.savez(tmp_path / "ok.npz", x_train=ds.test.images[:20].numpy(), y_train=ds.test.labels[:20].numpy())
    said = []
    load_files(str(tmp_path / "ok.npz"), test_images=str(tmp_path / "ok.npz"), notice=said.append)
    assert any("also the training images" in s for s in said)


def test_a_refused_pickle_passes_on_no_unsafe_advice(good_run, tmp_path, capsys):
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("true",))

    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("config.json", "summary.json"):
        (bad / f).write_bytes((good_run / f).read_bytes())
    (bad / "checkpoint.pt").write_bytes(pickle.dumps({"x": Boom()}))
    line = fails_cleanly(["predict", "3", "--run", str(bad)], capsys, "never loads")
    assert "weights_only" not in line and "False" not in line


def test_report_only_takes_the_globs_its_help_lists(capsys):
    from mnistlab.studies.report import select_jobs

    names = [j.name for j in select_jobs(["ae-*", "cnn"])]
    assert names[-1] == "cnn" and len(names) >= 6 and all(n.startswith("ae-") for n in names[:-1])
    fails_cleanly(["report", "--only", "zz*", "--seeds", "0"], capsys, "no such figure job")


def test_a_sweep_whose_trials_lie_breaks_no_listing(good_run, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    sweep = runs / "sweep-x"
    for t in ("trial-0", "trial-1"):
        (sweep / t).mkdir(parents=True)
        for f in ("config.json", "checkpoint.pt"):
            (sweep / t / f).write_bytes((good_run / f).read_bytes())
        (sweep / t / "summary.json").write_text(json.dumps({"test_acc": "abc", "epochs": "\x1b[2J"}))
    (sweep / "sweep.json").write_text(json.dumps({"model": "cnn", "best_test_acc": "x"}))
    monkeypatch.setenv("MNISTLAB_RUNS", str(runs))
    capsys.readouterr()
    assert main(["runs"]) == 0 and main(["runs", "--json"]) == 0
    assert "\x1b" not in capsys.readouterr().out
    fails_cleanly(["predict", "3", "--run", str(sweep)], capsys, "no finished trial")


@pytest.mark.parametrize("kind", list(SPECIALS))
def test_special_files_given_as_images(good_run, tmp_path, capsys, kind):
    said, make = SPECIALS[kind]
    make(tmp_path / "digit.png", tmp_path)
    for cmd in (["predict", str(tmp_path / "digit.png")], ["read", str(tmp_path / "digit.png")]):
        capsys.readouterr()
        assert main([*cmd, "--run", str(good_run)]) == 1
        err = capsys.readouterr().err
        assert "digit.png" in err and said in err and "Traceback" not in err, err
