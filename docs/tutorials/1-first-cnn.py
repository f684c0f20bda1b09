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
# # Your first CNN
#
# **You will**: train the classic MNIST convnet (conv32-pool-conv64-pool-dropout-dense) and
# watch it learn; read its summary (layers, shapes, 34,826 parameters); see which digits it
# confuses; ask it about one digit.
#
# **Time**: about 15 minutes (the training takes under a minute on a 2-core laptop).
# **Data**: the bundled sample, 8,000 real MNIST training digits and 2,000 held out; no download.

# %%
import tempfile

import torch

import mnistlab
from mnistlab import viz
from mnistlab.runs import confusion_matrix
from mnistlab.train.live import NotebookView

ds = mnistlab.load_dataset("mnist-sample")
print(ds.train.images.shape, ds.train.images.dtype, "training digits;", len(ds.test), "held out")

# %% [markdown]
# ## 1. The network, layer by layer
# `mnistlab.summary` is Keras' `model.summary()`: each layer's output shape for one digit and
# its parameters. A 3x3 convolution with 32 filters over one grey channel has 32 x (9 + 1) = 320
# parameters; the dense layer reads 64 x 5 x 5 = 1,600 numbers into 10 class scores.

# %%
print(mnistlab.summary("cnn"))

# %% [markdown]
# ## 2. Train it, and watch it learn
# The figure below redraws as the model trains: the running loss and accuracy of this epoch's
# batches, the first layer's filters, and eight held-out digits with the model's current
# reading (red: wrong). Five epochs are enough to see learning level off.

# %%
cfg = mnistlab.build_config("cnn", flags={"dataset": "mnist-sample", "epochs": 5})
view = NotebookView.for_run(cfg, ds)
folder = tempfile.mkdtemp() + "/cnn"
run = mnistlab.train_run(cfg, folder, dataset=ds, progress=False, figures=False, on_step=view)
print(f"held-out accuracy {run.summary['test_acc']:.2%} after {len(run.metrics)} epochs")

# %% [markdown]
# The run folder records everything: the config, every epoch's metrics, the checkpoint, the
# environment. `mnistlab.load_run(folder)` rebuilds the model from it.

# %%
sorted(p.name for p in run.path.iterdir())

# %% [markdown]
# ## 3. How training went, epoch by epoch
# *Figure: training and held-out loss (left) and accuracy (right) after each epoch.*

# %%
viz.shown(viz.curves_figure(run.metrics), "1-curves");

# %% [markdown]
# ## 4. Which digits it confuses
# *Figure: rows are the true digits, columns what the model read; the diagonal is right.*

# %%
predictions = mnistlab.predict(run.model, ds.test.images).argmax(1)
cm = confusion_matrix(predictions, ds.test.labels, 10)
fig = viz.confusion_figure(cm, ds.classes, title="cnn on the 2,000 held-out digits")
viz.shown(fig, "1-confusion");

# %% [markdown]
# ## 5. One digit, and what the model thinks of it
# *Figure: the digit and the model's ten probabilities (softmax of its ten scores).*

# %%
digit = ds.test.images[7]
probs = torch.softmax(mnistlab.predict(run.model, digit[None]), 1)[0].numpy()
title = f"true {int(ds.test.labels[7])}, read {probs.argmax()}"
viz.shown(viz.prediction_figure(digit.numpy(), probs, ds.classes, title), "1-one-digit");

# %% [markdown]
# ## Exercises
#
# 1. **Fewer filters.** Train with `--set model.channels=8,16` (in code:
#    `sets=["model.channels=8,16"]` in `build_config`). How many parameters now
#    (`mnistlab.summary`)? How much accuracy does it cost?
# 2. **A learning rate too high.** Train with `lr=0.05` (in `sets`). What does the training loss
#    do after the first epoch, and why does it sit at exactly 2.30?
# 3. **Its worst mistakes.** Find the held-out digits it reads wrong with the highest
#    probability (`probs.max(1)` where `predictions != labels`). Would you have read them right?
#
# <details><summary>Answers (for teachers: click to open)</summary>
#
# 1. 8 x 10 + 16 x (8 x 9 + 1) + 16 x 5 x 5 x 10 + 10 = 5,258 parameters, about 15% of 34,826;
#    held-out accuracy drops by about two points after 5 epochs (94.6% against 96.7% on a 2-core
#    CPU): most of the skill survives a network a seventh the size.
# 2. It stalls at 2.303 = ln 10 from the second epoch on, with accuracy near 10%: the model gives
#    every class the same probability, 1/10, for every digit. The first large steps pushed the
#    weights where the ReLUs are off for every input ("dead"), so no gradient flows back and
#    nothing more is learned. At `lr=0.001` the loss keeps falling.
# 3. Typically a handful above 90% confidence: 4s read as 9s, 7s as 1s, a 5 with a short top;
#    several are ambiguous to people too. High confidence is not correctness (tutorial 2's
#    *Why?* asks what the model looked at).
#
# </details>
#
# Next: *Inside the layers* opens the network up.
