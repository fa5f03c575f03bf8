"""Plots (matplotlib is imported only when a plot is drawn)."""

from ._history import training_history

__all__ = ["training_history"]
