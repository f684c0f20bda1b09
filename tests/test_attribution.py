"""mnistlab.explain (issue 24, the library): every method on every registered classifier,
the identities that make a map trustworthy (integrated gradients' completeness, contrast as
a difference of maps), determinism and the model's mode kept."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("captum", reason="the explain extra (mnistlab[explain]) is not installed")

import mnistlab  # noqa: E402
from mnistlab.attribution.maps import CAMS, METHODS, cells, completeness_gap  # noqa: E402
from mnistlab.config import build_config  # noqa: E402
from mnistlab.errors import ConfigError  # noqa: E402
from mnistlab.models import create_model, list_models  # noqa: E402
from mnistlab.runs import load_run  # noqa: E402
from mnistlab.train.run import train_run  # noqa: E402

CLASSIFIERS = [m for m in list_models(task="classify") if m != "encoder-classifier"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cnn trained a little on the toy set: maps of a model that has learnt something."""
    from conftest import synthetic_dataset

    root = tmp_path_factory.mktemp("explain")
    run = train_run(
        build_config("cnn", sets=["epochs=2", "batch_size=32"]),
        root / "cnn",
        dataset=synthetic_dataset(),
        progress=False,
        figures=False,
    )
    return load_run(run.path), synthetic_dataset()


def _images(n=3, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _model(name):
    torch.manual_seed(0)
    if name == "encoder-classifier":
        pytest.skip("built from an autoencoder run")
    return create_model(name)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_method_on_every_classifier(name, method):
    model = _model(name).train()  # in training mode: explain must leave it so
    x = _images()
    if method in CAMS and not any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        with pytest.raises(ConfigError, match=f"{method} needs a convolution"):
            mnistlab.explain(model, x, method)
        return
    a = mnistlab.explain(model, x, method, steps=8, samples=4)
    b = mnistlab.explain(model, x, method, steps=8, samples=4)
    assert a.shape == (3, 28, 28) and torch.isfinite(a).all() and torch.equal(a, b)
    assert model.training


def test_the_encoder_classifier_is_explained_too(tmp_path, toy):
    ae = train_run(
        build_config("ae-convbn", sets=["epochs=1", "batch_size=32", "filters=4,8", "kernels=3,3"]),
        tmp_path / "ae",
        dataset=toy,
        progress=False,
        figures=False,
    )
    model = create_model(
        "encoder-classifier", build_config("encoder-classifier", sets=[f"encoder={ae.path}"]).model, load_run=load_run
    )
    for method in METHODS:
        assert torch.isfinite(mnistlab.explain(model, _images(2), method, steps=8, samples=4)).all()


def test_integrated_gradients_add_up_to_the_logit_change(trained):
    run, ds = trained
    x = ds.test.images[:16, None].float() / 255
    maps = mnistlab.explain(run.model, x, "ig", steps=50)
    assert completeness_gap(run.model, x, maps).max() <= 0.01
    maps = mnistlab.explain(run.model, x, "ig", steps=50, contrast=0)
    assert completeness_gap(run.model, x, maps, contrast=0).max() <= 0.01


@pytest.mark.parametrize("method", ["saliency", "ig"])
def test_contrast_is_the_difference_of_the_two_maps(trained, method):
    run, ds = trained
    x = ds.test.images[:8, None].float() / 255
    why = mnistlab.explain(run.model, x, method)
    other = mnistlab.explain(run.model, x, method, target=3)
    why_not_3 = mnistlab.explain(run.model, x, method, contrast=3)
    assert (why_not_3 - (why - other)).abs().max() <= 1e-5


def test_the_map_points_at_the_ink_that_decides(trained):
    """On the toy set a class is a bright bar at one row: occlusion must find it there."""
    run, ds = trained
    x = ds.test.images[:16, None].float() / 255
    maps = mnistlab.explain(run.model, x, "occlusion")
    labels = ds.test.labels[:16]
    hits = 0
    for m, k in zip(maps, labels.tolist()):
        rows = m.clamp_min(0).sum(1)
        hits += abs(int(rows.argmax()) - (2 * k + 4.5)) <= 3
    assert hits >= 12, hits


def test_bad_arguments_are_one_clear_error():
    model = _model("cnn")
    with pytest.raises(ConfigError, match="unknown method"):
        mnistlab.explain(model, _images(), "deeplift")
    with pytest.raises(ConfigError, match=r"\(N, 1, 28, 28\)"):
        mnistlab.explain(model, torch.rand(3, 28, 28), "ig")
    with pytest.raises(ConfigError, match="classes are 0..9"):
        mnistlab.explain(model, _images(), "ig", target=12)
    with pytest.raises(ConfigError, match="one per image"):
        mnistlab.explain(model, _images(3), "ig", contrast=[1, 2])


def test_without_captum_the_error_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "captum.attr", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"mnistlab\[explain\]"):
        mnistlab.explain(_model("cnn"), _images(), "ig")


