"""Every registered model keeps the contract: forward, loss, backward, save and load."""

from __future__ import annotations

import pickle

import pytest
import torch

from mnistlab.errors import RunError
from mnistlab.models._registry import create_model, get_spec, list_models
from mnistlab.runs import load_checkpoint, model_from_checkpoint, save_checkpoint

MODELS = list_models()
# Models that need arguments to be built (an encoder classifier needs an encoder).
ARGS = {"encoder-classifier": {"encoder_model": "ae-convtranspose"}}


def test_registry_lists_and_filters():
    assert "cnn" in MODELS
    assert list_models("cn*") == ["cnn", "cnn-fast", "cnn-robust"]
    assert "ae-convbn" in list_models("ae-*") and "cnn" not in list_models("ae-*")
    assert set(list_models(task="classify")) <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_forward_loss_backward(name):
    torch.manual_seed(0)
    model = create_model(name, **ARGS.get(name, {}))
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3])
    out = model(x)
    if get_spec(name).task == "classify":
        assert out.shape == (4, len(model.class_names or range(10)))
    else:
        assert out.shape == x.shape
    losses = model.loss(x, y)
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    main = next(iter(model.optimizers(lambda params, lr_scale=1.0: torch.optim.SGD(params, lr=0.1)).values()))
    grads = [p.grad for g in main.param_groups for p in g["params"]]  # what the main optimiser moves
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", MODELS)
def test_train_step_moves_what_each_optimiser_holds(name):
    """The one loop's contract: a model's train_step, with its own optimisers, changes every
    parameter its optimisers hold, and returns finite scalars including the loss."""
    torch.manual_seed(0)
    model = create_model(name, **ARGS.get(name, {})).train()
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    model.prepare(type("S", (), {"labels": y})())
    model.start_epoch(5)
    opts = model.optimizers(lambda params, lr_scale=1.0: torch.optim.SGD(params, lr=0.05 * lr_scale))
    held = [p for o in opts.values() for g in o.param_groups for p in g["params"]]
    assert held and len({id(p) for p in held}) == len(held)  # no parameter in two optimisers
    before = [p.detach().clone() for p in held]
    out = model.train_step(x, y, opts, model.loss)
    assert "loss" in out and all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    moved = [not torch.equal(b, p) for b, p in zip(before, held)]
    assert all(moved), f"{sum(moved)}/{len(held)} parameters moved"


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(1)
    model = create_model(name, **ARGS.get(name, {})).eval()
    opt = torch.optim.Adam(model.parameters())
    model.loss(torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))["loss"].backward()
    opt.step()
    save_checkpoint(tmp_path / "c.pt", model, opt, epoch=3)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["epoch"] == 3 and state["model_name"] == name and state["optimizer"] is not None
    again = model_from_checkpoint(state).eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), again(x))


def test_activations_of_cnn_have_the_documented_shapes():
    acts = dict(create_model("cnn").activations(torch.rand(1, 1, 28, 28)))
    assert acts["conv1"].shape == (1, 32, 26, 26) and acts["pool1"].shape == (1, 32, 13, 13)
    assert acts["conv2"].shape == (1, 64, 11, 11) and acts["pool2"].shape == (1, 64, 5, 5)
    assert acts["flatten"].shape == (1, 1600) and acts["dense"].shape == (1, 10)


@pytest.mark.parametrize("name", ["cnn", "cnn-fast"])
def test_fast_forward_matches_the_classic_layer_order(name):
    """forward() pools before the ReLU; activations() keeps the classic order: same numbers."""
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.rand(8, 1, 28, 28)
    model.train()  # BatchNorm on batch statistics; dropout off so that both passes agree
    model.dropout.p = 0.0
    fast = model(x)
    classic = model.activations(x)[-1][1]
    assert torch.allclose(fast, classic, atol=1e-6)
    g_fast = torch.autograd.grad(fast.square().sum(), model.conv1.weight)[0]
    g_classic = torch.autograd.grad(model.activations(x)[-1][1].square().sum(), model.conv1.weight)[0]
    assert torch.allclose(g_fast, g_classic, atol=1e-5)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_checkpoint_never_runs_code(tmp_path, capsys):
    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        torch.save({"model_name": "cnn", "state_dict": {}, "payload": _Evil()}, f)
    with pytest.raises(RunError, match="not a readable mnistlab checkpoint"):
        load_checkpoint(p)
    assert "code ran" not in capsys.readouterr().out
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(RunError):
        load_checkpoint(p)


def test_mismatched_weights_are_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "c.pt", create_model("cnn"))
    state = load_checkpoint(tmp_path / "c.pt")
    state["model_args"]["channels"] = [8, 16]
    with pytest.raises(RunError, match="weights do not fit model 'cnn'"):
        model_from_checkpoint(state)
