"""Gene-network estimators beside raw attention, streamed over cells in bounded memory.

``embedding``
    Cosine similarity of each gene's mean contextual embedding (the output of the model's
    last layer at the gene's token, averaged over the cells expressing the gene), the
    gene-embedding network of scGPT computed from contextual rather than input embeddings.
``deletion``
    Geneformer's in silico deletion read per gene pair: gene *i*'s token is removed from each
    cell that expresses it and the cosine distance ``1 - cos(h_j, h'_j)`` between gene *j*'s
    contextual embedding before and after is averaged over those cells.
``attention_grad``
    Attention × gradient: per layer and head, ``max(A ⊙ ∂ℓ/∂A, 0)`` where ``ℓ`` is the model's
    log-likelihood of the cell's own tokens under its pretraining head, averaged over heads
    and the chosen layers (gradient-weighted attention relevance).

Every estimator adds per-cell contributions into sums indexed by gene and by group of cells,
so memory is bounded by ``groups × genes²`` (plus ``groups × genes × hidden`` for embeddings)
and one batch of model states, never by the number of cells. Group permutations for condition
differences are more groups: each permutation assigns every compared cell to one of two
permuted groups and its contributions are added there in the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import logging as logg
from .._tokens import model_token_chunks
from ..train import infer
from ..train.data import collate, length_grouped_batches, model_inputs

METHODS = ("attention", "embedding", "deletion", "attention_grad")


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


# -- shared pass helpers ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    """One pass over ``adata``'s cells for ``model``: the tracked genes (``lookup``: token id
    -> gene position, -1 untracked), each cell's group code, the permutations (or ``None``)
    and how cells are read and batched.
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

    @property
    def n_genes(self) -> int:
        """Genes tracked."""
        return int((self.lookup >= 0).sum())

    def pair_stats(self) -> tuple[PairStats, PairStats | None]:
        """Empty pair sums of the groups, and of the permuted groups (``None``: no permutations)."""
        g = self.n_genes
        perm = PairStats(2 * self.perms.n, g) if self.perms is not None else None
        return PairStats(self.n_groups, g), perm

    def chunks(self, cells=None):
        """``(start, stop, arrays)`` of the cells (``cells``: positions, ``None``: all)."""
        return model_token_chunks(
            self.adata,
            self.model,
            key=self.tokens_key,
            chunk_size=self.chunk_size,
            gene_key=self.gene_key,
            min_gene_fraction=self.min_gene_fraction,
            cells=cells,
        )


# -- embedding similarity ----------------------------------------------------------------------------
def stream_embedding(run: Stream, *, layer):
    """Mean contextual gene embeddings per group (and per permuted group)."""
    adata, model, lookup, codes = run.adata, run.model, run.lookup, run.codes
    n_groups, perms, batch_size, device = run.n_groups, run.perms, run.batch_size, run.device
    g = int((lookup >= 0).sum())
    d = model.config.hidden_size
    stats = EmbedStats(n_groups, g, d)
    perm_stats = EmbedStats(2 * perms.n, g, d) if perms is not None else None
    lookup_t = torch.as_tensor(lookup)
    codes_t = torch.as_tensor(codes)
    bar = logg.progress(total=adata.n_obs, desc="embedding", unit="cells")
    n_cells = 0
    chunks = run.chunks()
    for a, _, data in chunks:
        for idx, batch, enc in infer.batches(
            model.module, data, batch_size=batch_size, device=device, layer=layer, progress=bar
        ):
            tokens = batch["tokens"].cpu()
            real = batch["padding_mask"].cpu()
            gene_index = torch.where(real, lookup_t[tokens], -1)
            hidden = enc.to_padded().cpu()
            bb, pp = (gene_index >= 0).nonzero(as_tuple=True)
            cells = a + idx
            cell_codes = codes_t[cells]
            stats.add(bb, gene_index[bb, pp], hidden[bb, pp], cell_codes)
            stats.add_pairs(gene_index, cell_codes)
            if perms is not None:
                for pc in perms.batch_codes(cells):
                    perm_stats.add(bb, gene_index[bb, pp], hidden[bb, pp], pc)
                    perm_stats.add_pairs(gene_index, pc)
            n_cells += len(idx)
    bar.close()
    return stats, perm_stats, n_cells


