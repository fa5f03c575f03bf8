"""sctransformer: transformer models for single-cell omics as ordinary scanpy steps.

torch, matplotlib and xformers are imported only inside the functions that need them, so
``import sctransformer`` stays fast.
"""

from . import datasets, models, pl, pp, tl, tokenizers
from ._settings import settings
from ._version import __version__

__all__ = ["__version__", "datasets", "models", "pl", "pp", "settings", "tl", "tokenizers"]
