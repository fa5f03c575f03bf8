"""``sct.tl.attention_grn``: gene–gene networks from attention, streamed over cells."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._backed import check_writable
from .._tokens import stored_for
from ..models import resolve
from ._attention_compare import _check_group_sizes, _compare_labels, _compare_table, _sparsify
from ._attention_maps import _means, attention_maps
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
from ._grn_estimators import (
    METHODS,
    Permutations,
    Stream,
    stream_attention_grad,
    stream_deletion,
    stream_embedding,
)

__all__ = ["attention_grn", "attention_maps", "resolve_heads", "resolve_layers"]


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
    min_cells: int | None = None,
    method: Literal["attention", "embedding", "deletion", "attention_grad"] = "attention",
    compare: tuple[str, str] | None = None,
    n_permutations: int = 200,
    deletion_cells: int | None = 1000,
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
    """Gene–gene networks from a transformer, per group of cells, with one of four estimators.

    ``method="attention"`` (default): each cell runs through the model's ``"math"`` attention
    path, the one that returns the attention probabilities. In every cell, the attention from
    gene *i*'s token (query) to gene *j*'s token (key) is mapped from token positions to genes
    and added to a gene × gene sum of the cell's group; the edge weight is that sum divided by
    the number of cells in which both genes are present (the co-occurrence count, which is
    kept). ``"embedding"``: cosine similarity of the genes' mean contextual embeddings (the
    states of layer ``layers`` at each gene's token, averaged over the cells expressing it;
    scGPT's gene-embedding network, from contextual states). ``"deletion"`` (Geneformer's in
    silico deletion, per pair): the weight of *i* → *j* is the mean cosine distance between
    gene *j*'s contextual embedding before and after deleting gene *i*'s token, over the cells
    expressing both (row = deleted gene). ``"attention_grad"``: attention × gradient, per head
    ``max(A ⊙ ∂ℓ/∂A, 0)`` with ``ℓ`` the model's log-likelihood of the cell's own tokens under
    its pretraining head (``mlm``, ``bins``, ``value`` or ``ntp``), averaged over heads and
    ``layers``, then over cells like attention.

    Cells stream through in batches and no per-cell map is stored, so memory is bounded by
    ``groups × genes²`` (times the number of heads kept apart) plus one batch of model states,
    never by the number of cells. With ``compare``, each of ``n_permutations`` random
    reassignments of the two groups' cells is two more groups filled in the same pass
    (``2 × n_permutations × genes²`` sums and counts, and one byte per cell and permutation).

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
        Drop edges between genes that met in fewer cells. ``None`` (default): 5% of the cells
        analysed, rounded up, at most 10 (so pairs seen together in one or two cells never
        top a network). The count of every kept edge is in ``varp["…_n_cells"]``.
    method
        ``"attention"``, ``"embedding"``, ``"deletion"`` or ``"attention_grad"`` (see above).
        ``heads`` and ``normalize`` apply to ``"attention"`` only; ``"embedding"`` and
        ``"deletion"`` read one layer (``layers=-1``, the last, by default).
    compare
        Two groups of ``groupby``, ``(a, b)``: also test which edges differ between them.
        The edges kept in either group's network (``top_k``, ``threshold``, ``min_cells`` in
        both groups) get ``difference = weight_a - weight_b`` and a two-sided permutation
        p-value: the share of ``n_permutations`` random relabellings of the two groups' cells
        (sizes kept) whose difference is at least as large in absolute value, ``(1 + k) /
        (1 + n)``, with Benjamini–Hochberg ``fdr`` over the tested edges. A permutation in
        which a permuted group lacks the pair counts as exceeding (conservative).
    n_permutations
        Permutations for ``compare``; the smallest possible p-value is ``1 / (1 + n)``.
    deletion_cells
        ``method="deletion"`` runs every tracked gene's deletion in each cell (one forward pass
        per gene and cell); this many cells, drawn at random with ``seed``, are used
        (``None``: all cells).
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
        CSR genes × genes over all cells: row = source gene (the query for attention, the
        deleted gene for deletion), column = target gene, value = the estimator's mean
        weight; top ``top_k`` per row.
    ``varp["sct_grn_n_cells"]``
        CSR with the same pattern: cells in which both genes were present.
    ``uns["sct_grn"]["groups"][g]``
        The same network per group (with ``groupby``).
    ``uns["sct_grn"]["heads"]["layer{l}_head{h}"]``
        Per layer (1-based) and head (0-based) networks when ``heads`` is not ``"mean"``.
    ``uns["sct_grn"]["edges"]``
        Tidy DataFrame of every kept edge: ``source``, ``target``, ``weight``, ``group``
        (``"all"`` for the network over all cells), ``n_cells``.
    ``uns["sct_grn"]["compare"]``
        With ``compare``: DataFrame ``source``, ``target``, ``weight_a``, ``weight_b``,
        ``difference``, ``n_cells_a``, ``n_cells_b``, ``pvalue``, ``fdr``, smallest p first.
    ``uns["sct_grn"]["head_scores"]`` (``method="attention"``)
        ``{"genes", "scores"}`` arrays of shape layers × heads × ``n_top_genes`` (every layer
        and head of the model): the genes that receive the most attention in each head, scored
        by their mean column sum of attention probabilities (1 = the share under uniform
        attention), plus ``"layers"`` (1-based) and ``"heads"`` (0-based).
    ``uns["sct_grn"]["params"]``
        Every parameter (``method`` names the estimator), with the model name, weights sha256, version, device and seed.
    """
    check_writable(adata, copy=copy)
    model = resolve(model)
    model.check()
    _validate.check_nonempty(adata)
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {list(METHODS)}")
    cfg = model.config
    layer_idx = resolve_layers(layers, cfg.num_layers)
    head_idx = resolve_heads(heads, cfg.num_heads)
    _check_normalize(normalize)
    if method != "attention" and head_idx is not None:
        raise ValueError(f"heads={heads!r} applies to method='attention' only; use heads='mean'")
    if method in ("embedding", "deletion") and len(layer_idx) != 1:
        raise ValueError(f"method={method!r} reads one layer's states; pass one layer in layers")
    if top_k is not None and (isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    check_positive(batch_size=batch_size, chunk_size=chunk_size, n_top_genes=n_top_genes)
    codes, group_names = _group_codes(adata, groupby)
    _check_group_sizes(codes, group_names, groupby)
    labels = _compare_labels(codes, group_names, groupby, compare, n_permutations)
    if deletion_cells is not None:
        check_positive(deletion_cells=deletion_cells)
    cells = None
    if method == "deletion" and deletion_cells is not None and deletion_cells < adata.n_obs:
        rng = np.random.default_rng(seed)
        cells = np.sort(rng.choice(adata.n_obs, deletion_cells, replace=False))
    n_used = adata.n_obs if cells is None else len(cells)
    min_cells = _resolve_min_cells(min_cells, n_used)
    match = dict(gene_key=gene_key, min_gene_fraction=min_gene_fraction)
    model.check_genes(adata, min_genes=min_genes, **match)
    sel, lookup = select_genes(adata, model, genes, gene_key)
    dev = resolve_device(device)
    model.to(dev).eval()
    reuse = stored_for(adata, model, tokens_key)
    start = logg.info(f"computing {method} networks over {n_used} cells")
    n_groups = max(len(group_names), 1)
    perms = None if labels is None else Permutations(labels, n_permutations, seed)
    common = dict(
        lookup=lookup,
        codes=codes,
        n_groups=n_groups,
        batch_size=batch_size,
        chunk_size=chunk_size,
        device=dev,
        tokens_key=tokens_key,
        **match,
    )
    run = Stream(adata, model, perms=perms, **common)
    acc = None
    if method == "attention":
        acc, perm_stats = stream_attention(
            run, layers=layer_idx, heads=head_idx, normalize=normalize, desc="attention"
        )
        stats = _AttentionView(acc)
        n_cells = acc.n_cells
    else:
        layer_arg = layer_idx[0] + 1
        if method == "embedding":
            stats, perm_stats, n_cells = stream_embedding(run, layer=layer_arg)
        elif method == "deletion":
            # the unperturbed states of a chunk are kept while its deletions run: ≤ 256 MiB
            width = model.max_length or adata.n_vars + 8
            cap = max(batch_size, 2**26 // (width * cfg.hidden_size))
            run = replace(run, chunk_size=min(chunk_size, cap))
            stats, perm_stats, n_cells = stream_deletion(run, layer=layer_arg, cells=cells)
        else:
            stats, perm_stats, n_cells = stream_attention_grad(run, layers=layer_idx)
    var_names = np.asarray(adata.var_names.astype(str), dtype=object)
    n_vars = adata.n_vars
    opts = dict(top_k=top_k, threshold=threshold, min_cells=min_cells)

    def sym(w: np.ndarray) -> np.ndarray:
        return (w + w.T) / 2 if symmetrize else w

    def network(k):
        return _sparsify(sym(stats.weights(k)), stats.pair_counts(k), sel, n_vars, **opts)

    mat, cnt, edges = network(None)
    frames = [edges.assign(group=OVERALL)]
    group_mats = {}
    for i, g in enumerate(group_names):
        group_mats[g], _, e = network(i)
        frames.append(e.assign(group=g))
    per_head = {}
    if head_idx is not None:
        all_sums, all_counts = acc.result()
        all_sums, all_counts = all_sums.sum(axis=0), all_counts.sum(axis=0)
        slots = [(li, h) for li in layer_idx for h in head_idx]
        for s, (li, h) in enumerate(slots):
            w = sym(_means(all_sums[s], all_counts))
            per_head[f"layer{li + 1}_head{h}"] = _sparsify(w, all_counts, sel, n_vars, **opts)[0]
    edges = pd.concat(frames, ignore_index=True)
    edges["source"] = var_names[sel[edges["source"].to_numpy()]]
    edges["target"] = var_names[sel[edges["target"].to_numpy()]]
    edges["group"] = pd.Categorical(edges["group"], categories=[OVERALL, *group_names])
    edges = edges.sort_values(["group", "weight"], ascending=[True, False], kind="stable")
    edges = edges[["source", "target", "weight", "group", "n_cells"]].reset_index(drop=True)
    compared = None
    if labels is not None:
        ia, ib = (group_names.index(str(c)) for c in compare)
        compared = _compare_table(
            stats, perm_stats, ia, ib, sym, sel, var_names, n_permutations, **opts
        )

    uns = {
        "params": model.record(
            device=dev,
            seed=seed,
            method=method,
            groupby=groupby,
            layers=[i + 1 for i in layer_idx],
            heads="mean" if head_idx is None else head_idx,
            genes=[] if genes is None else [str(var_names[i]) for i in sel],
            n_genes=len(sel),
            normalize=("none" if normalize is None else normalize)
            if method == "attention"
            else "none",
            symmetrize=bool(symmetrize),
            top_k=0 if top_k is None else int(top_k),
            threshold="" if threshold is None else float(threshold),
            min_cells=int(min_cells),
            compare=[] if compare is None else [str(c) for c in compare],
            n_permutations=int(n_permutations) if compare is not None else 0,
            deletion_cells=int(n_used) if method == "deletion" else 0,
            batch_size=batch_size,
            n_cells=int(n_cells),
            tokens_reused=reuse,
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
        ),
        "edges": edges,
    }
    if acc is not None:
        uns["head_scores"] = _head_scores(acc, n_top_genes, sel, var_names, cfg)
    if group_names:
        uns["groups"] = group_mats
    if per_head:
        uns["heads"] = per_head
    if compared is not None:
        uns["compare"] = compared
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


class _AttentionView:
    """:class:`AttentionSums` read like the other estimators' statistics (heads averaged)."""

    def __init__(self, acc):
        self.sums, self.counts = acc.result()

    def weights(self, k):
        s = self.sums.sum(axis=0) if k is None else self.sums[k]
        c = self.counts.sum(axis=0) if k is None else self.counts[k]
        return _means(s, c).mean(axis=0)

    def pair_counts(self, k):
        return self.counts.sum(axis=0) if k is None else self.counts[k]


