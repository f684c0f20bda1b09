"""The web server under hostile clients (issue 12): every bad request a 4xx JSON answer,
foreign Host headers refused, security headers on every answer, half-open connections
unable to stop it, and small requests fast while large images are posted."""

from __future__ import annotations

import json
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from mnistlab.errors import MnistlabError  # noqa: E402
from mnistlab.web.app import create_app  # noqa: E402

HEAD_TIMEOUT = 3  # the live server's --head-timeout: the same guard as the default 10 s, waited out sooner


@pytest.fixture(scope="module")
def runs(cnn_run_dir):
    return cnn_run_dir  # any trained classifier: the session's


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(create_app([runs]), base_url="http://localhost")


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that claims w x h pixels (8-bit grey) and holds none: PIL reads the size, never the data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _json_post(client, body: bytes, path="/api/predict"):
    return client.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # nested 100k levels
        b'{"pixels": [[1' + b"0" * 400 + b"]]}",  # a pixel of 10^400
        b'{"pixels": ' + b"9" * 5000 + b"}",  # a 5000-digit integer
        b'{"pixels": [[1e400]]}',
        b'{"pixels": "abc"}',
        b"\xff\xfe",
        b"{}",
        b"null",
    ],
)
def test_bad_json_gets_a_400_json_answer(client, body):
    r = _json_post(client, body)
    assert r.status_code == 400 and "error" in r.json()


def test_bad_images_get_4xx_json(client):
    import io

    buf = io.BytesIO()
    Image.new("LAB", (40, 40), (50, 0, 0)).save(buf, format="TIFF")
    for body, status in (
        (buf.getvalue(), 400),
        (_png_header_only(20000, 20000), 413),
        (_png_header_only(3000, 10), 413),
        (b"GIF89a nonsense", 400),
    ):
        r = client.post("/api/predict", content=body, headers={"content-type": "image/png"})
        assert r.status_code == status and "error" in r.json(), (status, r.text)


def test_figure_names_that_are_no_file_name(client):
    for name in ("a%00.png", "x" * 5000 + ".png", "../config.json", "..%2Fsummary.json", ".png", "%2Fetc%2Fpasswd"):
        r = client.get("/api/figure?run=cnn&name=" + name)
        assert r.status_code == 404 and "error" in r.json()


def test_only_json_and_images_are_posted(client):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        r = client.post("/api/predict", content=b'{"pixels": 1}', headers={"content-type": ctype})
        assert r.status_code == 415 and "error" in r.json()


def test_foreign_hosts_are_refused_and_headers_set(client):
    assert client.get("/api/runs", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/runs", headers={"host": "evil.example:8000"}).status_code == 400
    for path in ("/", "/api/runs", "/static/app.js"):
        r = client.get(path, headers={"host": "localhost:8000"})
        assert r.status_code == 200
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"


def test_a_nan_summary_and_a_nan_model(runs, tmp_path):
    import shutil

    import torch

    from mnistlab.runs import load_checkpoint, save_state

    bad = tmp_path / "b" / runs.name  # the same name as the good run
    shutil.copytree(runs, bad)
    summary = json.loads((bad / "summary.json").read_text())
    (bad / "summary.json").write_text(json.dumps({**summary, "test_acc": float("nan")}))
    client = TestClient(create_app([runs, bad]), base_url="http://localhost")
    listed = client.get("/api/runs")
    assert listed.status_code == 200
    names = [r["name"] for r in listed.json()["runs"]]
    assert names == [runs.name, f"{runs.name}-2"]  # two runs of one name: both served
    assert listed.json()["runs"][1]["summary"]["test_acc"] is None
    # a model whose weights are not finite is refused before it is served (every endpoint:
    # predict, explain, conv), as every command refuses it
    state = load_checkpoint(runs / "checkpoint.pt")
    state["state_dict"] = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["state_dict"].items()
    }
    save_state(bad / "checkpoint.pt", state)
    with pytest.raises(MnistlabError, match="not finite"):
        create_app([bad])
    save_state(bad / "checkpoint.pt", load_checkpoint(runs / "checkpoint.pt"))
    (bad / "summary.json").write_text("[1, 2]")
    with pytest.raises(MnistlabError, match="summary.json"):
        create_app([bad])


