"""Models that leave the kit: a run's model as an ONNX file any runtime can load.

    mnistlab export runs/cnn                      # runs/cnn/model.onnx, checked by onnxruntime
    from mnistlab.export import export_run
    record = export_run("runs/cnn", out="cnn.onnx")

The file takes ``images``: float32 (N, 1, 28, 28) in [0, 1] (white ink on black, as the
model trains on; N is a dynamic axis) and gives ``logits`` (N, classes) for a classifier,
``reconstruction`` (N, 1, 28, 28) for an autoencoder. A classifier's calibrated probabilities
are softmax(logits / temperature), the temperature written in the record.

The export checks itself before it is kept: onnxruntime's outputs on ``CHECK_DIGITS``
held-out digits of the run's dataset must equal torch's within ``TOLERANCE``, else the file
is not written and the error says by how much they differed. Each export is recorded in the
run folder's ``exports.json``. Needs the ``export`` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ._io import Unreadable, atomic_open, check_target, read_json, write_json
from .calibrate import temperature_of
from .checks import brief
from .errors import ConfigError, MnistlabError, RunError
from .infer import eval_mode

OPSET = 18
TOLERANCE = 1e-4  # largest |onnxruntime - torch| allowed on the check digits
CHECK_DIGITS = 100
FORMATS = ("onnx",)


def _extra():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"exporting a model needs the 'export' extra ({e.name} is missing): pip install 'mnistlab[export]'"
        ) from None
    return onnxruntime


class _Images(torch.nn.Module):
    """The model with its forward's argument named ``images``: the exporter keys the dynamic
    batch axis (and the file's input) by that name, and models call theirs ``x``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)


def output_name(model) -> str:
    return "logits" if getattr(model, "task", "classify") == "classify" else "reconstruction"


def onnx_bytes(model, opset: int = OPSET) -> bytes:
    """The model (in eval mode, on the CPU) as ONNX bytes with a dynamic batch axis."""
    _extra()
    output = output_name(model)
    example = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    wrapped = _Images(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import logging

        quiet = logging.getLogger("torch.onnx")
        level, quiet.level = quiet.level, logging.ERROR
        try:
            program = torch.onnx.export(
                wrapped,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=["images"],
                output_names=[output],
                dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                verbose=False,
            )
        except Exception as e:  # the exporter's own failure, said in one line
            raise MnistlabError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        finally:
            quiet.level = level
    program.model_proto.ir_version = min(program.model_proto.ir_version, 10)  # older runtimes load it too
    return program.model_proto.SerializeToString()


def check_onnx(data: bytes, model, images: torch.Tensor) -> float:
    """Largest |onnxruntime - torch| over `images` (N, 1, 28, 28) floats in [0, 1]."""
    ort = _extra()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    x = images.float().cpu()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with eval_mode(model), torch.no_grad():
        want = model(x.to(next(model.parameters()).device)).float().cpu().numpy()
    if got.shape != want.shape:
        raise MnistlabError(f"the ONNX model gives shape {got.shape}, torch {want.shape}")
    return float(np.abs(got - want).max())


def export_run(run_dir, fmt: str = "onnx", out=None, *, opset: int = OPSET, digits: int = CHECK_DIGITS) -> dict:
    """Export a run's model, check it against torch on `digits` held-out digits, write it
    atomically (default RUN/model.onnx) and record it in RUN/exports.json."""
    from .data.sources import dataset_for
    from .runs import load_run

    if fmt not in FORMATS:
        raise ConfigError(f"--format: one of {', '.join(FORMATS)}, got {fmt!r}")
    _extra()
    run = load_run(run_dir)
    model = run.model.cpu().eval()
    path = check_target(Path(out) if out else run.path / "model.onnx")  # before any work
    log = run.path / "exports.json"
    try:  # the record is read before the model is written: a broken one stops us with nothing written
        old = read_json(log) if os.path.lexists(log) else []
    except Unreadable as e:
        raise RunError(f"{brief(str(e), 160)}: move it aside to export again (nothing written)") from None
    t0 = time.perf_counter()
    data = onnx_bytes(model, opset)
    ds = dataset_for(run.config.data, notice=lambda m: None)
    x = ds.test.images[:digits, None].float() / 255
    diff = check_onnx(data, model, x)
    if not diff <= TOLERANCE:
        raise MnistlabError(
            f"the ONNX model differs from torch by {diff:.2e} on {len(x)} held-out digits "
            f"(allowed {TOLERANCE:g}): not written"
        )
    with atomic_open(path, "wb") as f:
        f.write(data)
    with torch.no_grad():
        one = tuple(model(x[:1]).shape[1:])
    inside = path.resolve().is_relative_to(run.path.resolve())
    record = {
        "file": os.path.relpath(path, run.path) if inside else str(path),
        "format": fmt,
        "opset": opset,
        "input": {"name": "images", "shape": ["N", 1, 28, 28], "dtype": "float32", "range": [0, 1]},
        "output": {"name": output_name(model), "shape": ["N", *one]},
        "checked_on": len(x),
        "max_abs_diff": diff,
        "tolerance": TOLERANCE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "seconds": round(time.perf_counter() - t0, 2),
        "torch": torch.__version__,
    }
    if run.task == "classify":
        record["temperature"] = temperature_of(model)
    write_json(log, [*(old if isinstance(old, list) else []), record], run_file=True)
    return {**record, "path": str(path)}
