"""Plumbing shared by the tl front doors: devices, argument checks, copies, batch columns."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .. import _validate


def resolve_device(device):
    """A torch device from ``"auto"`` (settings, then CUDA when available), a name or a device."""
    import torch

    from .._settings import settings

    if isinstance(device, torch.device):
        return device
    device = settings.device if device == "auto" else device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu'")
    return torch.device(device)


def check_positive(**values: int) -> None:
    """Each named value must be a positive integer."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def copy_of(adata: AnnData) -> AnnData:
    """An in-memory copy (a backed AnnData is read once)."""
    return adata.to_memory() if adata.isbacked else adata.copy()


def batch_values(adata: AnnData, batch_key: str, *, what: str = "data") -> np.ndarray:
    """``obs[batch_key]`` as strings, after checking it exists and has no missing values."""
    col = _validate.obs_column(
        adata,
        batch_key,
        fix="fill them (e.g. with 'unknown') first",
        where=f"the {what}'s obs",
        of=f" of the {what}",
    )
    return col.astype(str).to_numpy()
