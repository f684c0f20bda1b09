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
# **You will**: see what each layer of the classic CNN computes for one digit; open a
# convolution and add up one number of a feature map yourself; ask which pixels made the
# prediction (attribution maps) and check whether the answer can be trusted.
#
# **Time**: about 25 minutes. **Before**: tutorial 1.

# %%
import tempfile

import torch

import mnistlab
from mnistlab import viz
from mnistlab.attribution.faithfulness import deletion, randomization
from mnistlab.attribution.maps import cells
from mnistlab.infer import activations, open_convolution

ds = mnistlab.load_dataset("mnist-sample")
cfg = mnistlab.build_config("cnn", flags={"dataset": "mnist-sample", "epochs": 2})
folder = tempfile.mkdtemp() + "/cnn"
run = mnistlab.train_run(cfg, folder, dataset=ds, progress=False, figures=False)
model = run.model
digit = ds.test.images[3].numpy()
print(f"held-out accuracy {run.summary['test_acc']:.2%}; digit 3 is a {int(ds.test.labels[3])}")

# %% [markdown]
# ## Every layer's output
# conv1 has 32 filters of 3x3 over the 28x28 digit (26x26 maps, no padding); pooling halves
# each side; conv2 has 64 filters over all 32 maps; the dense layer reads 64x5x5 = 1,600 numbers.
#
# *Figure: each layer's output for the digit (bright: strongly active; each layer on its own
# scale).*

# %%
fig = viz.layers_figure(activations(model, digit), ds.classes, "cnn, one held-out digit")
viz.shown(fig, "2-layers");

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
channels = conv["total"] - conv["bias"]
print(f"32 channel sums {channels:.4f} + bias {conv['bias']:.4f} = {conv['total']:.4f}")
print(f"the map holds {conv['value']:.4f}")

# %% [markdown]
# ## Why a digit was read as it was
# Integrated gradients: red pixels pushed toward the predicted class, blue away. The
# attributions add up to the change in the logit from a black image (completeness).
#
# *Figure: the digit, the map over it, and the model's probabilities.*

# %%
x = torch.from_numpy(digit).float().div(255)[None, None]
probs = torch.softmax(model(x), 1)[0].detach().numpy()
maps = mnistlab.explain(model, x, "ig")
title = "integrated gradients"
fig = viz.explanation_figure(digit, maps[0].numpy(), probs, ds.classes, "held-out digit 3", title)
viz.shown(fig, "2-why");

# %% [markdown]
# ## Is the map faithful?
# Erase the ink pixels the map ranks highest first: the probability should fall faster
# than when the ink is erased in a random order. Then scramble the weights: a map that
# explains the model should change.

# *Figure: the probability as the ink is erased, in the map's order and at random (50 digits).*

# %%
images = ds.test.images[:50, None].float() / 255
d = deletion(model, images, "saliency")
r = randomization(model, images, "saliency")
print(f"saliency beats a random ink-first order on {d.beats_random:.0%} of 50 digits; "
      f"median Spearman after scrambling {r.median:.2f}")
viz.shown(viz.faithfulness_figure(d), "2-deletion");

# %% [markdown]
# ## Grad-CAM and HiResCAM
# Both colour the 5x5 cells of the last feature maps. Grad-CAM weighs each of the 64 maps by
# its gradient *averaged over the cells*; HiResCAM keeps each cell's own gradient, so a cell's
# value is exactly what it adds to the class's logit here (the dense layer is linear). The
# deletion check tells them apart.

# %%
for method in ("gradcam", "hirescam"):
    won = deletion(model, images, method).beats_random
    print(f"{method}: beats a random ink-first order on {won:.0%} of 50 digits")
c = cells(model, x, "hirescam")[0]
with torch.no_grad():
    k = int(model(x).argmax())
    logit = (model(x)[0, k] - model.fc.bias[k]).item()
print(f"HiResCAM's 25 cells add up to {c.sum().item():.3f};")
print(f"class {k}'s logit less the dense layer's bias is {logit:.3f}")
hires = mnistlab.explain(model, x, "hirescam")[0].numpy()
fig = viz.explanation_figure(digit, hires, probs, ds.classes, "held-out digit 3", "HiResCAM")
viz.shown(fig, "2-hirescam");

# %% [markdown]
# ## Exercises
#
# 1. **Another pixel.** Open conv1 (`layer=0`) at a pixel on the digit's stroke and at one in
#    the black background. Which products are zero in the background, and why is the value
#    there just the bias?
# 2. **Why not a 7?** Explain the digit with `contrast=7` (`mnistlab.explain(model, x, "ig",
#    contrast=7)`). Which strokes argue for the true class against a 7?
# 3. **A map that does not depend on the model.** Run the randomisation check for `"ig"` instead
#    of `"saliency"`. Why does its median Spearman stay high with scrambled weights?
#
# <details><summary>Answers (for teachers: click to open)</summary>
#
# 1. conv1's input is the standardised digit: the background is a constant (black standardised,
#    about -0.42), so every product is a kernel weight times that constant and the value there
#    is the same everywhere in the background: the kernel's sum times -0.42, plus the bias. On the
#    stroke the patch varies and the value tells stroke from edge from background.
# 2. The pixels that separate the two (held-out digit 3 is a 5): its lower bowl and the short
#    left stroke under the top bar, which a 7 lacks, come out red; the top bar, which both share,
#    stays near zero.
# 3. Integrated gradients multiply each pixel's gradient by the pixel itself (the input minus a
#    black baseline), so the map keeps the digit's shape whatever the weights: a lesson about the
#    method, not the model. Saliency's map changes with the weights (median Spearman near 0).
#
# </details>
