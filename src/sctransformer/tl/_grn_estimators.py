"""The gene-network estimators of ``sct.tl.attention_grn``, each one pass over the cells.

``attention``
    The attention maps themselves (:func:`~._attention_stream.stream_attention`).
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

:func:`estimate` runs one over the cells of a :class:`~._grn_stats.Stream` and returns an
:class:`Estimate`. Under ``torchrun`` each rank's estimate covers its share of the cells and
:meth:`Estimate.summed_to_rank0` adds the sums on rank 0, which then holds the estimate of all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .. import logging as logg
from ..train import infer
from ..train.data import collate, length_grouped_batches
from ._distributed import add_to_rank0, sum_to_rank0
from ._grn_stats import EmbedStats, Stream, add_pairs, pair_values

METHODS = ("attention", "embedding", "deletion", "attention_grad")


@dataclass(frozen=True)
class Estimate:
    """What one pass added up.

    ``stats`` and ``perm_stats`` (the permuted groups', or ``None``) answer ``weights(k)`` and
    ``pair_counts(k)`` per group ``k`` (``None``: all cells); ``attention`` is the
    :class:`~._attention_accum.AttentionSums` of ``method="attention"`` (the same object as
    ``stats``; per-head sums and the attention each gene receives), else ``None``.
    """

    stats: object
    perm_stats: object | None
    n_cells: int
    attention: object | None = None

    def summed_to_rank0(self, rank: int) -> Estimate:
        """Every rank's sums and cell count added on rank 0, in place (other ranks: not to be read)."""
        parts = [self.stats] if self.perm_stats is None else [self.stats, self.perm_stats]
        add_to_rank0([t for part in parts for t in part.tensors()], rank)
        return replace(self, n_cells=int(sum_to_rank0(np.array([self.n_cells]), rank)[0]))


def estimate(run: Stream, method: str, *, layers: list[int], heads, normalize) -> Estimate:
    """Run ``method`` over the cells of ``run``; ``layers`` 0-based, ``heads`` for attention."""
    from ._attention_stream import stream_attention

    if method == "attention":
        acc, perm_stats = stream_attention(
            run, layers=layers, heads=heads, normalize=normalize, desc="attention"
        )
        return Estimate(acc, perm_stats, acc.n_cells, attention=acc)
    if method == "embedding":
        return Estimate(*stream_embedding(run, layer=layers[0] + 1))
    if method == "deletion":
        return Estimate(*stream_deletion(run, layer=layers[0] + 1))
    return Estimate(*stream_attention_grad(run, layers=layers))


# -- embedding similarity ----------------------------------------------------------------------------
def stream_embedding(run: Stream, *, layer):
    """Mean contextual gene embeddings per group (and per permuted group)."""
    model, lookup, codes = run.model, run.lookup, run.codes
    n_groups, perms = run.n_groups, run.perms
    g = int((lookup >= 0).sum())
    d = model.config.hidden_size
    stats = EmbedStats(n_groups, g, d)
    perm_stats = EmbedStats(2 * perms.n, g, d) if perms is not None else None
    lookup_t = torch.as_tensor(lookup)
    codes_t = torch.as_tensor(codes)
    bar = logg.progress(total=run.n_cells, desc="embedding", unit="cells")
    n_cells = 0
    chunks = run.chunks()
    for a, b, data in chunks:
        where = run.positions(a, b)
        for idx, batch, enc in infer.batches(
            model.module, data, run.inference(layer), progress=bar
        ):
            tokens = batch["tokens"].cpu()
            real = batch["padding_mask"].cpu()
            gene_index = torch.where(real, lookup_t[tokens], -1)
            hidden = enc.to_padded().cpu()
            bb, pp = (gene_index >= 0).nonzero(as_tuple=True)
            cells = where[idx]
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
def stream_deletion(run: Stream, *, layer):
    """Mean cosine shift of gene *j*'s contextual embedding when gene *i* is deleted.

    Over the cells of ``run`` (``run.cells``: a sample, or ``None`` for all). Per chunk, the
    unperturbed states are computed once; then for each tracked gene the cells of the chunk
    that express it are re-run without it, in length-grouped batches.
    """
    from ._perturb import perturb_tokens

    model, lookup, codes = run.model, run.lookup, run.codes
    perms, states = run.perms, run.inference(layer)
    stats, perm_stats = run.pair_stats()
    lookup_t = torch.as_tensor(lookup)
    codes_t = torch.as_tensor(codes)
    is_gene = np.asarray(model.vocab.is_gene)
    tracked_ids = np.flatnonzero(lookup >= 0)
    bar = logg.progress(total=run.n_cells, desc="deletion", unit="cells")
    n_cells = 0
    chunks = run.chunks()
    for a, b, data in chunks:
        glob = run.positions(a, b)
        width = data.tokens.shape[1]
        base = torch.zeros(len(data), width, model.config.hidden_size)
        for idx, _, enc in infer.batches(model.module, data, states):
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
            for idx, _, enc in infer.batches(model.module, pert, states):
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
    tokens = batch["tokens"]
    with torch.enable_grad():
        out = infer.attention_forward(module, batch, objective)
        positions = batch["padding_mask"] & is_gene_t.to(tokens.device)[tokens]
        ll = _log_likelihood(module, out.last_hidden_state, batch, positions)
        maps = [out.attentions[i] for i in layers]
        grads = torch.autograd.grad(ll, maps)
    rel = torch.stack([(a * gr).clamp(min=0) for a, gr in zip(maps, grads, strict=True)], 1)
    return rel.mean(dim=(1, 2)).detach()  # [B, L, L]


def stream_attention_grad(run: Stream, *, layers):
    """Attention × gradient relevance summed per gene pair and group."""
    model, lookup, codes = run.model, run.lookup, run.codes
    perms, batch_size, device = run.perms, run.batch_size, run.device
    stats, perm_stats = run.pair_stats()
    lookup_t = torch.as_tensor(lookup)
    codes_t = torch.as_tensor(codes)
    is_gene_t = torch.as_tensor(np.asarray(model.vocab.is_gene))
    objective = "ntp" if model.metadata.get("objective") == "ntp" else "mlm"
    bar = logg.progress(total=run.n_cells, desc="attention x gradient", unit="cells")
    n_cells = 0
    chunks = run.chunks()
    for a, b, data in chunks:
        where = run.positions(a, b)
        for idx in length_grouped_batches(data.lengths, batch_size):
            batch = collate(data, idx, device)
            maps = attention_grad_maps(model.module, batch, layers, is_gene_t, objective).cpu()
            tokens = batch["tokens"].cpu()
            real = batch["padding_mask"].cpu()
            gene_index = torch.where(real, lookup_t[tokens], -1)
            bb, gi, gj, vals = pair_values(maps, gene_index)
            cells = where[idx]
            add_pairs(stats, perm_stats, perms, cells, bb, gi, gj, vals, codes_t[cells])
            n_cells += len(idx)
            bar.update(len(idx))
    bar.close()
    return stats, perm_stats, n_cells
