"""Model registry and the checkpoint format (torch is imported only when a model loads)."""

from ._io import save
from ._registry import available, load, resolve

__all__ = ["available", "load", "resolve", "save"]
