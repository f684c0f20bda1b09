"""Memory (issue 32): what a computation holds follows the data there, never a number someone
claims. Attribution passes are bounded (``attribution.maps.MAX_PASS``); a compressed IDX is
inflated in chunks and its header checked against the bytes there (measured in a child, as a
user meets it); an interactive answer is one bounded line."""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import sys

import pytest
import torch

from mnistlab.errors import ConfigError

from .test_inputs import fails_cleanly


def test_an_attribution_pass_holds_at_most_max_pass_images_however_many_are_asked():
    """`explain --eval --n 2000 --method ig` once sent 2000 x 51 images to Captum at once (5 GB)."""
    pytest.importorskip("captum", reason="the 'explain' extra is not installed")
    from mnistlab.attribution import maps
    from mnistlab.models import create_model

    model = create_model("cnn").eval()
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    x = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(maps, "MAX_PASS", 64)
        for method, copies in (("ig", 51), ("smoothgrad", 20), ("saliency", 1)):
            seen.clear()
            out = maps.explain(model, x, method, steps=50, samples=20)
            assert out.shape == (30, 28, 28) and torch.isfinite(out).all()
            assert max(seen) <= 64, (method, max(seen))  # 30 x 51 = 1530 at once before
            assert sum(seen) >= 30 * copies  # every digit was explained
    # the parts are the whole: chunked maps equal the maps of one pass when nothing is random
    whole = maps.explain(model, x[:4], "ig", steps=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(maps, "MAX_PASS", 9)  # one digit (9 images) a pass
        assert torch.allclose(maps.explain(model, x[:4], "ig", steps=8), whole, atol=1e-6)


def _lying_gz(path, claimed: int, held: int) -> None:
    header = struct.pack(">IIII", 2051, claimed, 28, 28)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(held))


def test_a_gzip_idx_whose_header_lies_is_refused_within_its_bytes(tmp_path):
    """A header claiming 20,000,000 images over 1 MB of data once asked for 15.7 GB at once."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _lying_gz(path, 20_000_000, 1 << 20)
    child = (
        "import resource, sys, torch\n"
        "from mnistlab.data.formats import read_idx\n"
        "from mnistlab.errors import DataError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_idx(sys.argv[1], 2051)\n"
        "except DataError as e:\n"
        "    print(e)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    said, grew_kb = out.stdout.strip().splitlines()
    assert "truncated" in said and "20,000,000 images" in said
    assert int(grew_kb) < 200 * 1024, f"{int(grew_kb) / 1024:.0f} MB above torch's import"


def test_an_idx_holding_exactly_its_claim_still_reads(tmp_path):
    from mnistlab.data.formats import read_idx

    path = tmp_path / "imgs.gz"
    _lying_gz(path, 3, 3 * 784)
    assert read_idx(path, 2051).shape == (3, 28, 28)


def test_an_interactive_answer_is_one_bounded_line(capsys):
    """`train --interactive < /dev/zero` once read one endless line (MemoryError after 7.7 s)
    and echoed a 10 MB answer back."""
    from mnistlab.config import build_config
    from mnistlab.interactive import MAX_ANSWER, ask_config

    cfg = build_config("cnn", validate=False)
    out = io.StringIO()
    with pytest.raises(ConfigError, match=f"longer than {MAX_ANSWER:,}"):
        ask_config(cfg, io.StringIO("0" * 10_000_000), out, from_terminal=False)
    assert len(out.getvalue()) < 1000
    # the same through the CLI, stdin a file of zeros with no newline
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdin", io.StringIO("\0" * 5_000_000))
        fails_cleanly(["train", "cnn", "--interactive", "--dataset", "mnist-sample"], capsys, "longer than")
