"""The attention pass of ``sct.tl.attention_grn``: argument checks, gene selection and the
streaming accumulation over cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from ..train import infer

OVERALL = "all"  # group name of the network over all cells
_NORMALIZE = ("rank", "softmax", None)


# -- argument checks (all raise before anything is computed or written) --------------------------


def resolve_layers(layers, n_layers: int) -> list[int]:
    """0-based layer indices from ``-1`` (last), 1-based positions, a list of those, or "all"."""
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers={layers!r}; use an int, a list of ints or 'all'")
        return list(range(n_layers))
    seq = [layers] if np.isscalar(layers) else list(layers)
    if not seq:
        raise ValueError("layers is empty; pass e.g. layers=-1 (the last layer)")
    out: list[int] = []
    for layer in seq:
        ok = isinstance(layer, int | np.integer) and not isinstance(layer, bool)
        if not ok or layer == 0 or not -n_layers <= layer <= n_layers:
            raise ValueError(
                f"layer {layer!r} is out of range for a {n_layers}-layer model; use "
                f"1..{n_layers} or -1..-{n_layers} (-1 = last layer), or 'all'"
            )
        i = int(layer) - 1 if layer > 0 else n_layers + int(layer)
        if i in out:
            raise ValueError(f"layers lists layer {layer!r} twice")
        out.append(i)
    return out


def resolve_heads(heads, n_heads: int) -> list[int] | None:
    """``None`` for "mean" (heads averaged), else 0-based head indices kept apart."""
    if isinstance(heads, str):
        if heads == "mean":
            return None
        if heads == "all":
            return list(range(n_heads))
        raise ValueError(f"heads={heads!r}; use 'mean', 'all' or a list of head indices")
    seq = [heads] if np.isscalar(heads) else list(heads)
    if not seq:
        raise ValueError("heads is empty; use 'mean', 'all' or a list of head indices")
    out: list[int] = []
    for h in seq:
        ok = isinstance(h, int | np.integer) and not isinstance(h, bool)
        if not ok or not 0 <= h < n_heads:
            raise ValueError(
                f"head {h!r} is out of range: the model has {n_heads} heads, 0..{n_heads - 1}"
            )
        if int(h) in out:
            raise ValueError(f"heads lists head {h!r} twice")
        out.append(int(h))
    return out


def _check_normalize(normalize) -> None:
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize={normalize!r}; use 'rank', 'softmax' or None")


def select_genes(
    adata: AnnData, model, genes, gene_key: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Var positions of the tracked genes and a vocabulary id → gene index lookup.

    ``genes=None`` tracks every gene of the data that the vocabulary knows, in var order;
    otherwise the given names (``var_names``, or the model's ``gene_key`` column) in the
    given order.
    """
    vocab = model.vocab
    names = model.gene_names(adata, gene_key)
    var_ids = vocab.encode_genes(names)
    if genes is None:
        sel = np.flatnonzero(var_ids >= 0)
        if len(sel) == 0:
            raise ValueError(
                "none of the data's genes are in the model's vocabulary; check var_names (or "
                "the model's gene_key column)"
            )
    else:
        genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
        if not genes:
            raise ValueError("genes is empty; pass gene names or None for every gene")
        _validate.check_unique(genes, what="names in genes")
        by_var = pd.Index(adata.var_names).get_indexer(genes)
        by_key = pd.Index(names).get_indexer(genes) if names is not None else by_var
        pos = np.where(by_var >= 0, by_var, by_key)
        missing = [g for g, p in zip(genes, pos, strict=True) if p < 0]
        if missing:
            raise ValueError(f"genes not found in adata.var_names: {missing[:10]}")
        unknown = [g for g, p in zip(genes, pos, strict=True) if var_ids[p] < 0]
        if unknown:
            raise ValueError(
                f"genes not in the model's vocabulary: {unknown[:10]}; the model cannot attend "
                "to them"
            )
        sel = pos.astype(np.int64)
    lookup = np.full(len(vocab), -1, dtype=np.int64)
    lookup[var_ids[sel]] = np.arange(len(sel))
    return sel, lookup


