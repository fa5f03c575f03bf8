"""``sct.tl.in_silico_perturb``: Geneformer-style deletion and overexpression of gene tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._tokens import model_tokens
from ..models import resolve
from ..tokenizers._encode import concat
from ..train import infer
from ..train.data import TokenArrays
from ._common import check_positive, copy_of

MODES = ("delete", "overexpress")


def perturb_tokens(
    data: TokenArrays,
    gene_id: int,
    *,
    mode: str,
    is_gene: np.ndarray,
    max_length: int,
) -> tuple[TokenArrays, np.ndarray, np.ndarray]:
    """Perturbed copies of the cells in ``data`` for one gene (vectorised, no loop per cell).

    ``delete`` removes the gene's token (cells without it are skipped); ``overexpress`` moves
    it to the first gene position, after ``<cls>`` and condition tokens, inserting it when the
    cell lacks it (the last gene drops out when the cell is at ``max_length``). For value
    inputs the moved gene takes the cell's highest value.

    Returns
    -------
    The perturbed arrays, the index of each one's source cell, and for each perturbed row the
    source column of every position (-1 for the inserted gene and for padding), which maps
    perturbed positions back to the original cell.
    """
    tok, val, lengths = data.tokens, data.values, data.lengths
    n, width = tok.shape
    cols = np.arange(width)
    real = cols[None, :] < lengths[:, None]
    hit = (tok == gene_id) & real
    present = hit.any(1)
    pos = hit.argmax(1)
    # leading non-gene tokens (<cls>, condition tokens)
    lead = ~is_gene[tok] & real
    prefix = np.where(lead.all(1), lengths, np.argmin(lead, axis=1))
    if mode == "delete":
        rows = np.flatnonzero(present)
        p = pos[rows][:, None]
        src = cols[None, :] + (cols[None, :] >= p)
        new_len = lengths[rows] - 1
        out_w = width
    else:
        rows = np.arange(n)
        out_w = width + 1
        c = np.arange(out_w)[None, :]
        pre = prefix[rows][:, None]
        p = np.where(present, pos, width + 1)[rows][:, None]  # absent: beyond every column
        src = np.where(c < pre, c, np.where(c == pre, -1, np.where(c <= p, c - 1, c)))
        new_len = np.minimum(lengths[rows] + (~present[rows]), max_length)
    new_len = new_len.astype(np.int64)
    valid = (np.arange(out_w)[None, :] < new_len[:, None]) & (src < width)
    src = np.where(valid, src, -1)
    take = np.clip(src, 0, width - 1)
    new_tok = np.where(src >= 0, np.take_along_axis(tok[rows], take, 1), data.pad_id)
    new_val = np.where(src >= 0, np.take_along_axis(val[rows], take, 1), data.pad_value)
    if mode == "overexpress":
        inserted = (src == -1) & (np.arange(out_w)[None, :] == prefix[rows][:, None])
        inserted &= np.arange(out_w)[None, :] < new_len[:, None]
        gene_vals = np.where(is_gene[tok[rows]] & real[rows], val[rows], -np.inf).max(1)
        gene_vals = np.where(np.isfinite(gene_vals), gene_vals, 0.0)
        new_tok = np.where(inserted, gene_id, new_tok)
        new_val = np.where(inserted, gene_vals[:, None], new_val)
        new_w = max(int(new_len.max()) if len(new_len) else 1, 1)
        new_tok, new_val, src = new_tok[:, :new_w], new_val[:, :new_w], src[:, :new_w]
    out = TokenArrays(
        tokens=new_tok.astype(data.tokens.dtype),
        values=new_val.astype(np.float32),
        lengths=new_len,
        pad_id=data.pad_id,
        pad_value=data.pad_value,
    )
    return out, rows, src


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-12)


def _hidden_rows(module, data: TokenArrays, run) -> list:
    """Per-cell token states ``[length, d]`` (float32 numpy), in cell order."""
    out: list = [None] * len(data)
    for idx, _, enc in infer.batches(module, data, run):
        h = enc.hidden.cpu().numpy()
        cu = enc.cu_seqlens.cpu().numpy()
        for k, i in enumerate(idx):
            out[i] = h[cu[k] : cu[k + 1]]
    return out


def in_silico_perturb(
    adata: AnnData,
    model,
    *,
    genes: Sequence[str],
    mode: Literal["delete", "overexpress"] = "delete",
    groupby: str | None = None,
    target: str | None = None,
    gene_shifts: bool = False,
    pooling: Literal["cls", "mean"] | None = None,
    layer: int | None = None,
    batch_size: int = 32,
    chunk_size: int = 256,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    device: str = "auto",
    gene_key: str | None = None,
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
    seed: int = 0,
    tokens_key: str = "sct",
    key_added: str = "sct_perturb",
    copy: bool = False,
) -> AnnData | None:
    """Delete or overexpress genes in silico and measure how each cell's embedding moves.

    Geneformer's in silico perturbation: ``"delete"`` removes a gene's token from every cell
    that expresses it; ``"overexpress"`` moves it to the front of the cell (right after
    ``<cls>`` and condition tokens; inserted where the cell lacks it). Each perturbed cell is
    re-embedded and compared with the unperturbed one by cosine distance. All perturbations of
    a chunk of cells go through the model together, in length-grouped batches.

    Parameters
    ----------
    adata
        Cells × genes (counts), or already tokenized with the model's vocabulary.
    model
        A model, registry name or checkpoint folder.
    genes
        Genes to perturb, one at a time (names as in ``var_names`` or the vocabulary).
    mode
        ``"delete"`` or ``"overexpress"``.
    groupby
        ``obs`` column: summarise per group.
    target
        A value of ``groupby``: also measure the shift toward that state (the mean unperturbed
        embedding of its cells): ``cos(perturbed, target) - cos(original, target)``, positive
        when the perturbation moves the cell toward the target.
    gene_shifts
        Also measure how the other genes' contextual embeddings move (mean cosine distance over
        the genes present in both versions of the cell).
    pooling, layer, batch_size, precision, device, tokens_key
        As in :func:`sctransformer.tl.embed_cells`.
    gene_key, min_gene_fraction, min_genes, seed
        As in :func:`sctransformer.tl.embed_cells`.
    chunk_size
        Cells perturbed at a time (memory bound).
    key_added
        Prefix of the keys written.
    copy
        Work on a copy.

    Returns
    -------
    ``None`` or the copy. Writes (``sct_perturb`` stands for ``key_added``):

    ``uns["sct_perturb"]["table"]``
        Tidy DataFrame, one row per gene × group: ``gene``, ``group`` (``"all"`` without
        ``groupby``), ``mode``, ``n_cells`` (cells perturbed), ``cell_shift`` (mean cosine
        distance of the cell embedding), ``cell_shift_sem``, and when asked ``gene_shift``,
        ``target_shift``, ``target_shift_sem``.
    ``obsm["sct_perturb_shift"]``
        DataFrame cells × genes of the cell shift (NaN where the gene was not perturbed, e.g.
        a deleted gene the cell does not express).
    ``uns["sct_perturb"]["params"]``
        Settings, model name, weights sha256, version, device and seed.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; use one of {list(MODES)}")
    if isinstance(genes, str):
        genes = [genes]
    genes = [str(g) for g in genes]
    if not genes:
        raise ValueError("genes is empty; name at least one gene to perturb")
    _validate.check_unique(genes, what="genes")
    check_positive(batch_size=batch_size, chunk_size=chunk_size)
    _validate.check_nonempty(adata)
    groups = _groups_of(adata, groupby, target)
    model = resolve(model)
    vocab = model.check()
    run = model.inference(
        batch_size=batch_size, device=device, precision=precision, layer=layer, pooling=pooling
    )
    match = dict(gene_key=gene_key, min_gene_fraction=min_gene_fraction)
    model.check_genes(adata, min_genes=min_genes, **match)
    ids = _gene_ids(model, adata, genes, mode=mode, gene_key=gene_key)
    model.to(run.device).eval()
    data = model_tokens(adata, model, key=tokens_key, **match)
    max_length = model.max_length or data.tokens.shape[1] + 1
    is_gene = np.asarray(vocab.is_gene)

    start = logg.info(f"perturbing {len(genes)} gene(s) ({mode}) in {adata.n_obs} cells")
    n = len(data)
    base = model.pooled(data, run)
    target_vec = base[groups == str(target)].mean(0) if target is not None else None
    shift = np.full((n, len(genes)), np.nan)
    tshift = np.full((n, len(genes)), np.nan)
    gshift = np.full((n, len(genes)), np.nan)
    bar = logg.progress(total=n, desc=f"perturb ({mode})", unit="cells")
    for a in range(0, n, chunk_size):
        chunk = data.subset(np.arange(a, min(a + chunk_size, n)))
        _shift_chunk(model, chunk, a, ids, shifts=(shift, tshift, gshift), mode=mode,
                     is_gene=is_gene, max_length=max_length, run=run, base=base,
                     target_vec=target_vec, gene_shifts=gene_shifts)  # fmt: skip
        bar.update(len(chunk))
    bar.close()

    table = _summarise(genes, mode, shift, tshift, gshift, groups, target, gene_shifts)
    adata = copy_of(adata) if copy else adata
    adata.obsm[f"{key_added}_shift"] = pd.DataFrame(
        shift.astype(np.float32), index=adata.obs_names.copy(), columns=genes
    )
    params = model.record(
        seed=seed,
        **run.params(),
        genes=genes,
        mode=mode,
        groupby=groupby,
        target="" if target is None else str(target),
        gene_shifts=gene_shifts,
        gene_key=gene_key,
        min_gene_fraction=min_gene_fraction,
    )
    adata.uns[key_added] = {"table": table, "params": params}
    logg.info(
        "    finished", time=start, deep=f"added uns[{key_added!r}], obsm['{key_added}_shift']"
    )
    return adata if copy else None


