"""``sct.tl.attention_grn``: gene–gene networks from attention, streamed over cells.

The front door checks the request (:mod:`._grn_plan`), runs one estimator over the cells
(:mod:`._grn_estimators`, :mod:`._attention_stream`), adds the ranks' sums under ``torchrun``
and writes the networks (:mod:`._grn_networks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from anndata import AnnData

from .. import logging as logg
from .._backed import check_writable
from .._tokens import stored_for
from ..models import resolve
from ._attention_maps import attention_maps
from ._attention_stream import resolve_heads, resolve_layers
from ._common import copy_of, resolve_device
from ._distributed import init as ranks
from ._distributed import local_device, world_size
from ._grn_estimators import estimate
from ._grn_networks import networks
from ._grn_plan import plan_grn

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

    Under ``torchrun`` every method runs sharded: each rank streams a contiguous slice of the
    cells analysed (for ``"deletion"``, of the ``deletion_cells`` sample); the per-group sums
    and co-occurrence counts, those of the permuted groups and the attention each gene
    receives are added on rank 0, which builds and writes the networks (equal to one process
    within float tolerance); the other ranks leave ``adata`` untouched and return ``None``.
    The deletion sample and the permutations are drawn from ``seed`` over all cells, alike on
    every rank, so no cell travels between ranks.

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
        Every parameter (``method`` names the estimator), with the model name, weights sha256,
        version, device and seed; ``world_size`` under ``torchrun``.
    """
    check_writable(adata, copy=copy)
    model = resolve(model)
    plan = plan_grn(
        adata, model, groupby=groupby, layers=layers, heads=heads, genes=genes,
        normalize=normalize, symmetrize=symmetrize, top_k=top_k, threshold=threshold,
        min_cells=min_cells, method=method, compare=compare, n_permutations=n_permutations,
        deletion_cells=deletion_cells, n_top_genes=n_top_genes, batch_size=batch_size,
        chunk_size=chunk_size, gene_key=gene_key, min_gene_fraction=min_gene_fraction,
        min_genes=min_genes, seed=seed, tokens_key=tokens_key,
    )  # fmt: skip
    ranked = world_size() > 1  # under torchrun: each rank its share of the cells, rank 0 writes
    rank, size = ranks() if ranked else (0, 1)
    dev = resolve_device(local_device() if ranked and device == "auto" else device)
    model.to(dev).eval()
    reuse = stored_for(adata, model, tokens_key)
    share = f"rank {rank}/{size}: " if ranked else ""
    start = logg.info(f"{share}computing {method} networks over {plan.n_used} cells")
    run = plan.stream(adata, model, dev, rank, size)
    est = estimate(run, method, layers=plan.layers, heads=plan.heads, normalize=normalize)
    if ranked:
        est = est.summed_to_rank0(rank)  # every sum is a total over cells: add the ranks'
        if rank != 0:
            return None  # rank 0 holds and writes the result
    mat, cnt, entries = networks(plan, est, adata.var_names, model.config)
    params = plan.params(model, dev, est.n_cells, reuse, adata.var_names, size)
    adata = copy_of(adata) if copy else adata
    adata.varp[key_added] = mat
    adata.varp[f"{key_added}_n_cells"] = cnt
    adata.uns[key_added] = {"params": params, **entries}
    logg.info(
        "    finished",
        time=start,
        deep=f"added varp[{key_added!r}], varp['{key_added}_n_cells'], uns[{key_added!r}]",
    )
    return adata if copy else None
