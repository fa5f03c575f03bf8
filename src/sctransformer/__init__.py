"""sctransformer: transformer models for single-cell omics as ordinary scanpy steps.

The subpackages load on first use (``sct.pp``, ``sct.tl``, …), and torch, matplotlib and
xformers only inside the functions that need them, so ``import sctransformer`` and the
command line's ``--help`` stay fast.
"""

import importlib

from ._backed import open_zarr
from ._settings import settings
from ._version import __version__

_SUBPACKAGES = ("datasets", "models", "nn", "pl", "pp", "tl", "tokenizers", "train")

__all__ = [
    "__version__",
    "datasets",
    "models",
    "nn",
    "open_zarr",
    "pl",
    "pp",
    "settings",
    "tl",
    "tokenizers",
]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBPACKAGES))
