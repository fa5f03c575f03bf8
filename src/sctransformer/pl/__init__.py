"""Plots (matplotlib is imported only when a plot is drawn)."""

from ._benchmark import benchmark
from ._history import training_history
from ._perturbation import perturbation

__all__ = ["benchmark", "perturbation", "training_history"]
