"""Studies: what is run over many trainings.

- ``sweep``: Optuna studies over a model's settings (grid or search, workers, PostgreSQL).
- ``experiments``: the three experiments (dream, unbiased, reencode), each recorded as runs.
- ``report``: every headline figure over seeds, with its spread.
- ``bench``: speed figures against a baseline measured in the same run; ``baseline`` is that
  baseline, the conventional PyTorch MNIST script.
"""
