"""What the gene-network estimators of ``sct.tl.attention_grn`` add up, and how a pass reads cells.

Every estimator adds per-cell contributions into sums indexed by gene and by group of cells,
so memory is bounded by ``groups × genes²`` (plus ``groups × genes × hidden`` for embeddings)
and one batch of model states, never by the number of cells. Group permutations for condition
differences are more groups: each permutation assigns every compared cell to one of two
permuted groups and its contributions are added there in the same pass.

The sums are plain totals over cells, so passes over disjoint shares of the cells (the ranks
under ``torchrun``) add up to the pass over all of them: :meth:`tensors` lists what to add.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._tokens import model_token_chunks


# -- accumulators ----------------------------------------------------------------------------------
class PairStats:
    """Sums of per-cell pair values and co-occurrence counts, ``[groups, genes, genes]``."""

    def __init__(self, n_groups: int, n_genes: int):
        self.shape = (n_groups, n_genes)
        self.sums = torch.zeros(n_groups * n_genes * n_genes, dtype=torch.float64)
        self.counts = torch.zeros(n_groups * n_genes * n_genes, dtype=torch.int64)

    def add(self, cell, gi, gj, values, codes) -> None:
        """Add pair values; ``cell`` indexes ``codes`` (the group of each cell, -1 = none)."""
        _, g = self.shape
        grp = codes[cell]
        keep = grp >= 0
        if not bool(keep.all()):
            grp, gi, gj, values = grp[keep], gi[keep], gj[keep], values[keep]
        flat = (grp * g + gi) * g + gj
        self.sums.index_add_(0, flat, values.double())
        self.counts.index_add_(0, flat, torch.ones_like(flat))

    def weights(self, k: int | None) -> np.ndarray:
        """Mean value per pair in group ``k`` (``None``: all groups; NaN where never seen)."""
        n, g = self.shape
        s = _group(self.sums.view(n, g, g), k)
        c = _group(self.counts.view(n, g, g), k)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, s / np.maximum(c, 1), np.nan)

    def pair_counts(self, k: int | None) -> np.ndarray:
        n, g = self.shape
        return _group(self.counts.view(n, g, g), k)

    def tensors(self) -> list[torch.Tensor]:
        """The sums that make up these statistics (added over ranks under ``torchrun``)."""
        return [self.sums, self.counts]


class EmbedStats:
    """Per-gene sums of contextual embeddings ``[groups, genes, d]`` and co-occurrence counts."""

    def __init__(self, n_groups: int, n_genes: int, dim: int):
        self.shape = (n_groups, n_genes)
        self.vec = torch.zeros(n_groups * n_genes, dim, dtype=torch.float64)
        self.present = torch.zeros(n_groups * n_genes, dtype=torch.int64)
        self.pairs = PairStats(n_groups, n_genes)

    def add(self, cell, gene, vectors, codes) -> None:
        """Add ``vectors`` ``[P, d]`` of gene ``gene`` ``[P]`` in batch cell ``cell`` ``[P]``."""
        _, g = self.shape
        grp = codes[cell]
        keep = grp >= 0
        flat = grp[keep] * g + gene[keep]
        self.vec.index_add_(0, flat, vectors[keep].double())
        self.present.index_add_(0, flat, torch.ones_like(flat))

    def add_pairs(self, gene_index, codes) -> None:
        """Co-occurrence counts of a batch (``gene_index`` ``[B, L]``, -1 = not tracked)."""
        tracked = gene_index >= 0
        pair = tracked[:, :, None] & tracked[:, None, :]
        bb, pp, qq = pair.nonzero(as_tuple=True)
        gi, gj = gene_index[bb, pp], gene_index[bb, qq]
        self.pairs.add(bb, gi, gj, torch.zeros(len(bb), dtype=torch.float64), codes)

    def weights(self, k: int | None) -> np.ndarray:
        """Cosine similarity of the mean embeddings in group ``k`` (NaN for absent genes)."""
        n, g = self.shape
        vec = _group(self.vec.view(n, g, -1), k)
        cnt = _group(self.present.view(n, g), k)
        mean = vec / np.maximum(cnt, 1)[:, None]
        norm = np.linalg.norm(mean, axis=1)
        unit = mean / np.maximum(norm, 1e-12)[:, None]
        sim = unit @ unit.T
        absent = cnt == 0
        sim[absent, :] = np.nan
        sim[:, absent] = np.nan
        return sim

    def pair_counts(self, k: int | None) -> np.ndarray:
        return self.pairs.pair_counts(k)

    def tensors(self) -> list[torch.Tensor]:
        """The sums that make up these statistics (added over ranks under ``torchrun``)."""
        return [self.vec, self.present, *self.pairs.tensors()]


def _group(t: torch.Tensor, k: int | None) -> np.ndarray:
    """Group ``k`` of a ``[groups, ...]`` tensor, or the sum over groups for ``None``."""
    return (t.sum(0) if k is None else t[k]).numpy()


class Permutations:
    """Random reassignments of the cells of two groups, each a pair of extra groups.

    ``labels``: 0 / 1 for cells of the two compared groups, -1 for the others. Each
    permutation shuffles the labels among the compared cells (group sizes kept); permutation
    ``p`` puts a cell into group ``2p + label``. The table costs one byte per compared cell and
    permutation.
    """

    def __init__(self, labels: np.ndarray, n_permutations: int, seed: int):
        rng = np.random.default_rng(seed)
        inside = np.flatnonzero(labels >= 0)
        self.n = n_permutations
        self.codes = np.full((n_permutations, len(labels)), -1, dtype=np.int8)
        for p in range(n_permutations):
            self.codes[p, inside] = rng.permutation(labels[inside])

    def batch_codes(self, cells: np.ndarray) -> list[torch.Tensor]:
        """Per permutation, the permuted group of each cell in ``cells`` (global positions)."""
        out = []
        for p in range(self.n):
            c = torch.as_tensor(self.codes[p, cells].astype(np.int64))
            out.append(torch.where(c >= 0, 2 * p + c, -1))
        return out


def pair_values(maps: torch.Tensor, gene_index: torch.Tensor):
    """Batch cell, gene pair and value of every tracked (query, key) pair of ``[B, L, L]`` maps."""
    tracked = gene_index >= 0
    pair = tracked[:, :, None] & tracked[:, None, :]
    bb, pp, qq = pair.nonzero(as_tuple=True)
    return bb, gene_index[bb, pp], gene_index[bb, qq], maps[bb, pp, qq].double()


def add_pairs(stats, perm_stats, perms, cells, bb, gi, gj, values, codes) -> None:
    """Add pair values to the group sums and, with permutations, to each permuted group."""
    stats.add(bb, gi, gj, values, codes)
    if perms is not None:
        for pc in perms.batch_codes(cells):
            perm_stats.add(bb, gi, gj, values, pc)


# -- one pass over the cells ----------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    """One pass over ``adata``'s cells for ``model``: the tracked genes (``lookup``: token id
    -> gene position, -1 untracked), each cell's group code, the permutations (or ``None``),
    how cells are read and batched, and which cells (``cells``: positions, ``None``: all).
    """

    adata: object
    model: object
    lookup: np.ndarray
    codes: np.ndarray
    n_groups: int
    perms: object
    batch_size: int
    chunk_size: int
    device: object
    tokens_key: str
    gene_key: str | None = None
    min_gene_fraction: float = 0.2
    cells: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        """Cells the pass reads."""
        return self.adata.n_obs if self.cells is None else len(self.cells)

    def positions(self, start: int, stop: int) -> np.ndarray:
        """Positions in ``adata`` of the cells ``start:stop`` of a chunk from :meth:`chunks`."""
        return np.arange(start, stop) if self.cells is None else np.asarray(self.cells[start:stop])

    @property
    def n_genes(self) -> int:
        """Genes tracked."""
        return int((self.lookup >= 0).sum())

    def inference(self, layer: int = -1):
        """How the pass runs the model: its batches and device, fp32, states of ``layer``."""
        from ..train.infer import Inference

        return Inference(self.batch_size, self.device, layer=layer)

    def pair_stats(self) -> tuple[PairStats, PairStats | None]:
        """Empty pair sums of the groups, and of the permuted groups (``None``: no permutations)."""
        g = self.n_genes
        perm = PairStats(2 * self.perms.n, g) if self.perms is not None else None
        return PairStats(self.n_groups, g), perm

    def chunks(self):
        """``(start, stop, arrays)`` of the cells read, in order (see :meth:`positions`)."""
        return model_token_chunks(
            self.adata,
            self.model,
            key=self.tokens_key,
            chunk_size=self.chunk_size,
            gene_key=self.gene_key,
            min_gene_fraction=self.min_gene_fraction,
            cells=self.cells,
        )
