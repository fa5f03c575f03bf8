"""Streaming sums of attention maps over cells, indexed by gene (torch; no AnnData here).

Per cell, attention is a ``[L, L]`` map between token *positions*; the same gene sits at a
different position in every cell. :class:`AttentionSums` maps positions to gene indices and adds
each cell's map into gene × gene sums per group, with the number of cells in which both genes
were present, so memory is bounded by ``groups × slots × genes²`` however many cells stream by.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["AttentionSums", "average_ranks", "pair_means", "rank_normalize", "raw_scores"]


def pair_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``sums / counts`` per slot, NaN where two genes never met in a cell."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def average_ranks(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Ranks along the last dimension among ``valid`` entries, ties averaged, scaled to [0, 1].

    The smallest valid entry gets 0, the largest 1 (``rank / (n - 1)``); entries outside
    ``valid`` get meaningless values that callers must ignore. ``valid`` broadcasts to ``x``.
    """
    valid = valid.expand(x.shape)
    big = torch.where(valid, x, torch.full_like(x, math.inf))
    ordered, order = big.sort(dim=-1)
    width = ordered.shape[-1]
    # in sorted order, equal values form runs; an entry's average rank is its run's midpoint
    starts = torch.ones(ordered.shape, dtype=torch.bool, device=x.device)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    if bool((starts | ordered.isinf()).all()):  # no ties among valid entries: rank = position
        mid = torch.arange(width, dtype=x.dtype, device=x.device).expand(ordered.shape)
    else:
        # runs numbered across the flattened rows (each row starts a run, none spans two)
        run = starts.view(-1).cumsum(0) - 1
        size = torch.bincount(run)
        first = size.cumsum(0) - size  # flat index of each run's first entry
        row_start = torch.arange(0, run.numel(), width, device=x.device)
        local = first[run].view(-1, width) - row_start[:, None]
        mid = (local.to(x.dtype) + (size[run].view(-1, width) - 1).to(x.dtype) / 2).view(
            ordered.shape
        )
    ranks = torch.empty_like(ordered).scatter_(-1, order, mid)
    n = valid.sum(-1, keepdim=True).to(x.dtype)
    return ranks / (n - 1).clamp(min=1)


def rank_normalize(maps: torch.Tensor, tokens_used: torch.Tensor) -> torch.Tensor:
    """ScGPT's rank normalisation of attention maps: by rows, then by columns.

    Parameters
    ----------
    maps
        ``[B, ..., L, L]`` attention (probabilities or scores; row ranks are the same for both,
        as softmax keeps the order within a row).
    tokens_used
        Boolean ``[B, L]``: the tokens that take part (real gene tokens). Each row's keys are
        ranked among these tokens, then each column of the result among these queries.

    Returns
    -------
    Tensor like ``maps`` with values in [0, 1] at used query/key pairs.
    """
    extra = maps.dim() - 3
    shape = (tokens_used.shape[0],) + (1,) * extra
    keys = tokens_used.view(*shape, 1, tokens_used.shape[1])
    rows = average_ranks(maps, keys)
    cols = average_ranks(rows.transpose(-1, -2), keys)
    return cols.transpose(-1, -2)


def raw_scores(model, hidden_states, layer: int) -> torch.Tensor:
    """Pre-softmax attention scores ``Q Kᵀ / √d`` of one layer, ``[B, H, L, L]``.

    Recomputed from the layer's input (``hidden_states[layer]`` of
    :meth:`~sctransformer.nn.CellTransformer.forward`) with the layer's own projection, so
    ``softmax(scores + mask)`` is the probability map that the model returned.
    """
    block = model.layers[layer]
    x = hidden_states[layer]
    if block.pre_norm:
        x = block.attention_norm(x)
    att = block.attention
    b, length, _ = x.shape
    qkv = att.qkv(x).view(b, length, 3, att.num_heads, att.head_dim)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return torch.matmul(q, k.transpose(-1, -2)).float() / math.sqrt(att.head_dim)


