"""Stored tokens: :func:`write_tokens` stores a tokenization in ``obsm``/``obs``/``uns`` under a
key (:func:`layout`), :func:`read_tokens` and :func:`read_token_rows` read it back (backed
AnnData: only the cells asked for).
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ._tokenize_arrays import Tokenized
from .tokenizers import GeneVocab, TokenArrays


def layout(key: str) -> dict[str, str]:
    """Where tokens made under ``key`` live (``obsm``/``obs``/``uns`` names)."""
    return {
        "tokens": f"{key}_tokens",
        "values": f"{key}_values",
        "n_tokens": f"{key}_n_tokens",
        "sentence": f"{key}_sentence",
        "uns": key,
    }


def write_tokens(adata: AnnData, tok: Tokenized, key: str) -> str:
    """Store ``tok`` under ``key`` (see :func:`sctransformer.pp.tokenize`); returns what it wrote."""
    k = layout(key)
    sentence = tok.sentences is not None
    # drop what an earlier call under the same key wrote in the other layout
    for stale in (k["tokens"], k["values"]):
        if sentence and stale in adata.obsm:
            del adata.obsm[stale]
    if not sentence and k["sentence"] in adata.obs:
        del adata.obs[k["sentence"]]
    adata.obs[k["n_tokens"]] = tok.arrays.lengths
    if sentence:
        adata.obs[k["sentence"]] = tok.sentences
        written = f"obs[{k['sentence']!r}]"
    else:
        adata.obsm[k["tokens"]] = tok.arrays.tokens
        adata.obsm[k["values"]] = tok.arrays.values
        written = f"obsm[{k['tokens']!r}], obsm[{k['values']!r}]"
    adata.uns[k["uns"]] = {"params": tok.params, "vocab": tok.vocab.to_json()}
    return f"{written}, obs[{k['n_tokens']!r}], uns[{k['uns']!r}]"


def stored_params(adata: AnnData, key: str) -> dict:
    return dict(adata.uns.get(key, {}).get("params", {}))


def stored_vocab(adata: AnnData, key: str) -> GeneVocab:
    k = layout(key)
    if k["tokens"] not in adata.obsm:
        raise ValueError(f"obsm[{k['tokens']!r}] not found; run sct.pp.tokenize first")
    if key not in adata.uns or "vocab" not in adata.uns[key]:
        raise ValueError(
            f"obsm[{k['tokens']!r}] exists but uns[{key!r}] has no vocabulary; re-run "
            "sct.pp.tokenize"
        )
    return GeneVocab.from_json(adata.uns[key]["vocab"])


def read_tokens(
    adata: AnnData, key: str, *, start: int = 0, stop: int | None = None, pad_id: int | None = None
) -> TokenArrays:
    """Token arrays stored by :func:`write_tokens` for cells ``start:stop`` (backed: read then)."""
    k = layout(key)
    if k["tokens"] not in adata.obsm:
        raise ValueError(f"obsm[{k['tokens']!r}] not found; run sct.pp.tokenize first")
    stop = adata.n_obs if stop is None else stop
    if pad_id is None:
        pad_id = stored_vocab(adata, key).pad_id
    params = stored_params(adata, key)
    return TokenArrays(
        tokens=np.asarray(adata.obsm[k["tokens"]][start:stop]),
        values=np.asarray(adata.obsm[k["values"]][start:stop]),
        lengths=np.asarray(adata.obs[k["n_tokens"]].to_numpy()[start:stop]),
        pad_id=int(pad_id),
        pad_value=float(params.get("pad_value", -2.0)),
    )


def read_token_rows(adata, key, rows, pad_id) -> TokenArrays:
    """Stored token arrays of the cells at positions ``rows``, in that order."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    k = layout(key)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    params = stored_params(adata, key)
    return TokenArrays(
        tokens=np.asarray(adata.obsm[k["tokens"]][sorted_rows])[back],
        values=np.asarray(adata.obsm[k["values"]][sorted_rows])[back],
        lengths=adata.obs[k["n_tokens"]].to_numpy()[rows],
        pad_id=int(pad_id),
        pad_value=float(params.get("pad_value", -2.0)),
    )
