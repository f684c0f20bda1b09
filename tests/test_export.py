"""mnistlab export (issue 25): every registered model round-trips through ONNX and
onnxruntime to 1e-4 with any batch size; the CLI writes, checks and records an export, and
refuses one that does not match."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the export extra (mnistlab[export]) is not installed")

from mnistlab.config import build_config  # noqa: E402
from mnistlab.export import TOLERANCE, check_onnx, onnx_bytes  # noqa: E402
from mnistlab.models import create_model, list_models  # noqa: E402
from mnistlab.runs import load_run  # noqa: E402
from mnistlab.train.run import train_run  # noqa: E402


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return train_run(
        build_config(
            "ae-convbn", sets=["dataset=mnist-sample", "epochs=1", "limit_batches=2", "filters=4,8", "kernels=3,3"]
        ),
        root / "ae",
        progress=False,
        figures=False,
    )


@pytest.mark.slow("exports and checks every registered model with onnxruntime")
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_round_trips(name, ae_run):
    torch.manual_seed(0)
    if name == "encoder-classifier":
        model = create_model(name, build_config(name, sets=[f"encoder={ae_run.path}"]).model, load_run=load_run)
    else:
        model = create_model(name)
    model.eval()
    data = onnx_bytes(model)
    for n in (1, 7):  # the batch axis is dynamic
        x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))
        assert check_onnx(data, model, x) <= TOLERANCE


@pytest.mark.slow("exports and checks every registered model with onnxruntime")
def test_the_cli_exports_checks_and_records(tmp_path, capsys, monkeypatch):
    import onnxruntime as ort

    from mnistlab import export
    from mnistlab.cli import main

    run = train_run(
        build_config("cnn-fast", sets=["dataset=mnist-sample", "epochs=1", "limit_batches=3"]),
        tmp_path / "cnn",
        progress=False,
        figures=False,
    )
    capsys.readouterr()
    assert main(["export", str(run.path), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["file"] == "model.onnx" and rec["checked_on"] == 100 and rec["max_abs_diff"] <= TOLERANCE
    assert rec["opset"] == 18 and rec["output"] == {"name": "logits", "shape": ["N", 10]}
    session = ort.InferenceSession(str(run.path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    out = session.run(None, {"images": torch.rand(5, 1, 28, 28).numpy()})[0]
    assert out.shape == (5, 10)
    assert main(["export", str(run.path), "--out", str(tmp_path / "other.onnx")]) == 0
    assert "onnxruntime equals torch within" in capsys.readouterr().out
    log = json.loads((run.path / "exports.json").read_text())
    assert [r["file"] for r in log] == ["model.onnx", str(tmp_path / "other.onnx")]
    # a mismatch is refused in one line and nothing is written
    monkeypatch.setattr(export, "TOLERANCE", 0.0)
    monkeypatch.setattr(export, "check_onnx", lambda *a: 3e-3)
    assert main(["export", str(run.path), "--out", str(tmp_path / "bad.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from torch by 3.00e-03" in err[0] and not (tmp_path / "bad.onnx").exists()
    assert len(json.loads((run.path / "exports.json").read_text())) == 2


def test_without_the_extra_the_error_names_it(monkeypatch):
    import sys

    from mnistlab.errors import ConfigError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"mnistlab\[export\]"):
        onnx_bytes(create_model("mlp"))