def _head_scores(acc, n_top_genes, sel, var_names, cfg) -> dict:
    head_means = acc.head_means()  # [layers, heads, genes]
    k = min(n_top_genes, len(sel))
    order = np.argsort(-np.nan_to_num(head_means, nan=-np.inf), axis=-1, kind="stable")[..., :k]
    return {
        "genes": var_names[sel][order].astype(str),
        "scores": np.take_along_axis(head_means, order, axis=-1).astype(np.float32),
        "layers": np.arange(1, cfg.num_layers + 1),
        "heads": np.arange(cfg.num_heads),
    }


def _resolve_min_cells(min_cells, n_cells: int) -> int:
    """``None``: 5% of the cells, at least 1 and at most 10; else checked against the cells."""
    if min_cells is None:
        return int(max(1, min(10, math.ceil(0.05 * n_cells))))
    if isinstance(min_cells, bool) or not isinstance(min_cells, int | np.integer) or min_cells < 1:
        raise ValueError(f"min_cells must be a positive integer or None, got {min_cells!r}")
    if min_cells > n_cells:
        raise ValueError(
            f"min_cells={min_cells} is above the {n_cells} cells analysed: no edge could be kept; "
            "lower min_cells (or None for 5% of the cells, at most 10)"
        )
    return int(min_cells)
