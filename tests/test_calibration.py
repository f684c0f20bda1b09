"""Calibrated confidence and soft strokes (issue 23): the temperature a run fits, stores and
uses; the grey rendering that keeps a blurred digit's loops open; the new photo conditions."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from mnistlab import calibrate
from mnistlab.cli import main
from mnistlab.config import build_config
from mnistlab.reading.images import holes, prepare, render
from mnistlab.reading.photos import NUMBER_SETS, SOFT_CONDITIONS, make_set
from mnistlab.reading.reader import probabilities
from mnistlab.runs import load_run
from mnistlab.train.run import train_run


def test_a_known_temperature_is_recovered_and_the_ece_falls():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 10, generator=g) * 3
    labels = torch.multinomial(torch.softmax(z / 2.5, 1), 1, generator=g).squeeze(1)  # truth is T = 2.5
    t = calibrate.fit_temperature(z, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    before = calibrate.ece(torch.softmax(z, 1), labels)
    after = calibrate.ece(torch.softmax(z / t, 1), labels)
    assert before > 0.1 and after < 0.03 and after < before / 4


def test_ece_of_a_perfect_and_a_sure_wrong_reader():
    labels = torch.tensor([0, 1, 2, 3])
    sure_right = torch.nn.functional.one_hot(labels, 10).double()
    sure_wrong = torch.nn.functional.one_hot((labels + 1) % 10, 10).double()
    assert calibrate.ece(sure_right, labels) == pytest.approx(0.0)
    assert calibrate.ece(sure_wrong, labels) == pytest.approx(1.0)


def test_a_run_fits_stores_and_uses_its_temperature(toy, tmp_path, capsys):
    cfg = build_config("cnn", sets=["epochs=2", "batch_size=32"])
    run = train_run(cfg, tmp_path / "r", dataset=toy, progress=False, figures=False)
    cal = json.loads((tmp_path / "r" / "calibration.json").read_text())
    assert 0.05 <= cal["temperature"] <= 20 and cal["n_fit"] + cal["n_report"] == len(toy.test)
    assert run.summary["temperature"] == cal["temperature"]
    assert {"ece_before", "ece_after"} <= run.summary.keys()
    again = load_run(tmp_path / "r")
    assert again.model.temperature == cal["temperature"]
    image = toy.test.images[:3].numpy()
    with torch.no_grad():
        logits = again.model.eval()(toy.test.images[:3, None].float() / 255)
    expected = torch.softmax(logits / cal["temperature"], 1).numpy()
    assert np.allclose(probabilities(again.model, image), expected, atol=1e-6)
    # and through the CLI: predict's confidence is the calibrated one
    import mnistlab.cli as cli

    cli_ds = toy
    capsys.readouterr()
    original = cli._dataset_for_run
    cli._dataset_for_run = lambda run, args: cli_ds
    try:
        assert main(["predict", "0", "--run", str(tmp_path / "r"), "--json"]) == 0
    finally:
        cli._dataset_for_run = original
    rec = json.loads(capsys.readouterr().out)
    assert rec["confidence"] == pytest.approx(float(expected[0].max()), abs=1e-5)


def test_a_tampered_temperature_is_refused(toy, tmp_path):
    from mnistlab.errors import RunError

    train_run(
        build_config("cnn", sets=["epochs=1", "batch_size=32"]),
        tmp_path / "r",
        dataset=toy,
        progress=False,
        figures=False,
    )
    (tmp_path / "r" / "calibration.json").write_text(json.dumps({"temperature": -3}))
    with pytest.raises(RunError, match="no fitted temperature"):
        load_run(tmp_path / "r")


def _blurred_ring() -> np.ndarray:
    """A photo of a narrow "0" (a ring whose hole is small against its stroke), out of focus."""
    page = np.full((240, 200), 240, np.float32)
    cv2.ellipse(page, (100, 120), (14, 50), 0, 0, 360, 30, 20, cv2.LINE_AA)
    return np.clip(cv2.GaussianBlur(page, (0, 0), 10), 0, 255)


def _blurred_eight() -> np.ndarray:
    page = np.full((300, 200), 240, np.float32)
    for cy in (95, 171):
        cv2.ellipse(page, (100, cy), (16, 36), 0, 0, 360, 30, 22, cv2.LINE_AA)
    return np.clip(cv2.GaussianBlur(page, (0, 0), 10), 0, 255)


@pytest.mark.parametrize("photo,centres", [(_blurred_ring, [0.5]), (_blurred_eight, [0.27, 0.73])])
def test_the_grey_rendering_keeps_a_blurred_digits_loops(photo, centres):
    """The threshold closes the loops of a soft digit (its 0/1 mask has no hole left), so the
    0/1 render of before showed a solid blob; the grey render keeps each loop as a fainter
    middle, as the photo has it."""
    prep = prepare(photo())
    mask = prep.chosen[prep.digit.y : prep.digit.y1, prep.digit.x : prep.digit.x1]
    assert holes(mask) == 0  # the mask did lose the loops: what is tested is the rendering
    old, new = render(mask), prep.image
    for img, fainter in ((old, False), (new, True)):
        rows, cols = np.nonzero(img > 0.1 * img.max())
        x = (cols.min() + cols.max()) // 2
        for fy in centres:
            y = int(rows.min() + fy * (rows.max() - rows.min()))
            middle = float(img[y - 1 : y + 2, x - 1 : x + 2].mean()) / float(img.max())
            assert (middle < 0.9) == fainter, (photo.__name__, "grey" if fainter else "0/1", round(middle, 2))


def test_thickening_never_closes_a_gap():
    """A thin-pen "3" whose gaps are narrower than the disc that would bring it to MNIST's
    stroke width: thickened only as far as no loop appears."""
    from mnistlab.reading.images import normalise_stroke

    m = np.zeros((100, 70), np.uint8)
    cv2.ellipse(m, (35, 27), (28, 24), 0, 200, 450, 1, 2)
    cv2.ellipse(m, (35, 73), (28, 24), 0, 270, 520, 1, 2)
    assert holes(m) == 0
    assert holes(normalise_stroke(m)) == 0
    assert normalise_stroke(m).sum() > m.sum()  # it was thickened, within that limit


@pytest.mark.parametrize("condition", [*SOFT_CONDITIONS, *NUMBER_SETS[1:]])
def test_the_new_photo_conditions(condition):
    items = make_set(condition, 3, seed=5)
    for img, label in items:
        assert img.ndim == 3 and img.dtype == np.uint8 and label.isdigit()
        assert (len(label) >= 3) == condition.startswith("numbers")
    if condition == "low-res":
        assert min(img.shape[:2] for img, _ in items)[0] >= 16 * 5  # enlarged at least 5x
    if condition == "small":
        assert min(img.shape[0] for img, _ in items) >= 900


def test_the_page_and_read_use_the_runs_temperature(toy, tmp_path, monkeypatch):
    """The temperature reaches every reader: the web API's confidence and `read`'s digits are
    the calibrated ones (the same run with T edited gives other confidences, the same digits)."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from mnistlab.reading.photos import make_set
    from mnistlab.reading.reader import read_number
    from mnistlab.web.app import create_app

    train_run(
        build_config("cnn", sets=["epochs=2", "batch_size=32"]),
        tmp_path / "r",
        dataset=toy,
        progress=False,
        figures=False,
    )
    pixels = toy.test.images[0].numpy()
    answers, readings = [], []
    for t in (1.0, 4.0):
        (tmp_path / "r" / "calibration.json").write_text(json.dumps({"temperature": t}))
        out = (
            TestClient(create_app([tmp_path / "r"]), base_url="http://localhost")
            .post("/api/predict", json={"pixels": pixels.tolist()})
            .json()
        )
        answers.append(out)
        img, _ = make_set("numbers", 1, seed=3, sources=("strokes",))[0]
        from PIL import Image

        from mnistlab.reading.images import to_grey

        readings.append(read_number(load_run(tmp_path / "r").model, to_grey(Image.fromarray(img))))
    with torch.no_grad():
        z = load_run(tmp_path / "r").model(toy.test.images[:1, None].float() / 255)[0]
    for out, t in zip(answers, (1.0, 4.0)):
        assert out["confidence"] == pytest.approx(float(torch.softmax(z / t, 0).max()), abs=1e-5)
    assert answers[0]["digit"] == answers[1]["digit"]
    assert [d.digit for d in readings[0].digits] == [d.digit for d in readings[1].digits]
    assert all(a.confidence > b.confidence for a, b in zip(readings[0].digits, readings[1].digits))
