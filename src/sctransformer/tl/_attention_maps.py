"""``attention_maps``: mean attention among a few genes per layer and head (for the plots)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from ..models import resolve
from ._attention_accum import pair_means
from ._attention_stream import (
    _check_normalize,
    resolve_heads,
    resolve_layers,
    select_genes,
    stream_attention,
)
from ._common import resolve_device
from ._grn_stats import Stream


def attention_maps(
    adata: AnnData,
    model,
    *,
    genes: Sequence[str],
    cells=None,
    layers: int | Sequence[int] | Literal["all"] = "all",
    heads: Literal["all"] | Sequence[int] = "all",
    normalize: Literal["rank", "softmax"] | None = "softmax",
    batch_size: int = 16,
    chunk_size: int = 2048,
    device: str = "auto",
    tokens_key: str = "sct",
) -> dict:
    """Mean attention among ``genes`` per layer and head, over ``cells`` (for plots).

    Returns
    -------
    ``{"maps": [layers, heads, genes, genes] (NaN where two genes never met),
    "n_cells": [genes, genes], "layers": 1-based, "heads": 0-based, "genes": names}``.
    """
    model = resolve(model)
    model.check()
    _validate.check_nonempty(adata)
    layer_idx = resolve_layers(layers, model.config.num_layers)
    head_idx = resolve_heads(heads, model.config.num_heads)
    if head_idx is None:
        head_idx = list(range(model.config.num_heads))
    _check_normalize(normalize)
    if genes is None:
        raise ValueError("genes is required: the genes to show")
    sel, lookup = select_genes(adata, model, genes)
    sub = adata if cells is None else adata[_cell_positions(adata, cells)]
    if sub.n_obs == 0:
        raise ValueError("cells selects no cell")
    dev = resolve_device(device)
    model.to(dev).eval()
    codes = np.zeros(sub.n_obs, dtype=np.int64)
    run = Stream(sub, model, lookup, codes, 1, None, batch_size, chunk_size, dev, tokens_key)
    acc, _ = stream_attention(
        run, layers=layer_idx, heads=head_idx, normalize=normalize, desc="attention"
    )
    sums, counts = acc.result()
    maps = pair_means(sums[0], counts[0]).reshape(len(layer_idx), len(head_idx), len(sel), len(sel))
    return {
        "maps": maps,
        "n_cells": counts[0],
        "layers": [i + 1 for i in layer_idx],
        "heads": head_idx,
        "genes": [str(adata.var_names[i]) for i in sel],
    }


def _cell_positions(adata: AnnData, cells) -> np.ndarray:
    """Integer positions from obs names, a boolean mask or positions."""
    arr = np.asarray(cells)
    if arr.dtype == bool:
        if arr.shape != (adata.n_obs,):
            raise ValueError(f"a boolean cells mask needs {adata.n_obs} entries, got {arr.shape}")
        return np.flatnonzero(arr)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < -adata.n_obs or arr.max() >= adata.n_obs):
            raise ValueError(f"cell positions out of range for {adata.n_obs} cells")
        return arr.astype(np.int64)
    pos = pd.Index(adata.obs_names).get_indexer(arr.astype(str))
    if (pos < 0).any():
        raise ValueError(f"cells not in obs_names: {arr[pos < 0][:10].tolist()}")
    return pos
