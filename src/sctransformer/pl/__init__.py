"""Plots (matplotlib is imported only when a plot is drawn)."""

from ._attention import attention_heads
from ._benchmark import benchmark
from ._grn import grn
from ._history import training_history
from ._perturbation import perturbation

__all__ = ["attention_heads", "benchmark", "grn", "perturbation", "training_history"]
