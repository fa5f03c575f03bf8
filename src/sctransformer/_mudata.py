"""The front doors' MuData paths: :func:`sctransformer.pp.tokenize`,
:func:`sctransformer.tl.embed_cells` and :func:`sctransformer.tl.pretrain` over a MuData's
shared cells, one sequence per cell over its modalities (see ``_mudata_tokens``).

Nothing is written before every check has passed.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _validate
from ._mudata_tokens import model_tokens, tokenize_mudata, write_mudata_tokens
from ._token_store import layout


def is_mudata(obj) -> bool:
    """Whether ``obj`` is a :class:`mudata.MuData` (without importing mudata when unused)."""
    if "mudata" not in sys.modules:
        return False
    from mudata import MuData

    return isinstance(obj, MuData)


def _copy(mdata):
    import warnings

    with warnings.catch_warnings():
        # features named alike in two modalities (a gene and its protein) are expected here
        warnings.filterwarnings("ignore", message="var_names are not unique", category=UserWarning)
        # mudata 0.3's copy() re-runs update(), which fails on integer obsm arrays (it writes
        # NaN into them when cells are reordered): set them aside and copy them ourselves
        ints = {k: v for k, v in mdata.obsm.items() if np.asarray(v).dtype.kind in "iu"}
        for k in ints:
            del mdata.obsm[k]
        try:
            out = mdata.copy()
        finally:
            for k, v in ints.items():
                mdata.obsm[k] = v
        for k, v in ints.items():
            out.obsm[k] = np.array(v)
        return out


def tokenize(mdata, *, key_added: str = "sct", copy: bool = False, **kw):
    """:func:`sctransformer.pp.tokenize` for a MuData (see there)."""
    from . import logging as logg

    start = logg.info(f"tokenizing a MuData of {mdata.n_obs} cells over {list(mdata.mod)}")
    tok, cells = tokenize_mudata(mdata, **kw)
    for message in tok.warnings:
        _validate.warn(message)
    mdata = _copy(mdata) if copy else mdata
    written = write_mudata_tokens(mdata, tok, cells, key_added)
    logg.info("    finished", time=start, deep=f"added {written}")
    return mdata if copy else None


def embed_cells(
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
    from . import logging as logg
    from .models import resolve
    from .tl._embed import store_embedding

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
    mdata = _copy(mdata) if copy else mdata
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


def pretrain(mdata, *, tokens_key: str = "sct", key_added: str = "sct_pretrain", **kw):
    """:func:`sctransformer.tl.pretrain` on a MuData's shared cells (tokenized here if needed)."""
    from .tl._pretrain import pretrain as pretrain_adata

    if kw.get("batch_key") is not None:
        raise ValueError("batch_key is not supported for a MuData yet; drop batch_key")
    existing = kw.get("model")
    k = layout(tokens_key)
    if k["tokens"] not in mdata.obsm:
        from .models import resolve
        from .nn.config import TransformerConfig

        vocab = None
        if existing is not None and not isinstance(existing, TransformerConfig):
            vocab = resolve(existing)
        tok, cells = tokenize_mudata(
            mdata, vocab=vocab, method=None if vocab is not None else kw.get("method", "rank")
        )
        for message in tok.warnings:
            _validate.warn(message)
        write_mudata_tokens(mdata, tok, cells, tokens_key)
    elif not mdata.uns.get(tokens_key, {}).get("params", {}).get("mudata", False):
        raise ValueError(
            f"mdata.obsm[{k['tokens']!r}] was not made from the MuData's modalities; re-run "
            "sct.pp.tokenize(mdata, ...) on the MuData"
        )
    lengths = np.asarray(mdata.obs[k["n_tokens"]])
    cells = np.flatnonzero(lengths > 0)
    stand_in = AnnData(
        obs=pd.DataFrame(index=pd.Index(mdata.obs_names[cells]).astype(str)),
        var=pd.DataFrame(index=["tokens"]),  # the tokens are all it reads
    )
    stand_in.obsm[k["tokens"]] = np.asarray(mdata.obsm[k["tokens"]])[cells]
    stand_in.obsm[k["values"]] = np.asarray(mdata.obsm[k["values"]])[cells]
    stand_in.obs[k["n_tokens"]] = lengths[cells]
    stand_in.uns[tokens_key] = mdata.uns[tokens_key]
    kw.pop("method", None)
    model = pretrain_adata(stand_in, tokens_key=tokens_key, key_added=key_added, **kw)
    mods = mdata.uns[tokens_key]["params"]["modality_order"]
    model.metadata["training_data"] = (
        f"{len(cells)} cells of a MuData ({', '.join(f'{m}: {mdata.mod[m].n_vars} features' for m in mods)})"
    )
    mdata.uns[key_added] = stand_in.uns[key_added]
    return model