def _summarise(genes, mode, shift, tshift, gshift, groups, target, gene_shifts) -> pd.DataFrame:
    group_values = ["all"] if groups is None else list(pd.unique(groups))
    rows = []
    for j, g in enumerate(genes):
        for grp in group_values:
            sel = np.ones(len(shift), bool) if groups is None else groups == grp
            s = shift[sel, j]
            ok = np.isfinite(s)
            n_ok = int(ok.sum())
            row = {
                "gene": g,
                "group": str(grp),
                "mode": mode,
                "n_cells": n_ok,
                "cell_shift": float(s[ok].mean()) if n_ok else np.nan,
                "cell_shift_sem": float(s[ok].std(ddof=1) / np.sqrt(n_ok)) if n_ok > 1 else np.nan,
            }
            if gene_shifts:
                gs = gshift[sel, j]
                gs = gs[np.isfinite(gs)]
                row["gene_shift"] = float(gs.mean()) if len(gs) else np.nan
            if target is not None:
                t = tshift[sel, j][ok]
                row["target_shift"] = float(t.mean()) if n_ok else np.nan
                row["target_shift_sem"] = (
                    float(t.std(ddof=1) / np.sqrt(n_ok)) if n_ok > 1 else np.nan
                )
            rows.append(row)
    return pd.DataFrame(rows)


