# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Inside the layers
#
# What each layer of the classic CNN computes for one digit, how one number in a feature map
# is made (a convolution opened up), and which pixels made the prediction (attribution
# maps, checked for faithfulness).

# %%
import tempfile

import torch

import mnistlab
from mnistlab import viz
from mnistlab.infer import activations, open_convolution

ds = mnistlab.load_dataset("mnist-sample")
cfg = mnistlab.build_config("cnn", flags={"dataset": "mnist-sample", "epochs": 2})
run = mnistlab.train_run(cfg, tempfile.mkdtemp() + "/cnn", dataset=ds, progress=False, figures=False)
model = run.model
digit = ds.test.images[3].numpy()
print(f"held-out accuracy {run.summary['test_acc']:.2%}; digit 3 is a {int(ds.test.labels[3])}")

# %% [markdown]
# ## Every layer's output
# conv1 has 32 filters of 3x3 over the 28x28 digit (26x26 maps, no padding); pooling halves
# each side; conv2 has 64 filters over all 32 maps; the dense layer reads 64x5x5 = 1,600 numbers.

# %%
viz.layers_figure(activations(model, digit), ds.classes, "cnn, one held-out digit");

# %% [markdown]
# ## One number of one feature map, opened
# conv2's channel 10 at row 5, column 5: the sum over conv1's 32 pooled maps of a 3x3 kernel
# times the 3x3 patch under it, plus a bias.

# %%
conv = open_convolution(model, digit, layer=1, channel=10, y=5, x=5)
first = conv["inputs"][0]
print("kernel over input channel 0:\n", first["kernel"].numpy().round(3))
print("the patch it covers:\n", first["patch"].numpy().round(3))
print(f"their products sum to {first['sum']:.4f}")
print(f"32 channel sums {conv['total'] - conv['bias']:.4f} + bias {conv['bias']:.4f} = {conv['total']:.4f}; "
      f"the map holds {conv['value']:.4f}")

# %% [markdown]
# ## Why a digit was read as it was
# Integrated gradients: red pixels pushed toward the predicted class, blue away. The
# attributions add up to the change in the logit from a black image (completeness).

# %%
x = torch.from_numpy(digit).float().div(255)[None, None]
probs = torch.softmax(model(x), 1)[0].detach().numpy()
maps = mnistlab.explain(model, x, "ig")
viz.explanation_figure(digit, maps[0].numpy(), probs, ds.classes, "held-out digit 3", "integrated gradients");

# %% [markdown]
# ## Is the map faithful?
# Erase the ink pixels the map ranks highest first: the probability should fall faster
# than when the ink is erased in a random order. Then scramble the weights: a map that
# explains the model should change.

# %%
from mnistlab.attribution.faithfulness import deletion, randomization  # noqa: E402

images = ds.test.images[:50, None].float() / 255
d = deletion(model, images, "saliency")
r = randomization(model, images, "saliency")
print(f"saliency beats a random ink-first order on {d.beats_random:.0%} of 50 digits; "
      f"median Spearman after scrambling {r.median:.2f}")
viz.faithfulness_figure(d);

# %% [markdown]
# ## Grad-CAM and HiResCAM
# Both colour the 5x5 cells of the last feature maps. Grad-CAM weighs each of the 64 maps by
# its gradient *averaged over the cells*; HiResCAM keeps each cell's own gradient, so a cell's
# value is exactly what it adds to the class's logit here (the dense layer is linear). The
# deletion check tells them apart.

# %%
from mnistlab.attribution.maps import cells  # noqa: E402

for method in ("gradcam", "hirescam"):
    won = deletion(model, images, method).beats_random
    print(f"{method}: beats a random ink-first order on {won:.0%} of 50 digits")
c = cells(model, x, "hirescam")[0]
with torch.no_grad():
    k = int(model(x).argmax())
    print(f"HiResCAM's 25 cells add up to {c.sum().item():.3f}; class {k}'s logit less the dense layer's "
          f"bias is {(model(x)[0, k] - model.fc.bias[k]).item():.3f}")
viz.explanation_figure(digit, mnistlab.explain(model, x, "hirescam")[0].numpy(), probs, ds.classes,
                       "held-out digit 3", "HiResCAM");
