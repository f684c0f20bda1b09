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

# %%
import tempfile

import numpy as np

import mnistlab
from mnistlab import viz
from mnistlab.viz import _encode, one_per_class

ds = mnistlab.load_dataset("mnist-sample")
cfg = mnistlab.build_config("ae-code2d", flags={"dataset": "mnist-sample", "epochs": 6})
untrained = mnistlab.create_model("ae-code2d", cfg.model)

# %% [markdown]
# ## The code space before training

# %%
n = 1000
labels = ds.test.labels[:n].numpy()
before = _encode(untrained, ds.test.images[:n]).numpy()
viz.code2d_figure(untrained, before, labels, "ae-code2d before training");

# %%
run = mnistlab.train_run(cfg, tempfile.mkdtemp() + "/ae", dataset=ds, progress=False, figures=False)
print(f"held-out reconstruction MSE {run.summary['test_mse']:.4f}")
viz.curves_figure(run.metrics);

# %% [markdown]
# ## After training

# %%
after = _encode(run.model, ds.test.images[:n]).numpy()
viz.code2d_figure(run.model, after, labels, "ae-code2d after training");

# %% [markdown]
# ## Reconstructions: one digit of each class, and what came back

# %%
originals = ds.test.images[one_per_class(ds.test)]
rebuilt = mnistlab.predict(run.model, originals).numpy()[:, 0]  # (10, 28, 28) in [0, 1]
viz.image_rows_figure([("digit", originals.numpy() / 255), ("rebuilt", np.clip(rebuilt, 0, 1))],
                      "through a 2-number code");

# %% [markdown]
# ## Walking from a 1 to a 7 in code space

# %%
one = ds.test.images[ds.test.labels == 1][0]
seven = ds.test.images[ds.test.labels == 7][0]
viz.interpolation_figure(run.model, one, seven, steps=8, title="from a 1 to a 7");
