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
# # Autoencoders and their code space
#
# An autoencoder squeezes each digit through a small code and rebuilds it. With a 2-D code
# every digit is a point on a plane: before training the points are a meaningless cloud;
# after, digits of one kind gather, and every point of the plane decodes to a digit-like image.
#
# **You will**: train an autoencoder with a 2-number code; see its code space before and after
# training; judge its reconstructions; walk through code space from one digit to another.
#
# **Time**: about 20 minutes. **Before**: tutorial 1.

# %%
import tempfile

import numpy as np

import mnistlab
from mnistlab import viz
from mnistlab.infer import encode
from mnistlab.viz import one_per_class

ds = mnistlab.load_dataset("mnist-sample")
cfg = mnistlab.build_config("ae-code2d", flags={"dataset": "mnist-sample", "epochs": 6})
untrained = mnistlab.create_model("ae-code2d", cfg.model)

# %% [markdown]
# ## The code space before training
# *Figure: left, the codes of 1,000 held-out digits, coloured by class; right, what the untrained
# decoder draws at each point of the plane: grey mush, since it has learned nothing yet.*

# %%
n = 1000
labels = ds.test.labels[:n].numpy()
before = encode(untrained, ds.test.images[:n]).numpy()
viz.shown(viz.code2d_figure(untrained, before, labels, "ae-code2d before training"), "3-before");

# %%
run = mnistlab.train_run(cfg, tempfile.mkdtemp() + "/ae", dataset=ds, progress=False, figures=False)
mse = run.summary["test_mse"]
print(f"held-out reconstruction error: {mse:.4f} per pixel, {mse * 784:.1f} per image")
print("(the mean squared error of pixels in 0..1: lower is better)")
viz.shown(viz.curves_figure(run.metrics), "3-curves");

# %% [markdown]
# ## After training
# *Figure: the same digits' codes after training, and the decoder's drawing at each point.*

# %%
after = encode(run.model, ds.test.images[:n]).numpy()
viz.shown(viz.code2d_figure(run.model, after, labels, "ae-code2d after training"), "3-after");

# %% [markdown]
# ## Reconstructions: one digit of each class, and what came back
# *Figure: top, one held-out digit of each class; bottom, what the autoencoder rebuilt from
# two numbers.*

# %%
originals = ds.test.images[one_per_class(ds.test)]
rebuilt = mnistlab.predict(run.model, originals).numpy()[:, 0]  # (10, 28, 28) in [0, 1]
rows = [("digit", originals.numpy() / 255), ("rebuilt", np.clip(rebuilt, 0, 1))]
viz.shown(viz.image_rows_figure(rows, "through a 2-number code"), "3-rebuilt");

# %% [markdown]
# ## Walking from a 1 to a 7 in code space
# *Figure: the decoder's drawings at eight evenly spaced points between the two digits' codes.*

# %%
one = ds.test.images[ds.test.labels == 1][0]
seven = ds.test.images[ds.test.labels == 7][0]
fig = viz.interpolation_figure(run.model, one, seven, steps=8, title="from a 1 to a 7")
viz.shown(fig, "3-walk");

# %% [markdown]
# ## Exercises
#
# 1. **A wider code.** Train `ae-dense` (a 32-number code) for 6 epochs and compare its held-out
#    error with the 2-number code's. Why can't it be plotted the same way?
# 2. **Which digits share a place?** In the "after" plot, which classes overlap most? Check with
#    the reconstructions: which digits come back looking like another class?
# 3. **Off the map.** Decode a point far outside the cloud of codes
#    (`run.model.decode(torch.tensor([[50.0, 50.0]]))`). What does the decoder draw, and why?
#
# <details><summary>Answers (for teachers: click to open)</summary>
#
# 1. Its error per pixel is several times lower (a 32-number code keeps far more of the digit:
#    strokes' thickness and slant, not only the class); 32 numbers cannot be drawn on a plane
#    (project them, e.g. with PCA, to see a shadow of the space).
# 2. Usually 4 and 9, 3, 5 and 8, and 7 and 9 overlap: similar shapes land near each other, and
#    the rebuilt 4 often looks like a 9. The 0s and 1s sit apart: their shapes differ most.
# 3. Something blurry or saturated that looks like no digit: the decoder only learned to draw
#    from where the training codes lie; far away it extrapolates.
#
# </details>
