"""The MuData path of :func:`sctransformer.tl.embed_cells`: one sequence per cell over the
modalities (see ``_mudata_tokens``), written to ``mdata.obsm``.
"""

from __future__ import annotations

import numpy as np

from .. import _validate
from .. import logging as logg
from .._mudata import copy_mudata
from .._mudata_tokens import model_tokens
from ..models import resolve
from ._common import store_embedding


def embed_mudata(
    mdata,
    model,
    *,
    pooling=None,
    layer=None,
    batch_size: int = 32,
    precision: str = "auto",
    device: str = "auto",
    min_gene_fraction: float = 0.2,
    seed: int = 0,
    tokens_key: str = "sct",
    key_added: str = "X_sct",
    modalities=None,
    copy: bool = False,
):
    """:func:`sctransformer.tl.embed_cells` for a MuData: ``mdata.obsm[key_added]``."""
    model = resolve(model)
    model.check()
    run = model.inference(
        batch_size=batch_size, device=device, precision=precision, layer=layer, pooling=pooling
    )
    arrays, cells, reused, warnings = model_tokens(
        mdata, model, key=tokens_key, modalities=modalities, min_gene_fraction=min_gene_fraction
    )
    if model.max_length and arrays.tokens.shape[1] > model.max_length:
        raise ValueError(
            f"cells have up to {arrays.tokens.shape[1]} tokens but the model reads at most "
            f"{model.max_length}; tokenize with smaller per-modality max_length"
        )
    for message in warnings:
        _validate.warn(message)
    model.to(run.device).eval()
    start = logg.info(f"embedding {len(cells)} cells of a MuData")
    bar = logg.progress(total=len(cells), desc="embed", unit="cells")
    vec = model.pooled(arrays, run, progress=bar)
    bar.close()
    emb = np.full((mdata.n_obs, vec.shape[1]), np.nan, dtype=np.float32)
    emb[cells] = vec
    mdata = copy_mudata(mdata) if copy else mdata
    params = model.record(
        seed=seed,
        **run.params(),
        tokens_reused=reused,
        min_gene_fraction=min_gene_fraction,
        modalities=list(model.tokenize_params.get("modality_order", [])),
        n_cells_embedded=len(cells),
    )
    store_embedding(mdata, emb, key_added=key_added, params=params, start=start)
    return mdata if copy else None