def _group_codes(adata: AnnData, groupby: str | None) -> tuple[np.ndarray, list[str]]:
    if groupby is None:
        return np.zeros(adata.n_obs, dtype=np.int64), []
    col = _validate.obs_column(adata, groupby, fix="fill them or subset the cells first")
    cat = col.astype("category").cat.remove_unused_categories()
    names = [str(c) for c in cat.cat.categories]
    if OVERALL in names:
        raise ValueError(
            f"obs[{groupby!r}] has a group named {OVERALL!r}, the name of the network over all "
            "cells; rename that group"
        )
    return cat.cat.codes.to_numpy().astype(np.int64), names


# -- the streaming pass ---------------------------------------------------------------------------


def stream_attention(
    run, *, layers: list[int], heads: list[int] | None, normalize: str | None, desc: str
):
    """Run the model over the cells of ``run`` (a :class:`~._grn_stats.Stream`): the filled
    :class:`AttentionSums`, and with ``run.perms`` (:class:`~._grn_stats.Permutations`) the
    head-averaged pair sums of each permuted pair of groups (else ``None``).

    Cells are read ``chunk_size`` at a time (tokenized on the fly unless ``obsm`` holds the
    model's tokens), grouped by length into batches padded to their longest cell, and each
    batch's attention is added to the sums and dropped: nothing per cell is kept.
    """
    import torch

    from ._attention_accum import AttentionSums, rank_normalize, raw_scores
    from ._grn_stats import PairStats, pair_values

    model, lookup, codes = run.model, run.lookup, run.codes
    n_groups, perms = run.n_groups, run.perms
    n_genes = run.n_genes
    n_slots = 1 if heads is None else len(layers) * len(heads)
    cfg = model.config
    acc = AttentionSums(n_groups, n_slots, n_genes, cfg.num_layers, cfg.num_heads)
    perm_stats = None if perms is None else PairStats(2 * perms.n, n_genes)
    is_gene = torch.as_tensor(np.asarray(model.vocab.is_gene))
    lookup_t = torch.as_tensor(lookup)
    objective = "ntp" if model.metadata.get("objective") == "ntp" else "mlm"
    bar = logg.progress(total=run.n_cells, desc=desc, unit="cells")
    chunks = run.chunks()
    for a, b, data in chunks:
        where = run.positions(a, b)
        for idx, batch, out in infer.batches(
            model.module,
            data,
            run.inference(),
            attentions=True,
            hidden_states=normalize is None,
            objective=objective,
            progress=bar,
        ):
            with torch.inference_mode():
                tokens = batch["tokens"].cpu()
                real = batch["padding_mask"].cpu()
                gene_index = torch.where(real, lookup_t[tokens], -1)
                if normalize is None:
                    maps = torch.stack([raw_scores(model, out.hidden_states, i) for i in layers], 1)
                else:
                    maps = torch.stack([out.attentions[i] for i in layers], 1)
                maps = maps.cpu()  # [B, layers, H, L, L]
                if normalize == "rank":
                    maps = rank_normalize(maps, is_gene[tokens] & real)
                if heads is None:
                    maps = maps.mean(dim=(1, 2))[:, None]
                else:
                    maps = maps[:, :, heads].flatten(1, 2)
                acc.add(maps, gene_index, torch.as_tensor(codes[where[idx]]))
                acc.add_received(list(out.attentions), gene_index, real)
                if perms is not None:
                    bb, gi, gj, vals = pair_values(maps.mean(1), gene_index)
                    for pc in perms.batch_codes(where[idx]):
                        perm_stats.add(bb, gi, gj, vals, pc)
            del out, maps
    bar.close()
    return acc, perm_stats
