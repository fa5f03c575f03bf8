"""``sct.tl.attention_grn``: gene–gene networks from attention, streamed over cells."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._backed import check_writable
from .._tokens import stored_for
from ..models import resolve
from ._attention_stream import (
    OVERALL,
    _check_normalize,
    _group_codes,
    resolve_heads,
    resolve_layers,
    select_genes,
    stream_attention,
)
from ._common import check_positive, copy_of, resolve_device

__all__ = ["attention_grn", "attention_maps", "resolve_heads", "resolve_layers"]


def _means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``sums / counts`` per slot, NaN where two genes never met in a cell."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _sparsify(weights, counts, sel, n_vars, *, top_k, threshold, min_cells):
    """Top-k targets per source gene after thresholding, as CSR in var coordinates."""
    g = len(sel)
    ok = (counts >= max(min_cells, 1)) & ~np.eye(g, dtype=bool) & np.isfinite(weights)
    if threshold is not None:
        ok &= weights >= threshold
    k = g if top_k is None else min(top_k, g)
    score = np.where(ok, weights, -np.inf)
    if k < g:
        cols = np.argpartition(-score, k - 1, axis=1)[:, :k]
    else:
        cols = np.broadcast_to(np.arange(g), (g, g))
    rows = np.repeat(np.arange(g), k)
    cols = np.asarray(cols).ravel()
    keep = ok[rows, cols]
    r, c = rows[keep], cols[keep]
    w = weights[r, c].astype(np.float32)
    n = counts[r, c].astype(np.int64)
    shape = (n_vars, n_vars)
    mat = sp.csr_matrix((w, (sel[r], sel[c])), shape=shape)
    cnt = sp.csr_matrix((n, (sel[r], sel[c])), shape=shape)
    mat.sort_indices()
    cnt.sort_indices()
    return mat, cnt, pd.DataFrame({"source": r, "target": c, "weight": w, "n_cells": n})


def attention_grn(
    adata: AnnData,
    model,
    *,
    groupby: str | None = None,
    layers: int | Sequence[int] | Literal["all"] = -1,
    heads: Literal["mean", "all"] | Sequence[int] = "mean",
    genes: Sequence[str] | None = None,
    normalize: Literal["rank", "softmax"] | None = "rank",
    symmetrize: bool = False,
    top_k: int | None = 20,
    threshold: float | None = None,
    min_cells: int = 1,
    n_top_genes: int = 10,
    batch_size: int = 16,
    chunk_size: int = 2048,
    device: str = "auto",
    gene_key: str | None = None,
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
    seed: int = 0,
    tokens_key: str = "sct",
    key_added: str = "sct_grn",
    copy: bool = False,
) -> AnnData | None:
    """Gene–gene networks from a transformer's attention, per group of cells.

    Each cell runs through the model's ``"math"`` attention path, the one that returns the
    attention probabilities. In every cell, the attention from gene *i*'s token (query) to gene
    *j*'s token (key) is mapped from token positions to genes and added to a gene × gene sum of
    the cell's group; the edge weight is that sum divided by the number of cells in which both
    genes are present (the co-occurrence count, which is kept). Cells stream through in batches
    and no per-cell map is stored, so memory is bounded by ``groups × genes²`` (times the number
    of heads kept apart) plus one batch of attention, never by the number of cells.

    Parameters
    ----------
    adata
        Cells × genes (counts), or already tokenized with the model's vocabulary.
    model
        A model, a registry name or a checkpoint folder.
    groupby
        ``obs`` column: one network per group besides the one over all cells.
    layers
        Which layers' attention: ``-1`` the last (default), ``1..n`` from the bottom, a list of
        those (averaged), or ``"all"``.
    heads
        ``"mean"`` averages the heads (after normalisation); ``"all"`` or a list of 0-based head
        indices also keeps each selected (layer, head) network apart in ``uns[key]["heads"]``
        (the main network is then their mean).
    genes
        Track only these genes (``var_names``); default: every gene in the vocabulary. Other
        genes still take part in the model's attention; they just get no rows or columns.
    normalize
        What is averaged over cells. ``"rank"`` (scGPT's rank normalisation): within each cell
        and head, each query's attention is replaced by the ranks of its keys, then each key's
        column by the ranks of its queries (ties averaged, ranks scaled to [0, 1], over the
        cell's gene tokens). ``"softmax"``: the attention probabilities themselves.
        ``None``: the raw scores ``q·k/√d`` before softmax (as scGPT reads them).
    symmetrize
        Replace the weights ``W`` by ``(W + Wᵀ) / 2`` (undirected networks).
    top_k
        Keep this many targets per source gene (``None``: all), after ``threshold`` and
        ``min_cells``. Self-edges are never kept.
    threshold
        Drop edges whose weight is below this value.
    min_cells
        Drop edges between genes that met in fewer cells.
    n_top_genes
        Genes listed per layer and head in ``uns[key]["head_scores"]``.
    batch_size
        Cells per forward pass; attention memory is about
        ``batch_size × layers × heads × length² × 4`` bytes.
    chunk_size
        Cells tokenized at a time.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, …
    gene_key, min_gene_fraction, min_genes, seed
        As in :func:`sctransformer.tl.embed_cells`.
    tokens_key
        Prefix of the token arrays written by :func:`sctransformer.pp.tokenize` (reused when
        they were made with the model's vocabulary).
    key_added
        Key of the results.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the copy. Writes (``sct_grn`` stands for ``key_added``):

    ``varp["sct_grn"]``
        CSR genes × genes over all cells: row = source (query) gene, column = target (key)
        gene, value = mean normalised attention; top ``top_k`` per row.
    ``varp["sct_grn_n_cells"]``
        CSR with the same pattern: cells in which both genes were present.
    ``uns["sct_grn"]["groups"][g]``
        The same network per group (with ``groupby``).
    ``uns["sct_grn"]["heads"]["layer{l}_head{h}"]``
        Per layer (1-based) and head (0-based) networks when ``heads`` is not ``"mean"``.
    ``uns["sct_grn"]["edges"]``
        Tidy DataFrame of every kept edge: ``source``, ``target``, ``weight``, ``group``
        (``"all"`` for the network over all cells), ``n_cells``.
    ``uns["sct_grn"]["head_scores"]``
        ``{"genes", "scores"}`` arrays of shape layers × heads × ``n_top_genes`` (every layer
        and head of the model): the genes that receive the most attention in each head, scored
        by their mean column sum of attention probabilities (1 = the share under uniform
        attention), plus ``"layers"`` (1-based) and ``"heads"`` (0-based).
    ``uns["sct_grn"]["params"]``
        Every parameter, with the model name, weights sha256, version, device and seed.
    """
    check_writable(adata, copy=copy)
    model = resolve(model)
    model.check()
    _validate.check_nonempty(adata)
    cfg = model.config
    layer_idx = resolve_layers(layers, cfg.num_layers)
    head_idx = resolve_heads(heads, cfg.num_heads)
    _check_normalize(normalize)
    if top_k is not None and (isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    check_positive(batch_size=batch_size, chunk_size=chunk_size, n_top_genes=n_top_genes)
    codes, group_names = _group_codes(adata, groupby)
    match = dict(gene_key=gene_key, min_gene_fraction=min_gene_fraction)
    model.check_genes(adata, min_genes=min_genes, **match)
    sel, lookup = select_genes(adata, model, genes, gene_key)
    dev = resolve_device(device)
    model.to(dev).eval()
    reuse = stored_for(adata, model, tokens_key)
    start = logg.info(f"computing attention networks over {adata.n_obs} cells")
    acc = stream_attention(
        adata,
        model,
        lookup=lookup,
        codes=codes,
        n_groups=max(len(group_names), 1),
        layers=layer_idx,
        heads=head_idx,
        normalize=normalize,
        batch_size=batch_size,
        chunk_size=chunk_size,
        device=dev,
        tokens_key=tokens_key,
        desc="attention",
        **match,
    )
    sums, counts = acc.result()
    var_names = np.asarray(adata.var_names.astype(str), dtype=object)
    n_vars = adata.n_vars
    opts = dict(top_k=top_k, threshold=threshold, min_cells=min_cells)

    def network(s: np.ndarray, c: np.ndarray):
        w = _means(s, c).mean(axis=0)
        if symmetrize:
            w = (w + w.T) / 2
        return _sparsify(w, c, sel, n_vars, **opts)

    all_sums, all_counts = sums.sum(axis=0), counts.sum(axis=0)
    mat, cnt, edges = network(all_sums, all_counts)
    frames = [edges.assign(group=OVERALL)]
    group_mats = {}
    for i, g in enumerate(group_names):
        group_mats[g], _, e = network(sums[i], counts[i])
        frames.append(e.assign(group=g))
    per_head = {}
    if head_idx is not None:
        slots = [(li, h) for li in layer_idx for h in head_idx]
        for s, (li, h) in enumerate(slots):
            per_head[f"layer{li + 1}_head{h}"] = network(all_sums[s : s + 1], all_counts)[0]
    edges = pd.concat(frames, ignore_index=True)
    edges["source"] = var_names[sel[edges["source"].to_numpy()]]
    edges["target"] = var_names[sel[edges["target"].to_numpy()]]
    edges["group"] = pd.Categorical(edges["group"], categories=[OVERALL, *group_names])
    edges = edges.sort_values(["group", "weight"], ascending=[True, False], kind="stable")
    edges = edges[["source", "target", "weight", "group", "n_cells"]].reset_index(drop=True)

    head_means = acc.head_means()  # [layers, heads, genes]
    k = min(n_top_genes, len(sel))
    order = np.argsort(-np.nan_to_num(head_means, nan=-np.inf), axis=-1, kind="stable")[..., :k]
    head_scores = {
        "genes": var_names[sel][order].astype(str),
        "scores": np.take_along_axis(head_means, order, axis=-1).astype(np.float32),
        "layers": np.arange(1, cfg.num_layers + 1),
        "heads": np.arange(cfg.num_heads),
    }
    uns = {
        "params": model.record(
            device=dev,
            seed=seed,
            groupby=groupby,
            layers=[i + 1 for i in layer_idx],
            heads="mean" if head_idx is None else head_idx,
            genes=[] if genes is None else [str(var_names[i]) for i in sel],
            n_genes=len(sel),
            normalize="none" if normalize is None else normalize,
            symmetrize=bool(symmetrize),
            top_k=0 if top_k is None else int(top_k),
            threshold="" if threshold is None else float(threshold),
            min_cells=int(min_cells),
            batch_size=batch_size,
            n_cells=int(acc.n_cells),
            tokens_reused=reuse,
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
        ),
        "edges": edges,
        "head_scores": head_scores,
    }
    if group_names:
        uns["groups"] = group_mats
    if per_head:
        uns["heads"] = per_head
    adata = copy_of(adata) if copy else adata
    adata.varp[key_added] = mat
    adata.varp[f"{key_added}_n_cells"] = cnt
    adata.uns[key_added] = uns
    logg.info(
        "    finished",
        time=start,
        deep=f"added varp[{key_added!r}], varp['{key_added}_n_cells'], uns[{key_added!r}]",
    )
    return adata if copy else None


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
    acc = stream_attention(
        sub,
        model,
        lookup=lookup,
        codes=np.zeros(sub.n_obs, dtype=np.int64),
        n_groups=1,
        layers=layer_idx,
        heads=head_idx,
        normalize=normalize,
        batch_size=batch_size,
        chunk_size=chunk_size,
        device=dev,
        tokens_key=tokens_key,
        desc="attention",
    )
    sums, counts = acc.result()
    maps = _means(sums[0], counts[0]).reshape(len(layer_idx), len(head_idx), len(sel), len(sel))
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
