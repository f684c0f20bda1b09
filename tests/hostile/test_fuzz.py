"""Property-based fuzzing (Hypothesis) of what reads outside input: the IDX, CSV and NPZ
readers, the config parser, the image loader and the JSON API. Any input gives a result
or the project's own error, never another exception."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mnistlab.config import build_config  # noqa: E402
from mnistlab.data.formats import IMAGE_MAGIC, LABEL_MAGIC, load_files, parse_idx, read_idx  # noqa: E402
from mnistlab.errors import MnistlabError  # noqa: E402
from mnistlab.reading.images import load_grey, preprocess  # noqa: E402

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _idx_like():
    """Bytes that start like IDX often enough to reach the deeper checks."""
    header = st.tuples(
        st.sampled_from([IMAGE_MAGIC, LABEL_MAGIC, 2052, 0x0801, 0]),
        st.lists(st.sampled_from([0, 1, 2, 28, 29, 2**31, 2**32 - 1]), max_size=4),
    )
    return st.one_of(
        st.binary(max_size=64),
        st.builds(lambda h, tail: struct.pack(f">I{len(h[1])}I", h[0], *h[1]) + tail, header, st.binary(max_size=3000)),
    )


@FAST
@given(_idx_like(), st.sampled_from([IMAGE_MAGIC, LABEL_MAGIC]), st.booleans())
def test_idx_reader(tmp_path_factory, raw, magic, gz):
    for read in (lambda: parse_idx(raw, "x", magic), lambda: read_idx(_write(tmp_path_factory, raw, gz), magic)):
        try:
            arr = read()
        except MnistlabError:
            continue
        assert arr.dtype == np.uint8 and (arr.ndim == 1 or arr.shape[1:] == (28, 28))


def _write(factory, raw: bytes, gz: bool):
    import gzip

    path = factory.mktemp("f") / ("x.gz" if gz else "x.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


cells = st.one_of(
    st.integers(-300, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "x", "1e400", "3.7", " 4 ", "0x1"]),
)


@FAST
@given(st.lists(st.lists(cells, min_size=1, max_size=3), max_size=3), st.integers(0, 2))
def test_csv_reader(tmp_path_factory, rows, full):
    lines = []
    for r in rows:
        cells_ = r + ["0"] * (785 - len(r)) if full else r
        lines.append(",".join(cells_))
    path = tmp_path_factory.mktemp("c") / "t.csv"
    path.write_text("\n".join(lines))
    try:
        train, test = load_files(str(path))
    except MnistlabError:
        return
    assert train.images.dtype.is_floating_point is False and ((train.labels >= 0) & (train.labels <= 9)).all()


arrays = st.one_of(
    st.builds(
        lambda n, v: np.full((n, 28, 28), v),
        st.integers(0, 3),
        st.one_of(st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True)),
    ),
    st.builds(lambda s: np.zeros(s, np.uint8), st.lists(st.integers(0, 30), max_size=4)),
    st.sampled_from([np.array(["a", "b"]), np.zeros(3, dtype=[("a", "u1")]), np.ones((1, 28, 28), complex)]),
)


@FAST
@given(arrays, st.one_of(arrays, st.none()), st.booleans())
def test_npz_reader(tmp_path_factory, x, y, corrupt):
    path = tmp_path_factory.mktemp("n") / "a.npz"
    np.savez(path, x_train=x, **({} if y is None else {"y_train": y}))
    if corrupt:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    try:
        train, _ = load_files(str(path))
    except MnistlabError:
        return
    assert train.images.shape[1:] == (28, 28)


keys = st.sampled_from(
    [
        "epochs",
        "lr",
        "seed",
        "batch_size",
        "momentum",
        "dropout",
        "train.epochs",
        "model.x",
        "optimizer",
        "schedule",
        "augment",
        "track",
        "channels",
        "weight_decay",
        "val_fraction",
    ]
)
values = st.one_of(
    st.text(max_size=12),
    st.integers().map(str),
    st.floats().map(repr),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "9" * 500, "true", "adam", "1,2", ""]),
)


@FAST
@given(st.lists(st.tuples(keys, values), max_size=4))
def test_config_parser(pairs):
    try:
        cfg = build_config("cnn", sets=[f"{k}={v}" for k, v in pairs])
    except MnistlabError:
        return
    assert 1 <= cfg.train.epochs <= 100_000 and np.isfinite(cfg.train.lr) and cfg.train.lr > 0


def _image_bytes(draw_format, w, h, mode):
    from PIL import Image

    buf = io.BytesIO()
    img = Image.new(mode, (w, h))
    try:
        img.save(buf, format=draw_format)
    except (OSError, KeyError):  # a mode the format cannot hold: its grey version
        buf = io.BytesIO()
        img.convert("L").save(buf, format=draw_format)
    return buf.getvalue()


@FAST
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            _image_bytes,
            st.sampled_from(["PNG", "BMP", "TIFF", "GIF"]),
            st.integers(1, 80),
            st.integers(1, 80),
            st.sampled_from(["L", "RGB", "RGBA", "1", "P", "I", "LA"]),
        ),
        st.builds(
            lambda b, k: b[:k],
            st.builds(_image_bytes, st.just("PNG"), st.just(40), st.just(40), st.just("RGB")),
            st.integers(0, 80),
        ),
    )
)
def test_image_loader(data):
    try:
        out = preprocess(load_grey(data))
    except MnistlabError:
        return
    assert out.shape == (28, 28) and out.dtype == np.uint8


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=900,
)


@FAST
@given(
    st.one_of(
        json_values.map(lambda v: json.dumps({"pixels": v})),
        json_values.map(json.dumps),
        st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    )
)
def test_json_api_parser(text):
    from mnistlab.web.handlers import parse_upload
    from mnistlab.web.served import BadRequest

    try:
        pixels, grey = parse_upload(text.encode("utf-8", "surrogatepass"), "application/json")
    except BadRequest as e:
        assert 400 <= e.status < 500
        return
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
