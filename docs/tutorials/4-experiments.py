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
# # The three experiments, small
#
# Each experiment of the original projects, run here at a size that finishes in seconds
# (the README and `mnistlab experiment NAME` give the full settings and `benchmarks/report-*`
# their spread over seeds). Each writes a run folder with its results and figures.
#
# - **dream**: images a classifier is sure are each digit, found by optimising the input;
#   an 11th class "optimised image" is fed back, round after round.
# - **unbiased**: an encoding that keeps "has a loop" but sheds parity, by adversarial training.
# - **reencode**: an autoencoder whose encoder is trained to re-encode its own output alike.

# %%
import tempfile
from pathlib import Path

from IPython.display import Image, display

import mnistlab
from mnistlab.studies.experiments import build_experiment_config, run_experiment, summary_lines

ds = mnistlab.load_dataset("mnist-sample")
root = Path(tempfile.mkdtemp())


def show(path, *names):
    for name in names:
        display(Image(filename=str(path / "figures" / name)))


# %% [markdown]
# ## Dream: what the classifier thinks a digit looks like

# %%
cfg = build_experiment_config("dream", sets=["rounds=2", "steps=40", "epochs=1", "judge_epochs=1",
                                             "epochs_per_round=1", "per_digit=1"])
path, results = run_experiment("dream", cfg, run_dir=root / "dream", dataset=ds, progress=False)
print("\n".join(summary_lines("dream", results)))
show(path, "rounds.png")

# %% [markdown]
# ## Unbiased: keep the loop, shed the parity
# λ weighs the adversary that tries to read parity off the code. The floor is what knowing
# "has a loop" alone says about parity.

# %%
cfg = build_experiment_config("unbiased", sets=["lambdas=0,1", "epochs=1", "probe_epochs=2", "warmup_epochs=0"])
path, results = run_experiment("unbiased", cfg, run_dir=root / "unbiased", dataset=ds, progress=False)
print("\n".join(summary_lines("unbiased", results)))
show(path, "tradeoff.png")

# %% [markdown]
# ## Reencode: an encoder consistent with its own decoder
# The literal objective collapses the code; the "spread" variant keeps it alive.

# %%
cfg = build_experiment_config("reencode", sets=["epochs=1"])
path, results = run_experiment("reencode", cfg, run_dir=root / "reencode", dataset=ds, progress=False)
print("\n".join(summary_lines("reencode", results)))
show(path, "reconstructions.png", "code_variance.png")
