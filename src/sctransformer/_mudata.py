"""MuData below the front doors: :func:`sctransformer.pp.tokenize` of a MuData and what
:func:`sctransformer.tl.pretrain` needs of one (its shared cells, one sequence per cell over
its modalities; see ``_mudata_tokens``). The MuData path of ``embed_cells`` is
``tl/_embed_mudata.py``.

Nothing is written before every check has passed.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _validate
from ._mudata_tokens import tokenize_mudata, write_mudata_tokens
from ._token_store import layout


def is_mudata(obj) -> bool:
    """Whether ``obj`` is a :class:`mudata.MuData` (without importing mudata when unused)."""
    if "mudata" not in sys.modules:
        return False
    from mudata import MuData

    return isinstance(obj, MuData)


def copy_mudata(mdata):
    """A copy of ``mdata`` (mudata's own copy loses integer ``obsm`` arrays)."""
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
    mdata = copy_mudata(mdata) if copy else mdata
    written = write_mudata_tokens(mdata, tok, cells, key_added)
    logg.info("    finished", time=start, deep=f"added {written}")
    return mdata if copy else None


def pretrain_input(mdata, *, tokens_key: str = "sct", model=None, method: str = "rank",
                   batch_key: str | None = None) -> AnnData:  # fmt: skip
    """What :func:`sctransformer.tl.pretrain` trains on for a MuData: an AnnData of its shared
    cells' tokens (the MuData is tokenized here first if needed).
    """
    if batch_key is not None:
        raise ValueError("batch_key is not supported for a MuData yet; drop batch_key")
    k = layout(tokens_key)
    if k["tokens"] not in mdata.obsm:
        from .models import resolve
        from .nn.config import TransformerConfig

        vocab = None
        if model is not None and not isinstance(model, TransformerConfig):
            vocab = resolve(model)
        tok, cells = tokenize_mudata(
            mdata, vocab=vocab, method=None if vocab is not None else method
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
    return stand_in


def record_pretrain(mdata, model, stand_in: AnnData, *, tokens_key: str, key_added: str) -> None:
    """Name the MuData as the model's training data and copy the run's ``uns`` entry to it."""
    mods = mdata.uns[tokens_key]["params"]["modality_order"]
    model.metadata["training_data"] = (
        f"{stand_in.n_obs} cells of a MuData ({', '.join(f'{m}: {mdata.mod[m].n_vars} features' for m in mods)})"
    )
    mdata.uns[key_added] = stand_in.uns[key_added]