def test_the_cli_prints_one_object_per_input_and_draws_the_picture(trained, tmp_path, capsys):
    import json

    from PIL import Image

    from mnistlab.cli import main

    run, _ = trained
    Image.fromarray(255 - __import__("mnistlab").load_dataset("mnist-sample").test.images[7].numpy()).resize(
        (112, 112)
    ).save(tmp_path / "seven.png")
    capsys.readouterr()
    args = ["explain", "3", str(tmp_path / "seven.png"), "--run", str(run.path), "--dataset", "mnist-sample"]
    assert main([*args, "--json", "--method", "saliency", "--contrast", "1"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in recs] == ["mnist-sample test #3", str(tmp_path / "seven.png")]
    for r in recs:
        assert {"input", "digit", "target", "method", "attribution", "contrast"} <= r.keys()
        assert r["method"] == "saliency" and r["contrast"] == 1 and r["target"] == r["digit"]
        assert len(r["attribution"]) == 28 and all(len(row) == 28 for row in r["attribution"])
    assert main([*args[:2], *args[3:], "--save", str(tmp_path / "why.png")]) == 0
    assert (tmp_path / "why.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main([*args[:2], *args[3:], "--target", "12"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classes are 0..9" in err[0]


# ---------------------------------------------------------------- faithfulness (explain --eval)


def test_deletion_curves_erase_the_ink_in_the_order_given(trained):
    """The curve's ends are the digit and the digit with all its ink erased; ink goes in the
    order of the scores, and background pixels are never touched."""
    from mnistlab.attribution.faithfulness import INK, curves, ink_of

    run, ds = trained
    x = ds.test.images[:6, None].float() / 255
    model = run.model.eval()
    t = model(x).argmax(1)
    probs = lambda imgs: torch.softmax(model(imgs) / float(getattr(model, "temperature", 1.0)), 1)  # noqa: E731
    d = curves(model, x, torch.rand(6, 784), t, steps=4)
    erased = torch.where(x > INK, torch.zeros(()), x)
    with torch.no_grad():
        assert torch.allclose(d[:, 0], probs(x)[torch.arange(6), t], atol=1e-5)
        assert torch.allclose(d[:, -1], probs(erased)[torch.arange(6), t], atol=1e-5)
        ins = curves(model, x, torch.rand(6, 784), t, steps=4, insertion=True)
        assert torch.allclose(ins[:, 0], d[:, -1], atol=1e-5) and torch.allclose(ins[:, -1], d[:, 0], atol=1e-5)
    # one image, scores that rank a known pixel first: after one step only it is gone
    img = torch.zeros(1, 1, 28, 28)
    img[0, 0, 10, 3:13] = 1.0
    assert int(ink_of(img).sum()) == 10
    scores = torch.zeros(1, 784)
    scores[0, 10 * 28 + 7] = 5.0
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    try:
        curves(model, img, scores, torch.tensor([0]), steps=10)
    finally:
        hook.remove()
    step1 = seen[0][1, 0]
    assert step1[10, 7] == 0 and step1.sum() == 9 and torch.equal(seen[0][0, 0], img[0, 0])


@pytest.mark.outcome
def test_a_map_that_follows_the_model_beats_random_and_its_reverse(trained):
    from mnistlab.attribution.faithfulness import deletion

    run, ds = trained
    x = ds.test.images[:24, None].float() / 255
    for method in ("occlusion", "ig"):
        d = deletion(run.model, x, method)
        assert d.beats_random >= 0.8 and d.insertion_beats_random >= 0.8, (method, d.to_dict())
        rev = deletion(run.model, x, method, maps=-mnistlab.explain(run.model, x, method))
        assert rev.beats_random <= 0.2, (method, rev.to_dict())
    assert set(d.to_dict()) >= {"deletion_beats_random", "insertion_beats_random", "curve", "curve_random"}


def test_randomisation_changes_gradient_maps_and_ig_keeps_the_digit(trained):
    """Adebayo's check on the toy model: saliency after re-initialising is unrelated to the
    trained map; integrated gradients' |map| keeps the input's shape (it multiplies by it)."""
    from mnistlab.attribution.faithfulness import randomization, randomized

    run, ds = trained
    x = ds.test.images[:30, None].float() / 255
    clone = randomized(run.model, seed=0)
    assert not torch.equal(clone.conv1.weight, run.model.conv1.weight)
    assert torch.equal(randomized(run.model, seed=0).conv1.weight, clone.conv1.weight)  # seeded
    sal = randomization(run.model, x, "saliency")
    ig = randomization(run.model, x, "ig", steps=16)
    assert abs(sal.median) < 0.3, sal.to_dict()
    assert ig.abs_median > sal.abs_median + 0.1, (ig.to_dict(), sal.to_dict())


def test_spearman_with_ties():
    import numpy as np

    from mnistlab.attribution.faithfulness import spearman

    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1)
    # ties get average ranks: ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3)
    assert spearman(np.array([1.0, 1, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman(np.ones(5), np.arange(5.0)) == 0.0


def test_hirescam_cells_add_up_to_the_logit_and_gradcam_averages_their_weights(trained):
    """HiResCAM on cnn (pool2 -> ReLU -> dropout -> fc, linear): each cell's value is what it
    adds to the explained logit, so the cells add up to the logit less the head's bias,
    contrast too. Grad-CAM weights each channel by its gradient averaged over the cells: both
    computed here from fc's weights by hand."""
    from mnistlab.models.classifiers import MNIST_MEAN, MNIST_STD

    run, ds = trained
    model = run.model.eval()
    x = ds.test.images[:8, None].float() / 255
    with torch.no_grad():
        logits = model(x)
        h = torch.relu(model.pool1(model.conv1((x - MNIST_MEAN) / MNIST_STD)))
        pooled = model.pool2(model.conv2(h))  # (8, 64, 5, 5) the maps Grad-CAM looks at, before the ReLU
    t = logits.argmax(1)
    hi = cells(model, x, "hirescam")
    assert hi.shape == (8, 5, 5)
    assert torch.allclose(hi.sum((1, 2)), logits[torch.arange(8), t] - model.fc.bias[t], atol=1e-4)
    hi3 = cells(model, x, "hirescam", target=t, contrast=3)
    want = logits[torch.arange(8), t] - logits[:, 3] - (model.fc.bias[t] - model.fc.bias[3])
    assert torch.allclose(hi3.sum((1, 2)), want, atol=1e-4)
    grad = model.fc.weight.reshape(10, 64, 5, 5)[t] * (pooled > 0)  # d logit / d cell, through the ReLU
    assert torch.allclose(hi, (grad * pooled).sum(1), atol=1e-5)
    assert torch.allclose(cells(model, x, "gradcam"), (grad.mean((2, 3), keepdim=True) * pooled).sum(1), atol=1e-5)
    up = mnistlab.explain(model, x, "hirescam")
    assert up.shape == (8, 28, 28)
    centre = up[:, 12:14, 12:14].mean((1, 2))  # pixels 12.5 sit on cell (2, 2)'s centre (4.5 + 4 * 2)
    assert torch.allclose(centre, hi[:, 2, 2], atol=0.15 * hi.abs().amax((1, 2)).max())
    with pytest.raises(ConfigError, match="cells are for"):
        cells(model, x, "ig")


def test_gradcam_cells_sit_where_their_receptive_fields_are():
    """cnn's last maps (5x5 after two valid convolutions and poolings) are centred on input
    pixels 4.5 + 4i, not spread over the whole 28x28 as a plain resize would put them."""
    from mnistlab.attribution.maps import cell_centres, feature_layer

    model = _model("cnn").eval()
    layer = feature_layer(model)
    assert layer is model.pool2
    (r0, rs), (c0, cs) = cell_centres(model, layer)
    assert abs(rs - 4) < 0.2 and abs(cs - 4) < 0.2 and abs(r0 - 4.5) < 0.6 and abs(c0 - 4.5) < 0.6
    robust = _model("cnn-robust").eval()
    (r0, rs), _ = cell_centres(robust, feature_layer(robust))  # 'same' padding: 3 cells of 8 pixels
    assert abs(rs - 8) < 1.5 and abs(r0 - 3.5) < 2  # the image's edge pulls the outer cells in a little


def test_explain_eval_from_the_cli(trained, tmp_path, capsys):
    import json

    from mnistlab.cli import main

    run, _ = trained
    base = ["explain", "--run", str(run.path), "--dataset", "mnist-sample", "--n", "12"]
    capsys.readouterr()
    assert main([*base, "--eval", "deletion", "--method", "saliency", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["eval"] == "deletion" and rec["n"] == 12 and 0 <= rec["deletion_beats_random"] <= 1
    assert len(rec["curve"]) == len(rec["curve_random"]) == 21
    assert main([*base, "--eval", "randomization", "--method", "ig", "--save", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "median Spearman" in out and "shape survives" in out
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*base, "--eval", "deletion", "3"]) == 1
    assert main([*base[:-1], "0", "--eval", "deletion"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "give no inputs" in err[0] and "--n" in err[1]
