"""MNIST-style preprocessing of users' own images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnistlab.data.sources import load_dataset
from mnistlab.errors import ImageError
from mnistlab.reading.images import load_image, preprocess


def _centre_of_mass(a):
    r, c = np.indices(a.shape)
    return (r * a).sum() / a.sum(), (c * a).sum() / a.sum()


def photo_of(digit: np.ndarray, scale=9, pad=(40, 90), dark_on_light=True) -> np.ndarray:
    """An MNIST digit as a user might photograph it: large, off-centre, ink dark on paper."""
    big = np.kron(digit.astype(np.float64), np.ones((scale, scale)))
    canvas = np.zeros((big.shape[0] + 2 * pad[0], big.shape[1] + 2 * pad[1]))
    canvas[pad[0] // 2 : pad[0] // 2 + big.shape[0], pad[1] : pad[1] + big.shape[1]] = big
    return 255 - canvas if dark_on_light else canvas


def test_light_paper_is_inverted_cropped_fitted_and_centred():
    digit = load_dataset("mnist-sample").test.images[0].numpy()
    out = preprocess(photo_of(digit))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out[0].max() == 0 and out[:, 0].max() == 0  # dark ground, light ink
    rows, cols = np.nonzero(out > 25)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 <= 21  # fitted into the 20x20 box
    cy, cx = _centre_of_mass(out.astype(float))
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1
    # it still looks like the same digit
    corr = np.corrcoef(out.ravel().astype(float), digit.ravel().astype(float))[0, 1]
    assert corr > 0.75


def test_png_file_and_transparent_drawing(tmp_path):
    digit = load_dataset("mnist-sample").test.images[1].numpy()
    Image.fromarray(photo_of(digit).astype(np.uint8)).save(tmp_path / "d.png")
    a = load_image(tmp_path / "d.png")
    # black strokes on a transparent canvas, as a browser exports a drawing
    rgba = np.zeros((*photo_of(digit).shape, 4), np.uint8)
    rgba[..., 3] = 255 - photo_of(digit).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    b = load_image(tmp_path / "t.png")
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3
    Image.fromarray(photo_of(digit).astype(np.uint8)).convert("RGB").save(tmp_path / "d.jpg", quality=90)
    c = load_image(tmp_path / "d.jpg")
    assert np.corrcoef(a.ravel(), c.ravel())[0, 1] > 0.95


def test_bad_images_give_clear_errors(tmp_path):
    (tmp_path / "x.png").write_bytes(b"this is not a png")
    with pytest.raises(ImageError, match=r"x.png: not a readable image"):
        load_image(tmp_path / "x.png")
    Image.new("L", (50, 50), 255).save(tmp_path / "blank.png")
    with pytest.raises(ImageError, match=r"blank.png: no ink found"):
        load_image(tmp_path / "blank.png")
    with pytest.raises(ImageError, match=r"missing.png: no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.png: not a readable image"):
        load_image(tmp_path / "empty.png")