def _groups_of(adata, groupby, target):
    """``obs[groupby]`` as strings (``None`` without ``groupby``), ``target`` checked in it."""
    groups = None
    if groupby is not None:
        groups = _validate.obs_column(adata, groupby, fix="fill them first")
        groups = groups.astype(str).to_numpy()
    if target is not None:
        if groups is None:
            raise ValueError("target= needs groupby= (target is one of its values)")
        if str(target) not in set(groups):
            raise ValueError(
                f"target {target!r} is not a value of obs[{groupby!r}]: {sorted(set(groups))[:10]}"
            )
    return groups


def _gene_ids(model, adata, genes, *, mode, gene_key) -> np.ndarray:
    """The genes' vocabulary ids; each must be known, and measured in ``adata`` to delete."""
    vocab = model.vocab
    ids = vocab.encode_genes(genes)
    unknown = [g for g, i in zip(genes, ids, strict=True) if i < 0]
    if unknown:
        raise ValueError(f"genes {unknown} are not in the model's vocabulary; check their names")
    if mode == "delete":
        data_ids = set(vocab.encode_genes(model.gene_names(adata, gene_key)).tolist())
        absent = [g for g, i in zip(genes, ids, strict=True) if i not in data_ids]
        if absent:
            raise ValueError(
                f"genes {absent} are not measured in adata, so no cell can lose them; "
                "mode='delete' needs genes of the data"
            )
    return ids


def _shift_chunk(model, chunk, a, ids, *, shifts, mode, is_gene, max_length, run, base,
                 target_vec, gene_shifts) -> None:  # fmt: skip
    """Perturb each gene in the cells of ``chunk`` (starting at cell ``a``) and write their
    embedding shifts into ``shifts`` (cell shift, target shift, gene shift; cells × genes).
    """
    shift, tshift, gshift = shifts
    parts = []
    for j, gid in enumerate(ids):
        pert, rows, src = perturb_tokens(
            chunk, int(gid), mode=mode, is_gene=is_gene, max_length=max_length
        )
        parts.append((j, pert, rows, src))
    merged = concat([pt for _, pt, _, _ in parts], pad_value=chunk.pad_value, pad_id=chunk.pad_id)
    if len(merged) == 0:
        return
    emb = model.pooled(merged, run)
    hid = orig_hid = None
    if gene_shifts:
        hid = _hidden_rows(model.module, merged, run)
        orig_hid = _hidden_rows(model.module, chunk, run)
    off = 0
    for j, pert, rows, src in parts:
        k = len(rows)
        cells = a + rows
        e = emb[off : off + k]
        shift[cells, j] = 1 - _cos(e, base[cells])
        if target_vec is not None:
            tshift[cells, j] = _cos(e, target_vec[None]) - _cos(base[cells], target_vec[None])
        if gene_shifts:
            for r in range(k):
                h = hid[off + r]
                s = src[r, : len(h)]
                keep = (s >= 0) & is_gene[pert.tokens[r, : len(h)]]
                if keep.any():
                    o = orig_hid[rows[r]][s[keep]]
                    gshift[cells[r], j] = float(np.mean(1 - _cos(h[keep], o)))
        off += k
