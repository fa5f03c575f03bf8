"""Torch building blocks (no AnnData here).

The configuration is importable without torch; everything else is loaded on first access so
that ``import sctransformer`` never pays for torch.
"""

from __future__ import annotations

import importlib

from .config import TransformerConfig

_LAZY = {
    "CellTransformer": "model",
    "PackedOutput": "model",
    "TransformerOutput": "model",
    "pool": "model",
    "attention": "attention",
    "select_backend": "attention",
    "varlen_attention": "varlen",
    "autocast_context": "precision",
    "choose_precision": "precision",
    "resolve_precision": "precision",
    "masks": None,
}

__all__ = ["TransformerConfig", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    return module if _LAZY[name] is None else getattr(module, name)
