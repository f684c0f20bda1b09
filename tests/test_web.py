"""The web page: API through Starlette's test client, a bounded load test on loopback,
and a real browser (headless Chromium driven by Playwright) drawing a digit."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

starlette = pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from mnistlab.config import build_config  # noqa: E402
from mnistlab.data.sources import load_dataset  # noqa: E402
from mnistlab.train.run import train_run  # noqa: E402
from mnistlab.web.app import create_app  # noqa: E402
from mnistlab.web.handlers import MAX_BODY  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def served(tmp_path_factory, cnn_run_dir):
    """A CNN (the session's, 2 epochs) and a 2-D-code autoencoder trained on the sample, served."""
    root = tmp_path_factory.mktemp("web")
    ae = train_run(
        build_config("ae-code2d", sets=["dataset=mnist-sample", "epochs=1", "limit_batches=30"]),
        root / "ae-run",
        progress=False,
    )
    return cnn_run_dir, ae.path


@pytest.fixture(scope="module")
def client(served):
    return TestClient(create_app(list(served)), base_url="http://localhost")


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("mnist-sample")
    return ds.test.images[:20].numpy(), ds.test.labels[:20].tolist()


def test_runs_lists_both_with_metrics_and_figures(client):
    runs = client.get("/api/runs").json()["runs"]
    assert [r["name"] for r in runs] == ["cnn-run", "ae-run"]
    assert runs[0]["task"] == "classify" and runs[0]["summary"]["test_acc"] > 0.9
    assert "confusion.png" in runs[0]["figures"] and runs[1]["code_shape"] == [2]


@pytest.mark.outcome
def test_predict_png_and_pixels(client, digits):
    images, labels = digits
    hits = 0
    for img, label in zip(images[:10], labels[:10]):
        r = client.post(
            "/api/predict?run=cnn-run",
            content=_png(255 - np.kron(img, np.ones((6, 6)))),
            headers={"content-type": "image/png"},
        )
        assert r.status_code == 200
        body = r.json()
        assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
        assert np.asarray(body["input"]).shape == (28, 28)
        hits += body["digit"] == label
    assert hits >= 9
    r = client.post(
        "/api/predict", content=json.dumps({"pixels": images[0].tolist()}), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200 and r.json()["digit"] == labels[0]


def test_activations_and_reconstruct_and_codes(client, digits):
    images, _ = digits
    body = json.dumps({"pixels": images[1].tolist()})
    hdr = {"content-type": "application/json"}
    layers = client.post("/api/activations", content=body, headers=hdr).json()["layers"]
    assert [lay["name"] for lay in layers][:3] == ["input", "conv1", "pool1"]
    assert all(lay["png"].startswith("data:image/png;base64,") for lay in layers)
    rec = client.post("/api/reconstruct?run=ae-run", content=body, headers=hdr).json()
    assert np.asarray(rec["output"]).shape == (28, 28) and rec["code_shape"] == [2] and len(rec["code"]) == 2
    codes = client.get("/api/codes?run=ae-run").json()
    assert len(codes["points"]) == len(codes["labels"]) == 2000 and len(codes["points"][0]) == 2


@pytest.mark.parametrize(
    "path, body, ctype, status, message",
    [
        ("/api/predict", b"", "image/png", 400, "empty request body"),
        ("/api/predict", b"not an image at all", "image/png", 400, "not a readable image"),
        ("/api/predict", b"{bad json", "application/json", 400, "not valid JSON"),
        ("/api/predict", json.dumps({"pixels": [[0] * 28] * 27}).encode(), "application/json", 400, "must be 28x28"),
        ("/api/predict", json.dumps({"pixels": [[300] * 28] * 28}).encode(), "application/json", 400, "0..255"),
        ("/api/predict", json.dumps({"pixels": [[0] * 28] * 28}).encode(), "application/json", 400, "empty"),
        ("/api/predict", json.dumps({"image": 1}).encode(), "application/json", 400, 'needs a "pixels" field'),
        (
            "/api/predict?run=nope",
            json.dumps({"pixels": [[9] * 28] * 28}).encode(),
            "application/json",
            404,
            "unknown run",
        ),
        (
            "/api/predict?run=ae-run",
            json.dumps({"pixels": [[9] * 28] * 28}).encode(),
            "application/json",
            400,
            "not classify",
        ),
        ("/api/predict", b"x" * (MAX_BODY + 1), "image/png", 413, "too large"),
    ],
)
def test_bad_requests_get_4xx_json(client, path, body, ctype, status, message):
    r = client.post(path, content=body, headers={"content-type": ctype})
    assert r.status_code == status and message in r.json()["error"]


def test_blank_and_huge_images(client):
    r = client.post("/api/predict", content=_png(np.full((60, 60), 255)), headers={"content-type": "image/png"})
    assert r.status_code == 400 and "no ink" in r.json()["error"]
    big = io.BytesIO()
    Image.new("L", (3000, 10)).save(big, format="PNG")
    r = client.post("/api/predict", content=big.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "max 2048x2048" in r.json()["error"]


def test_figures_only_from_inside_run_folders(client, served):
    assert client.get("/api/figure?run=cnn-run&name=curves.png").content[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("../config.json", "../../cnn-run/figures/curves.png", "/etc/passwd", "curves.txt", "nope.png"):
        r = client.get("/api/figure", params={"run": "cnn-run", "name": name})
        assert r.status_code == 404, name
    assert client.get("/api/figure?run=other&name=curves.png").status_code == 404


def test_page_and_static_files_are_local(client):
    html = client.get("/").text
    assert "/static/app.js" in html and "http" not in html.replace("http-equiv", "")  # no CDN
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../server.py").status_code == 404


# ---------------------------------------------------------------- a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(run_dirs):
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(create_app(list(run_dirs)), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join(10)


@pytest.fixture(scope="module")
def server(served):
    with _serving(served) as url:
        yield url


def test_load_200_requests_from_20_clients(server, digits):
    images, labels = digits
    payloads = [(json.dumps({"pixels": images[i % 20].tolist()}).encode(), labels[i % 20]) for i in range(200)]
    expected = {}
    for body, _ in payloads[:20]:
        req = urllib.request.Request(server + "/api/predict", data=body, headers={"Content-Type": "application/json"})
        expected[body] = json.loads(urllib.request.urlopen(req, timeout=30).read())["digit"]

    def one(item):
        body, _ = item
        req = urllib.request.Request(server + "/api/predict", data=body, headers={"Content-Type": "application/json"})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as resp:
            out = json.loads(resp.read())
        return time.perf_counter() - t, out["digit"] == expected[body]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, payloads))
    assert len(results) == 200 and all(ok for _, ok in results)
    lat = sorted(t * 1000 for t, _ in results)
    p50, p95 = statistics.median(lat), lat[int(0.95 * len(lat)) - 1]
    print(f"\nload: 200 predict requests, 20 clients: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    out = os.environ.get("MNISTLAB_LOAD_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump({"requests": 200, "clients": 20, "p50_ms": p50, "p95_ms": p95}, f)


def _strokes(img: np.ndarray, scale: int = 10) -> list[list[tuple[float, float]]]:
    """A real digit replayed as pen strokes: one horizontal stroke per run of ink in each row."""
    out = []
    for r in range(28):
        c = 0
        while c < 28:
            if img[r, c] > 100:
                start = c
                while c < 28 and img[r, c] > 100:
                    c += 1
                y = (r + 0.5) * scale
                out.append([((start + 0.5) * scale, y), ((c - 0.5) * scale, y)])
            c += 1
    return out


@pytest.mark.slow("drives a real browser")
@pytest.mark.outcome
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_browser_draws_a_digit_and_sees_the_prediction(server, digits, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    images, labels = digits
    index = next(i for i in range(20) if labels[i] in (0, 2, 3, 6, 8))  # a digit with a clear shape
    shot = os.environ.get("MNISTLAB_SCREENSHOT") or str(tmp_path / "page.png")
    with sync_playwright() as p:
        browser = _browser(p)
        # The page runs under its own Content-Security-Policy: waits are locator assertions,
        # never eval'd strings (which the policy forbids).
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(server + "/")
        page.wait_for_selector("#clf-run option[value='cnn-run']", state="attached")
        box = page.locator("#pad").bounding_box()
        page.locator("#pen").fill("18")
        for stroke in _strokes(images[index]):
            (x0, y0), (x1, y1) = stroke
            page.mouse.move(box["x"] + x0, box["y"] + y0)
            page.mouse.down()
            page.mouse.move(box["x"] + x1, box["y"] + y1, steps=3)
            page.mouse.up()
        expect(page.locator("#status")).to_have_text("ready", timeout=30000)
        expect(page.locator("#recon")).to_have_attribute("src", re.compile(r"^data:image/png"), timeout=30000)
        assert page.locator("#digit").text_content() == str(labels[index])
        assert page.locator("#layers img").count() >= 5
        page.screenshot(path=shot, full_page=True)
        # An uploaded photo of a number: its stages and the digits found, boxed.
        from mnistlab.reading.photos import make_set, write_set

        photos = write_set(tmp_path / "photos", make_set("numbers", 1, seed=11, sources=("strokes",)))
        page.set_input_files("#upload", str(photos / "0000.png"))
        expect(page.locator("#number")).to_have_attribute("data-number", re.compile(r".*"), timeout=30000)
        assert page.locator("#upload-card").is_visible()
        assert page.locator("#steps img").count() == 5
        assert page.locator("#boxes").get_attribute("src").startswith("data:image/png")
        assert 3 <= len(page.locator("#number").get_attribute("data-number")) <= 5
        page.screenshot(path=shot.replace(".png", "-upload.png"), full_page=True)
        cards = os.environ.get("MNISTLAB_SCREENSHOTS")  # docs/figures/page: the docs show these

        def pictures(*ids):
            for card in ids if cards else ():
                page.locator(f"#{card}").screenshot(path=os.path.join(cards, f"{card}.png"))

        # The page explains itself: a line on every card, a key on the maps, the steps after a sum.
        assert page.locator("section.card:visible .explain").count() == page.locator("section.card:visible").count()
        assert page.locator("#softmax").text_content().startswith(("Softmax", "Unsure"))
        page.locator("#conv-maps canvas").first.click()
        box = page.locator("#conv-map").bounding_box()
        page.locator("#conv-map").click(position={"x": box["width"] / 2, "y": box["height"] / 2})
        expect(page.locator("#conv-after")).to_contain_text("ReLU: max(0,", timeout=30000)
        expect(page.locator("#curve-says")).to_contain_text("Half the probability", timeout=30000)
        pictures("draw-card", "prediction-card", "ae-card", "why-card", "conv-card", "upload-card", "layers-card")
        # Watch it learn: a cnn-fast epoch on the sample, live, then served as a run.
        page.select_option("#t-model", "cnn-fast")
        page.select_option("#t-epochs", "1")
        page.locator("#t-go").click()
        expect(page.locator("#t-status")).to_contain_text("batch", timeout=30000)
        expect(page.locator("#t-status")).to_contain_text("finished", timeout=120000)
        assert page.locator("#t-filters img").count() == 16  # cnn-fast: 16 filters in its first layer
        assert page.locator("#t-grid figure.right").count() + page.locator("#t-grid figure.wrong").count() == 16
        assert page.locator("#clf-run option").count() == 2  # the new run joined the picker
        pictures("train-card", "runs-card")
        browser.close()
    assert open(shot, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_and_predict_steps_for_an_uploaded_photo(client, tmp_path):
    from mnistlab.reading.photos import make_set

    ((img, label),) = make_set("numbers", 1, seed=4, sources=("strokes",))
    body = io.BytesIO()
    Image.fromarray(img).save(body, format="PNG")
    r = client.post("/api/read?run=cnn-run", content=body.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["number"] == "".join(str(d["digit"]) for d in out["digits"]) and out["digits"]
    assert all(len(d["box"]) == 4 and 0 <= d["confidence"] <= 1 for d in out["digits"])
    assert out["boxes_png"].startswith("data:image/png;base64,") and isinstance(out["low_confidence"], bool)
    ((one, _),) = make_set("mixed", 1, seed=4, sources=("strokes",))
    body = io.BytesIO()
    Image.fromarray(one).save(body, format="PNG")
    r = client.post("/api/predict?run=cnn-run&steps=1", content=body.getvalue(), headers={"content-type": "image/png"})
    p = r.json()
    assert r.status_code == 200 and [s["name"] for s in p["steps"]][-1] == "28x28" and len(p["steps"]) == 5
    assert len(p["box"]) == 4 and p["low_confidence"] == (p["confidence"] < 0.9)
    r = client.post(
        "/api/read",
        content=json.dumps({"pixels": [[0] * 28] * 27 + [[255] * 28]}),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "needs an image file" in r.json()["error"]


# ---------------------------------------------------------------- issue 24: why, and inside a convolution


def _json(arr):
    return {
        "content": json.dumps({"pixels": np.asarray(arr).tolist()}),
        "headers": {"content-type": "application/json"},
    }


def test_explain_api_maps_contrast_deletion_and_scrambled_weights(client, digits):
    pytest.importorskip("captum")
    images, labels = digits
    body = _json(images[1])
    out = {}
    from mnistlab.attribution.maps import METHODS

    for method in METHODS:
        r = client.post(f"/api/explain?run=cnn-run&method={method}", **body)
        assert r.status_code == 200, r.text
        out[method] = e = r.json()
        assert e["target"] == e["digit"] == int(np.argmax(e["probabilities"])) and e["scrambled"] is False
        assert np.asarray(e["attribution"]).shape == (28, 28)
        d = e["deletion"]
        assert len(d["fractions"]) == len(d["probability"]) == len(d["random"]) == 21
        assert sorted(d["order"]) == sorted(np.flatnonzero(images[1].reshape(-1) > 25.5).tolist())  # the ink
        assert d["probability"][0] == pytest.approx(max(e["probabilities"]), abs=1e-4)
    # the order is the map's, hottest first
    a = np.asarray(out["ig"]["attribution"]).reshape(-1)[out["ig"]["deletion"]["order"]]
    assert (np.diff(a) <= 1e-9).all()
    # why 3 and why not 3
    why = np.asarray(client.post("/api/explain?run=cnn-run&method=saliency", **body).json()["attribution"])
    other = np.asarray(client.post("/api/explain?run=cnn-run&method=saliency&target=3", **body).json()["attribution"])
    contrast = client.post("/api/explain?run=cnn-run&method=saliency&contrast=3", **body).json()
    assert contrast["contrast"] == 3 and np.abs(np.asarray(contrast["attribution"]) - (why - other)).max() < 1e-4
    scrambled = client.post("/api/explain?run=cnn-run&method=saliency&scrambled=1", **body).json()
    assert scrambled["scrambled"] is True and -1 <= scrambled["spearman"] <= 1
    assert np.abs(np.asarray(scrambled["attribution"]) - why).max() > 1e-3
    for query, message in (
        ("method=deeplift", "method: one of"),
        ("target=10", "target: 0..9"),
        ("contrast=x", "an integer"),
    ):
        r = client.post(f"/api/explain?run=cnn-run&{query}", **body)
        assert r.status_code == 400 and message in r.json()["error"]


def test_a_convolution_opened_at_a_pixel_adds_up_to_its_map(client, digits):
    images, _ = digits
    body = _json(images[2])
    maps = client.post("/api/conv?run=cnn-run&layer=1", **body).json()
    assert maps["layers"] == ["conv1", "conv2"] and maps["shape"] == [64, 11, 11]
    m = np.asarray(maps["maps"])
    for layer, ch, y, x in ((0, 5, 12, 9), (1, 17, 4, 6)):
        r = client.post(f"/api/conv?run=cnn-run&layer={layer}&channel={ch}&y={y}&x={x}", **body).json()
        assert len(r["inputs"]) == (1 if layer == 0 else 32) and r["first"] == (layer == 0)
        products = sum(np.asarray(i["kernel"]) * np.asarray(i["patch"]) for i in r["inputs"])
        assert products.sum() + r["bias"] == pytest.approx(r["total"], abs=1e-3)
        assert r["total"] == pytest.approx(r["value"], abs=1e-4)
        if layer == 1:
            assert r["value"] == pytest.approx(m[ch, y, x], abs=1e-4)
    # conv1's input is the standardised pixels: its patch is the digit, shifted and scaled
    r = client.post("/api/conv?run=cnn-run&layer=0&channel=0&y=12&x=9", **body).json()
    patch = np.asarray(r["inputs"][0]["patch"])
    assert patch == pytest.approx((images[2][12:15, 9:12] / 255 - 0.1307) / 0.3081, abs=1e-4)
    for query in ("layer=2", "layer=0&channel=32&y=0&x=0", "layer=0&channel=0&y=26&x=0"):
        r = client.post(f"/api/conv?run=cnn-run&{query}", **body)
        assert r.status_code == 400 and "error" in r.json()


def test_predict_picks_one_digit_of_a_written_number(client):
    from mnistlab.reading.photos import make_set

    ((img, label),) = make_set("numbers", 1, seed=11, sources=("strokes",))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    png = {"content": buf.getvalue(), "headers": {"content-type": "image/png"}}
    read = client.post("/api/read?run=cnn-run", **png).json()
    assert len(read["digits"]) >= 2
    for i, d in enumerate(read["digits"]):
        p = client.post(f"/api/predict?run=cnn-run&pick={i}", **png).json()
        assert p["pick"] == i and p["number"] == read["number"] and p["digit"] == d["digit"]
        assert p["box"] == d["box"] and len(p["digits"]) == len(read["digits"])
    r = client.post(f"/api/predict?run=cnn-run&pick={len(read['digits'])}", **png)
    assert r.status_code == 400 and "pick" in r.json()["error"]


def test_a_photo_is_looked_at_once_per_prediction(client, monkeypatch):
    """/api/predict reads the photo as one digit and as a number from one search for its ink
    (the slow part: flattening the paper, thresholding, erasing lines), not two."""
    from mnistlab.reading import images as images_module
    from mnistlab.reading import reader as reading
    from mnistlab.reading.photos import make_set

    calls = []
    real = images_module.find_ink

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(images_module, "find_ink", counted)
    monkeypatch.setattr(reading, "find_ink", counted)
    ((img, label),) = make_set("numbers", 1, seed=11, sources=("strokes",))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    p = client.post("/api/predict?run=cnn-run", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert p.status_code == 200 and len(p.json()["digits"]) >= 2
    assert len(calls) == 1


def _draw(page, img):
    box = page.locator("#pad").bounding_box()
    page.locator("#pen").fill("18")
    for (x0, y0), (x1, y1) in _strokes(img):
        page.mouse.move(box["x"] + x0, box["y"] + y0)
        page.mouse.down()
        page.mouse.move(box["x"] + x1, box["y"] + y1, steps=3)
        page.mouse.up()


def _browser(p):
    return p.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


@pytest.mark.slow("drives a real browser")
@pytest.mark.outcome
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_browser_explains_erases_scrambles_and_opens_a_convolution(server, served, digits, tmp_path):
    """Under the page's CSP: the map for the predicted class and for a clicked one, why-not,
    the deletion played on the digit, scrambled weights, a convolution opened at a pixel; a
    written number's digits picked, every card on the same digit; no autoencoder, no broken
    picture."""
    pytest.importorskip("captum")
    from playwright.sync_api import expect, sync_playwright

    images, labels = digits
    index = next(i for i in range(20) if labels[i] in (0, 2, 3, 6, 8))
    shot = os.environ.get("MNISTLAB_SCREENSHOT") or str(tmp_path / "page.png")
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        refused = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(server + "/")
        page.wait_for_selector("#clf-run option[value='cnn-run']", state="attached")
        _draw(page, images[index])
        expect(page.locator("#status")).to_have_text("ready", timeout=30000)
        digit = page.locator("#digit").text_content()
        heat = page.locator("#heat")
        expect(heat).to_have_attribute("data-target", digit, timeout=30000)
        expect(heat).to_have_attribute("data-method", "ig")
        other = "1" if digit != "1" else "7"
        page.locator(f"#bars span[data-class='{other}']").first.click()
        expect(heat).to_have_attribute("data-target", other, timeout=30000)
        page.select_option("#contrast", digit)
        expect(page.locator("#why")).to_contain_text(f"why {other}, not {digit}", timeout=30000)
        page.select_option("#contrast", "")
        page.select_option("#method", "occlusion")
        expect(heat).to_have_attribute("data-method", "occlusion", timeout=30000)
        page.locator("#erase").click()
        expect(heat).to_have_attribute("data-erased", "done", timeout=30000)
        expect(page.locator("#why-note")).to_contain_text("ink pixels erased, hottest first")
        page.select_option("#method", "hirescam")
        expect(heat).to_have_attribute("data-method", "hirescam", timeout=30000)
        expect(page.locator("#why-note")).to_contain_text("HiResCAM keeps each cell's own gradient")
        page.locator("#scramble").check()
        expect(heat).to_have_attribute("data-scrambled", "true", timeout=30000)
        expect(page.locator("#why-note")).to_contain_text("rank correlation")
        # open a convolution: conv1's 32 maps; one of them; a pixel of it
        expect(page.locator("#conv-maps canvas")).to_have_count(32, timeout=30000)
        page.locator("#conv-maps canvas[data-channel='4']").click()
        mbox = page.locator("#conv-map").bounding_box()
        page.locator("#conv-map").click(position={"x": mbox["width"] * 0.5, "y": mbox["height"] * 0.45})  # scrolled to
        total = page.locator("#conv-total")
        expect(total).to_contain_text("+ bias", timeout=30000)
        assert abs(float(total.get_attribute("data-total")) - float(total.get_attribute("data-value"))) < 1e-4
        assert page.locator("#conv-sum table").count() == 3  # one input channel: kernel, patch, products
        page.select_option("#conv-layer", "1")
        expect(page.locator("#conv-maps canvas")).to_have_count(64, timeout=30000)
        page.screenshot(path=shot.replace(".png", "-why.png"), full_page=True)
        # a written number: the Prediction card reads the digit picked, as "Your image" does
        from mnistlab.reading.photos import make_set, write_set

        photos = write_set(tmp_path / "photos", make_set("numbers", 1, seed=11, sources=("strokes",)))
        page.set_input_files("#upload", str(photos / "0000.png"))
        expect(page.locator("#number")).to_have_attribute("data-number", re.compile(r"^\d{2,}$"), timeout=30000)
        number = page.locator("#number").get_attribute("data-number")
        picks = page.locator("#picks button")
        expect(picks).to_have_count(len(number))
        assert page.locator("#digit").text_content() == number[0]
        picks.nth(1).click()
        expect(page.locator("#picks button.on")).to_have_text(number[1], timeout=30000)
        expect(page.locator("#digit")).to_have_text(number[1], timeout=30000)
        expect(heat).to_have_attribute("data-target", number[1], timeout=30000)
        browser.close()
        assert not refused, refused
        # only a classifier served: the autoencoder card says so, with no broken picture
        with _serving(served[:1]) as url:
            browser = _browser(p)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(url + "/")
            page.wait_for_selector("#clf-run option[value='cnn-run']", state="attached")
            _draw(page, images[index])
            expect(page.locator("#status")).to_have_text("ready", timeout=30000)
            expect(page.locator("#ae-note")).to_contain_text("no autoencoder run is served")
            assert not page.locator("#recon").is_visible()
            browser.close()


def test_explanations_and_predictions_at_once_do_not_disturb_each_other(server, digits):
    """Explain and conv hook into a model's layers; they do so on a copy, one at a time, so
    predictions answered meanwhile are the same as alone, and every answer is a 200."""
    pytest.importorskip("captum")
    images, _ = digits

    def post(path, i):
        body = json.dumps({"pixels": images[i % 20].tolist()}).encode()
        req = urllib.request.Request(server + path, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    alone = [post("/api/predict", i)["probabilities"] for i in range(20)]
    jobs = [("/api/explain?method=gradcam", i) for i in range(8)] + [
        ("/api/conv?layer=1&channel=3&y=2&x=2", i) for i in range(8)
    ]
    jobs += [("/api/predict", i) for i in range(40)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda job: (job, post(*job)), jobs))
    for (path, i), out in answers:
        if path == "/api/predict":
            assert out["probabilities"] == alone[i % 20]
        elif path.startswith("/api/explain"):
            assert np.isfinite(np.asarray(out["attribution"])).all()
        else:
            assert out["total"] == pytest.approx(out["value"], abs=1e-4)


# ---------------------------------------------------------------- issue 33: watch it learn


def _events(client, until=("done", "stopped", "error")):
    """The Train panel's server-sent events, parsed, to the job's end (optionally acting on each)."""
    out = []
    with client.stream("GET", "/api/train/events") as s:
        kind = None
        for line in s.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: ") and kind != "end":
                out.append(json.loads(line[len("data: ") :]))
                yield out[-1]
            if kind == "end":
                return


def test_the_train_panel_streams_a_live_view_and_serves_the_finished_run(cnn_run_dir, tmp_path):
    app = create_app([cnn_run_dir], runs_root=tmp_path / "runs")
    client = TestClient(app, base_url="http://localhost")
    start = client.post("/api/train", json={"model": "cnn-fast", "epochs": 1, "width": 8})
    assert start.status_code == 200, start.text
    busy = client.post("/api/train", json={"model": "cnn"})
    assert busy.status_code == 409 and "training" in busy.json()["error"]
    events = list(_events(client))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "step" in kinds and "view" in kinds and "epoch" in kinds
    first = events[0]
    assert len(first["digits"]) == 16 and sorted(set(first["labels"])) == [str(d) for d in range(10)]
    steps = [e for e in events if e["type"] == "step"]
    assert all(0 < e["at"] <= 1 for e in steps) and steps[-1]["at"] == 1 and "acc" in steps[-1]
    view = [e for e in events if e["type"] == "view"][-1]
    assert len(view["filters"]) == 8 and view["filters"][0].startswith("data:image/png")  # width 8: 8 filters
    assert len(view["predictions"]) == 16 and len(view["correct"]) == 16
    done = events[-1]
    assert done["summary"]["test_acc"] > 0.5  # one epoch of cnn-fast on the sample reads most digits
    listed = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert done["run"] in listed and listed[done["run"]]["model"] == "cnn-fast"  # served at once
    run_dir = tmp_path / "runs" / done["run"]
    assert (run_dir / "checkpoint.pt").is_file() and json.loads((run_dir / "summary.json").read_text())["epochs"] == 1
    pixels = np.zeros((28, 28), int)
    pixels[5:23, 12:16] = 255
    assert client.post(f"/api/predict?run={done['run']}", json={"pixels": pixels.tolist()}).status_code == 200


def test_stop_ends_the_training_as_a_finished_run(cnn_run_dir, tmp_path):
    client = TestClient(create_app([cnn_run_dir], runs_root=tmp_path / "runs"), base_url="http://localhost")
    assert client.post("/api/train", json={"model": "mlp", "epochs": 5, "batch_size": 32}).status_code == 200
    events = []
    for e in _events(client):
        events.append(e)
        if e["type"] == "step" and len([x for x in events if x["type"] == "step"]) == 2:
            assert client.post("/api/train/stop", json={}).status_code == 200
    assert events[-1]["type"] == "stopped" and events[-1]["why"] == "stopped"
    assert max(e["at"] for e in events if e["type"] == "step") < 5  # it did not run its five epochs
    rows = [json.loads(r) for r in (tmp_path / "runs" / events[-1]["run"] / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["stopped"] is True
    assert client.post("/api/train/stop", json={}).status_code == 409  # nothing is training now


@pytest.mark.parametrize(
    "body, status, said",
    [
        ({"model": "resnet"}, 400, "model: one of"),
        ({"model": "cnn", "epochs": 50}, 400, "epochs: 1..5"),
        ({"model": "cnn", "lr": "fast"}, 400, "lr: a number"),
        ({"model": "cnn", "width": 1000}, 400, "width: one of"),
        ({"model": "cnn", "augment": "twist"}, 400, "augment: one of"),
    ],
)
def test_the_train_panel_refuses_settings_outside_its_bounds(body, status, said, client):
    r = client.post("/api/train", json=body)
    assert r.status_code == status and said in r.json()["error"]


def test_a_training_cannot_be_started_by_another_sites_form(client):
    """A cross-site form can POST text/plain without asking; only JSON starts a training."""
    r = client.post("/api/train", content=b"model=cnn", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_the_page_shows_a_models_summary(client):
    s = client.get("/api/summary?run=cnn-run").json()
    assert s["params"] == 34_826 and [layer["name"] for layer in s["layers"]][0] == "conv1"


@pytest.mark.parametrize("name", ["cnn", "cnn-fast", "cnn-robust"])
def test_a_convolution_opened_goes_on_through_norm_relu_and_max_pool(name, digits):
    """The steps CNN Explainer leaves out, on the user's digit: each holds its formula."""
    from mnistlab.infer import open_convolution
    from mnistlab.models import create_model

    images, _ = digits
    torch.manual_seed(0)
    model = create_model(name).eval()
    for layer in (0, 1):
        out = open_convolution(model, images[0], layer, channel=3, y=6, x=5)
        after = out["after"]
        before_relu = after.get("normed", out["value"])
        assert after["relu"] == pytest.approx(max(0.0, before_relu), abs=1e-6)
        window = [v for row in after["pool"]["window"] for v in row]
        assert min(abs(after["relu"] - v) for v in window) < 1e-6  # the value is in its pooling window
        assert after["pool"]["value"] == pytest.approx(max(window))
        assert after["pool"]["at"] == [3, 2]
    assert ("normed" in after) == (name != "cnn")  # the classic cnn has no BatchNorm