# -- in silico deletion -------------------------------------------------------------------------------
def stream_deletion(run: Stream, *, layer, cells):
    """Mean cosine shift of gene *j*'s contextual embedding when gene *i* is deleted.

    ``cells``: the positions of the cells used (``None``: all). Per chunk, the unperturbed
    states are computed once; then for each tracked gene the cells of the chunk that express
    it are re-run without it, in length-grouped batches.
    """
    from ._perturb import perturb_tokens

    adata, model, lookup, codes = run.adata, run.model, run.lookup, run.codes
    perms, batch_size, device = run.perms, run.batch_size, run.device
    stats, perm_stats = run.pair_stats()
    lookup_t = torch.as_tensor(lookup)
    codes_t = torch.as_tensor(codes)
    is_gene = np.asarray(model.vocab.is_gene)
    tracked_ids = np.flatnonzero(lookup >= 0)
    total = adata.n_obs if cells is None else len(cells)
    bar = logg.progress(total=total, desc="deletion", unit="cells")
    n_cells = 0
    chunks = run.chunks(cells)
    for a, b, data in chunks:
        glob = np.arange(a, b) if cells is None else np.asarray(cells[a:b])
        width = data.tokens.shape[1]
        base = torch.zeros(len(data), width, model.config.hidden_size)
        for idx, _, enc in infer.batches(
            model.module, data, batch_size=batch_size, device=device, layer=layer
        ):
            h = enc.to_padded().cpu()
            base[torch.as_tensor(idx), : h.shape[1]] = h
        tok_t = torch.as_tensor(data.tokens.astype(np.int64))
        real = torch.arange(width)[None, :] < torch.as_tensor(data.lengths)[:, None]
        gene_index_all = torch.where(real, lookup_t[tok_t], -1)
        for gid in tracked_ids:
            pert, rows, src = perturb_tokens(
                data, int(gid), mode="delete", is_gene=is_gene, max_length=width
            )
            if len(rows) == 0:
                continue
            src_t = torch.as_tensor(src)
            for idx, _, enc in infer.batches(
                model.module, pert, batch_size=batch_size, device=device, layer=layer
            ):
                h = enc.to_padded().cpu()  # [B, L', d]
                s = src_t[idx, : h.shape[1]]
                orig_rows = torch.as_tensor(rows[idx])
                valid = s >= 0
                bb, pp = valid.nonzero(as_tuple=True)
                col = s[bb, pp]
                cell = orig_rows[bb]
                gj = gene_index_all[cell, col]
                keep = gj >= 0
                bb, pp, col, cell, gj = bb[keep], pp[keep], col[keep], cell[keep], gj[keep]
                before = base[cell, col]
                after = h[bb, pp]
                cos = torch.nn.functional.cosine_similarity(before, after, dim=-1, eps=1e-12)
                shift = (1 - cos).double()
                gi = torch.full_like(gj, int(lookup[gid]))
                cells_glob = glob[rows[idx]]
                # ``bb`` indexes the perturbed batch; group codes are per original cell
                batch_codes = codes_t[torch.as_tensor(cells_glob)]
                stats.add(bb, gi, gj, shift, batch_codes)
                if perms is not None:
                    for pc in perms.batch_codes(cells_glob):
                        perm_stats.add(bb, gi, gj, shift, pc)
        n_cells += len(data)
        bar.update(len(data))
    bar.close()
    return stats, perm_stats, n_cells