class AttentionSums:
    """Gene × gene sums of attention maps per group, streamed over batches of cells.

    Parameters
    ----------
    n_groups
        Groups of cells (1 without ``groupby``).
    n_slots
        Maps kept apart per cell (1 when heads are averaged; one per layer/head otherwise).
    n_genes
        Genes tracked (``gene_index`` values ``0..n_genes - 1``).
    n_layers, n_heads
        Shape of the model, for the per-head attention each gene receives.
    """

    def __init__(self, n_groups: int, n_slots: int, n_genes: int, n_layers: int, n_heads: int):
        g = n_genes
        self.shape = (n_groups, n_slots, g)
        self.sums = torch.zeros(n_groups * n_slots * g * g, dtype=torch.float64)
        self.counts = torch.zeros(n_groups * g * g, dtype=torch.int64)
        self.received = torch.zeros(n_layers, n_heads, g, dtype=torch.float64)
        self.present = torch.zeros(g, dtype=torch.int64)
        self.n_cells = 0

    def add(self, maps: torch.Tensor, gene_index: torch.Tensor, groups: torch.Tensor) -> None:
        """Add one batch.

        Parameters
        ----------
        maps
            ``[B, S, L, L]``: map ``s`` of cell ``b`` from query position to key position.
        gene_index
            ``[B, L]`` long: the tracked gene at each position, -1 elsewhere (padding, special
            tokens, untracked genes). Such positions contribute nothing.
        groups
            ``[B]`` long group code of each cell.
        """
        _, n_slots, g = self.shape
        gene_index = gene_index.cpu()
        tracked = gene_index >= 0
        pair = tracked[:, :, None] & tracked[:, None, :]
        bb, pp, qq = pair.nonzero(as_tuple=True)
        gi, gj = gene_index[bb, pp], gene_index[bb, qq]
        grp = groups.cpu()[bb]
        values = maps.detach().cpu()[bb, :, pp, qq].double()  # [P, S]
        base = grp * n_slots
        for s in range(n_slots):
            flat = ((base + s) * g + gi) * g + gj
            self.sums.index_add_(0, flat, values[:, s])
        self.counts.index_add_(0, (grp * g + gi) * g + gj, torch.ones_like(gi))
        self.n_cells += int(gene_index.shape[0])

    def add_received(
        self, probs: list[torch.Tensor], gene_index: torch.Tensor, real: torch.Tensor
    ) -> None:
        """Per layer and head, the attention each tracked gene receives from all real tokens.

        ``probs``: one ``[B, H, L, L]`` probability map per layer; ``real``: ``[B, L]`` padding
        mask (True for real tokens). A gene's score in a cell is its column sum (1 = the share
        it would get under uniform attention).
        """
        gene_index = gene_index.cpu()
        tracked = gene_index >= 0
        bb, pp = tracked.nonzero(as_tuple=True)
        gi = gene_index[bb, pp]
        q_real = real.cpu()[:, None, :, None].float()
        for layer, p in enumerate(probs):
            col = (p.detach().cpu() * q_real).sum(-2)  # [B, H, L]
            received = col[bb, :, pp].double()  # [P, H]
            self.received[layer].index_add_(1, gi, received.T.contiguous())
        self.present.index_add_(0, gi, torch.ones_like(gi))

    def merge(self, other: AttentionSums) -> None:
        """Add another accumulator of the same shape (sums over more cells)."""
        if other.shape != self.shape:
            raise ValueError(f"cannot merge sums of shape {other.shape} into {self.shape}")
        self.sums += other.sums
        self.counts += other.counts
        self.received += other.received
        self.present += other.present
        self.n_cells += other.n_cells

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Sums ``[groups, slots, genes, genes]`` and co-occurrence counts ``[groups, g, g]``."""
        n_groups, n_slots, g = self.shape
        return (
            self.sums.view(n_groups, n_slots, g, g).numpy(),
            self.counts.view(n_groups, g, g).numpy(),
        )

    def weights(self, k: int | None) -> np.ndarray:
        """Mean map of group ``k`` (``None``: all cells), heads averaged (NaN: never met)."""
        sums = self.result()[0]
        s = sums.sum(axis=0) if k is None else sums[k]
        return pair_means(s, self.pair_counts(k)).mean(axis=0)

    def pair_counts(self, k: int | None) -> np.ndarray:
        """Cells in which both genes were present, in group ``k`` (``None``: all cells)."""
        counts = self.result()[1]
        return counts.sum(axis=0) if k is None else counts[k]

    def tensors(self) -> list[torch.Tensor]:
        """The sums that make up these statistics (added over ranks under ``torchrun``)."""
        return [self.sums, self.counts, self.received, self.present]

    def head_means(self) -> np.ndarray:
        """Mean attention received per layer, head and gene (NaN for genes never seen)."""
        present = self.present.numpy().astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(present > 0, self.received.numpy() / present, np.nan)
