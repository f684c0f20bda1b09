"""Sweeps on Optuna: a model's settings over a grid or a search space, trials run by one or
several workers on one study (SQLite, or PostgreSQL for several machines), each trial a run."""

from .results import show_sweep
from .worker import run_sweep

__all__ = ["run_sweep", "show_sweep"]