# ---------------------------------------------------------------- a real server, in its own process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(runs, tmp_path):
    """`mnistlab serve` in a process of its own, limited to 1024 open files."""
    import resource

    port = _free_port()
    log = open(tmp_path / "server.log", "wb")

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnistlab",
            "serve",
            "--run",
            str(runs),
            "--port",
            str(port),
            "--head-timeout",
            str(HEAD_TIMEOUT),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=limit,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api/runs", timeout=2).read()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail((tmp_path / "server.log").read_text())
    yield url, port, tmp_path / "server.log"
    proc.kill()
    proc.wait(10)
    log.close()


def _post_pixels(url: str, pixels) -> float:
    req = urllib.request.Request(
        url + "/api/predict", data=json.dumps({"pixels": pixels}).encode(), headers={"Content-Type": "application/json"}
    )
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        json.loads(r.read())
    return time.perf_counter() - t


@pytest.mark.slow("starts a server and loads it")
def test_1100_half_open_connections_do_not_stop_the_server(live):
    import resource

    url, port, log = live
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1300:
        pytest.skip("this process may not open 1,100 sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    pixels = np.zeros((28, 28), int)
    pixels[5:23, 12:16] = 255
    socks = []
    try:
        for _ in range(1100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")  # and never more
            socks.append(s)
        t0 = time.perf_counter()
        _post_pixels(url, pixels.tolist())  # answered while they hang: the oldest idle ones are dropped
        assert time.perf_counter() - t0 < 5
        time.sleep(HEAD_TIMEOUT + 2)
        closed = 0
        for s in socks:  # every half-sent request is closed by the head timeout
            s.settimeout(0.5)
            try:
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(socks)
        _post_pixels(url, pixels.tolist())
    finally:
        for s in socks:
            s.close()
    assert log.stat().st_size < 100_000, log.read_text()[:2000]  # no flood of tracebacks


@pytest.mark.slow("starts a server and loads it")
@pytest.mark.alone
def test_small_requests_stay_fast_while_large_images_are_posted(live):
    """8 clients post 2048x2048 RGBA photos without pause; the small requests' p95 < 100 ms."""
    url, _, _ = live
    big = np.full((2048, 2048, 4), 255, np.uint8)
    big[500:1600, 900:1150, :3] = 0
    body = _png(big, "RGBA")
    assert len(body) < 2 * 1024 * 1024
    pixels = np.zeros((28, 28), int)
    pixels[5:23, 12:16] = 255
    stop = threading.Event()
    heavy_done = []

    def heavy():
        while not stop.is_set():
            req = urllib.request.Request(url + "/api/predict", data=body, headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(req, timeout=120) as r:
                assert r.status == 200
            heavy_done.append(1)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(heavy) for _ in range(8)]
        time.sleep(1.0)  # the large images are in flight
        small = [_post_pixels(url, pixels.tolist()) for _ in range(60)]
        stop.set()
        for f in futures:
            f.result()
    p95 = statistics.quantiles(small, n=20)[-1]
    print(
        f"small requests: median {statistics.median(small) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms; "
        f"{len(heavy_done)} large images answered meanwhile"
    )
    assert heavy_done and p95 < 0.100, f"p95 {p95 * 1000:.0f} ms"


@pytest.mark.parametrize("value", ["0", "301", "nan"])
def test_a_head_timeout_out_of_range_is_one_line(runs, capsys, value):
    from mnistlab.cli import main

    assert main(["serve", "--run", str(runs), "--head-timeout", value]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mnistlab: error: --head-timeout") and "1..300" in err and len(err.splitlines()) == 1
