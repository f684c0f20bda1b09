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
# # Your first CNN in ten lines
#
# Train the classic MNIST convnet on the bundled sample (8,000 training and 2,000 held-out
# digits, no download), look at what it gets right and wrong, and ask it about one digit.
# Runs in well under a minute on a 2-core laptop.

# %%
import tempfile

import mnistlab
from mnistlab import viz
from mnistlab.runs import confusion_matrix

ds = mnistlab.load_dataset("mnist-sample")
cfg = mnistlab.build_config("cnn-fast", flags={"dataset": "mnist-sample", "epochs": 2})
run = mnistlab.train_run(cfg, tempfile.mkdtemp() + "/cnn-fast", dataset=ds, progress=False, figures=False)
print(f"held-out accuracy: {run.summary['test_acc']:.2%} after {len(run.metrics)} epochs")

# %% [markdown]
# The run folder records everything: the config, the metrics of every epoch, the checkpoint,
# the environment. `mnistlab.load_run(folder)` rebuilds the model from it.

# %%
sorted(p.name for p in run.path.iterdir())

# %% [markdown]
# ## How training went
# One row per epoch; the figure functions return matplotlib figures (and the CLI saves them).

# %%
viz.curves_figure(run.metrics);

# %% [markdown]
# ## Which digits it confuses
# Rows are the true digits, columns what the model read.

# %%
predictions = mnistlab.predict(run.model, ds.test.images).argmax(1)
cm = confusion_matrix(predictions, ds.test.labels, 10)
viz.confusion_figure(cm, ds.classes, title="cnn-fast on the held-out sample");

# %% [markdown]
# ## One digit, and what the model thinks of it

# %%
from mnistlab.reading.reader import probabilities  # noqa: E402

digit = ds.test.images[7].numpy()
probs = probabilities(run.model, digit[None])[0]
viz.prediction_figure(digit, probs, ds.classes, f"true {int(ds.test.labels[7])}, read {probs.argmax()}");

# %% [markdown]
# Next: *Inside the layers* opens the network up.