# -- attention × gradient -----------------------------------------------------------------------------
def _log_likelihood(module, hidden, batch, positions):
    """Sum over ``positions`` of the log-likelihood of the cell's own tokens (or values)."""
    heads = module.heads
    h = hidden[positions]
    if "mlm" in heads:
        logp = torch.log_softmax(heads["mlm"](h).float(), -1)
        return logp.gather(-1, batch["tokens"][positions][:, None]).sum()
    if "bins" in heads:
        n_bins = module.config.n_value_bins
        target = batch["values"][positions].long().clamp(0, n_bins - 1)
        logp = torch.log_softmax(heads["bins"](h).float(), -1)
        return logp.gather(-1, target[:, None]).sum()
    if "value" in heads:
        pred = heads["value"](h).float()
        return -((pred - batch["values"][positions]) ** 2).sum()
    if "ntp" in heads:
        logp = torch.log_softmax(heads["ntp"](hidden[:, :-1]).float(), -1)
        nxt = batch["tokens"][:, 1:]
        keep = positions[:, 1:]
        return logp.gather(-1, nxt[..., None])[..., 0][keep].sum()
    raise ValueError(
        "method='attention_grad' needs a pretraining head ('mlm', 'bins', 'value' or 'ntp') to "
        f"differentiate; the model has {list(heads)}"
    )


def attention_grad_maps(module, batch, layers, is_gene_t, objective="mlm") -> torch.Tensor:
    """``[B, L, L]`` attention × gradient relevance of one collated batch (heads, layers averaged)."""
    module.eval()
    tokens, values = model_inputs(module, batch)
    with torch.enable_grad():
        out = module(
            tokens,
            values,
            padding_mask=batch["padding_mask"],
            objective=objective,
            output_attentions=True,
            backend="math",
        )
        positions = batch["padding_mask"] & is_gene_t.to(tokens.device)[tokens]
        ll = _log_likelihood(module, out.last_hidden_state, batch, positions)
        maps = [out.attentions[i] for i in layers]
        grads = torch.autograd.grad(ll, maps)
    rel = torch.stack([(a * gr).clamp(min=0) for a, gr in zip(maps, grads, strict=True)], 1)
    return rel.mean(dim=(1, 2)).detach()  # [B, L, L]


def stream_attention_grad(run: Stream, *, layers):
    """Attention × gradient relevance summed per gene pair and group."""
    adata, model, lookup, codes = run.adata, run.model, run.lookup, run.codes
    perms, batch_size, device = run.perms, run.batch_size, run.device
    stats, perm_stats = run.pair_stats()
    lookup_t = torch.as_tensor(lookup)
    codes_t = torch.as_tensor(codes)
    is_gene_t = torch.as_tensor(np.asarray(model.vocab.is_gene))
    objective = "ntp" if model.metadata.get("objective") == "ntp" else "mlm"
    bar = logg.progress(total=adata.n_obs, desc="attention x gradient", unit="cells")
    n_cells = 0
    chunks = run.chunks()
    for a, _, data in chunks:
        for idx in length_grouped_batches(data.lengths, batch_size):
            batch = collate(data, idx, device)
            maps = attention_grad_maps(model.module, batch, layers, is_gene_t, objective).cpu()
            tokens = batch["tokens"].cpu()
            real = batch["padding_mask"].cpu()
            gene_index = torch.where(real, lookup_t[tokens], -1)
            bb, gi, gj, vals = pair_values(maps, gene_index)
            cells = a + idx
            add_pairs(stats, perm_stats, perms, cells, bb, gi, gj, vals, codes_t[cells])
            n_cells += len(idx)
            bar.update(len(idx))
    bar.close()
    return stats, perm_stats, n_cells


# -- condition differences -------------------------------------------------------------------------
def bh_fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values."""
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adj, 1.0)
    return out


def permutation_test(observed: np.ndarray, perm_diffs) -> np.ndarray:
    """Two-sided permutation p-values ``(1 + #{|d_perm| ≥ |d|}) / (1 + n)`` per entry.

    ``perm_diffs`` yields one difference matrix per permutation (NaN where a permuted group
    lacks the pair; such a permutation counts as exceeding, which keeps the test conservative).
    """
    exceed = np.zeros(observed.shape, dtype=np.int64)
    n = 0
    target = np.abs(observed)
    for d in perm_diffs:
        d = np.nan_to_num(np.abs(d), nan=np.inf)
        exceed += d >= target - 1e-9 * np.maximum(target, 1e-3)
        n += 1
    return (1 + exceed) / (1 + n)
