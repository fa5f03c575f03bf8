"""The checked request of ``sct.tl.attention_grn``: every argument validated before any work
(:func:`plan_grn`), the pass over the cells that each rank makes (:meth:`GrnPlan.stream`) and
the parameters recorded with the result (:meth:`GrnPlan.params`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import _validate
from ._attention_compare import _check_group_sizes, _compare_labels
from ._attention_stream import (
    _check_normalize,
    _group_codes,
    resolve_heads,
    resolve_layers,
    select_genes,
)
from ._common import check_positive
from ._distributed import rank_slice
from ._grn_estimators import METHODS
from ._grn_stats import Permutations, Stream


@dataclass(frozen=True)
class GrnPlan:
    """What ``attention_grn`` computes, resolved and checked.

    ``layers`` are 0-based, ``heads`` 0-based or ``None`` (averaged); ``codes`` and
    ``group_names`` the cells' groups; ``labels`` the compared groups' cells (``None`` without
    ``compare``); ``cells`` the deletion sample (``None``: every cell) of ``n_used`` cells;
    ``sel`` the tracked genes' var positions and ``lookup`` token id → tracked gene. The other
    fields are the arguments of the same name.
    """

    method: str
    layers: list[int]
    heads: list[int] | None
    normalize: str | None
    codes: np.ndarray
    group_names: list[str]
    labels: np.ndarray | None
    cells: np.ndarray | None
    n_used: int
    min_cells: int
    sel: np.ndarray
    lookup: np.ndarray
    groupby: str | None
    genes: object
    symmetrize: bool
    top_k: int | None
    threshold: float | None
    compare: tuple[str, str] | None
    n_permutations: int
    n_top_genes: int
    batch_size: int
    chunk_size: int
    gene_key: str | None
    min_gene_fraction: float
    seed: int
    tokens_key: str

    def stream(self, adata, model, device, rank: int = 0, size: int = 1) -> Stream:
        """The pass of rank ``rank`` of ``size``: a contiguous share of the cells analysed
        (all of them in one process), with every cell's group and permuted groups.
        """
        perms = None
        if self.labels is not None:  # the same table on every rank: seeded, over all cells
            perms = Permutations(self.labels, self.n_permutations, self.seed)
        cells = self.cells
        if size > 1:
            lo, hi = rank_slice(self.n_used, rank, size)
            cells = np.arange(lo, hi) if cells is None else cells[lo:hi]
        chunk_size = self.chunk_size
        if self.method == "deletion":
            # the unperturbed states of a chunk are kept while its deletions run: ≤ 256 MiB
            width = model.max_length or adata.n_vars + 8
            cap = max(self.batch_size, 2**26 // (width * model.config.hidden_size))
            chunk_size = min(chunk_size, cap)
        return Stream(
            adata,
            model,
            lookup=self.lookup,
            codes=self.codes,
            n_groups=max(len(self.group_names), 1),
            perms=perms,
            batch_size=self.batch_size,
            chunk_size=chunk_size,
            device=device,
            tokens_key=self.tokens_key,
            gene_key=self.gene_key,
            min_gene_fraction=self.min_gene_fraction,
            cells=cells,
        )

    def params(self, model, device, n_cells: int, reuse: bool, var_names, world_size: int):
        """``uns[key]["params"]`` (``world_size`` recorded when above 1, under ``torchrun``)."""
        method = self.method
        normalize = "none" if self.normalize is None else self.normalize
        return model.record(
            device=device,
            seed=self.seed,
            method=method,
            groupby=self.groupby,
            layers=[i + 1 for i in self.layers],
            heads="mean" if self.heads is None else self.heads,
            genes=[] if self.genes is None else [str(var_names[i]) for i in self.sel],
            n_genes=len(self.sel),
            normalize=normalize if method == "attention" else "none",
            symmetrize=bool(self.symmetrize),
            top_k=0 if self.top_k is None else int(self.top_k),
            threshold="" if self.threshold is None else float(self.threshold),
            min_cells=int(self.min_cells),
            compare=[] if self.compare is None else [str(c) for c in self.compare],
            n_permutations=int(self.n_permutations) if self.compare is not None else 0,
            deletion_cells=int(self.n_used) if method == "deletion" else 0,
            batch_size=self.batch_size,
            n_cells=int(n_cells),
            tokens_reused=reuse,
            gene_key=self.gene_key,
            min_gene_fraction=self.min_gene_fraction,
            **({"world_size": world_size} if world_size > 1 else {}),
        )


def plan_grn(
    adata,
    model,
    *,
    groupby,
    layers,
    heads,
    genes,
    normalize,
    symmetrize,
    top_k,
    threshold,
    min_cells,
    method,
    compare,
    n_permutations,
    deletion_cells,
    n_top_genes,
    batch_size,
    chunk_size,
    gene_key,
    min_gene_fraction,
    min_genes,
    seed,
    tokens_key,
) -> GrnPlan:
    """Check every argument of ``attention_grn`` in turn (raising before any work) and resolve
    layers, heads, groups, the deletion sample, ``min_cells`` and the tracked genes.
    """
    model.check()
    _validate.check_nonempty(adata)
    layer_idx, head_idx = _check_estimator(model, method, layers, heads, normalize)
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
    return GrnPlan(
        method=method,
        layers=layer_idx,
        heads=head_idx,
        normalize=normalize,
        codes=codes,
        group_names=group_names,
        labels=labels,
        cells=cells,
        n_used=n_used,
        min_cells=min_cells,
        sel=sel,
        lookup=lookup,
        groupby=groupby,
        genes=genes,
        symmetrize=symmetrize,
        top_k=top_k,
        threshold=threshold,
        compare=compare,
        n_permutations=n_permutations,
        n_top_genes=n_top_genes,
        batch_size=batch_size,
        chunk_size=chunk_size,
        seed=seed,
        tokens_key=tokens_key,
        **match,
    )


def _check_estimator(model, method, layers, heads, normalize) -> tuple[list[int], list | None]:
    """0-based layers and heads (``None``: averaged) that ``method`` reads from ``model``."""
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
    return layer_idx, head_idx


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
