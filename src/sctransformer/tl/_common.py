"""Plumbing shared by the tl front doors: devices, argument checks, copies, batch columns."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .. import _validate
from .. import logging as logg

# re-exported for the front doors; they live in the layers models/ may import
from .._settings import resolve_device as resolve_device
from .._validate import check_positive as check_positive


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


def store_embedding(adata, emb: np.ndarray, *, key_added: str, params: dict, start) -> None:
    """Write a cell embedding to ``obsm[key_added]`` and its parameters to
    ``uns["<key_added without X_>_embed"]["params"]``, and log what was added.
    """
    adata.obsm[key_added] = emb
    uns_key = f"{key_added.removeprefix('X_')}_embed"
    adata.uns[uns_key] = {"params": params}
    logg.info("    finished", time=start, deep=f"added obsm[{key_added!r}], uns[{uns_key!r}]")
