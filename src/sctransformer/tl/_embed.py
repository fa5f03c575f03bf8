"""``sct.tl.embed_cells`` and ``sct.tl.embed_genes``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._backed import check_writable
from .._mudata import is_mudata
from .._tokens import model_token_chunks, stored_for
from ..models import resolve
from ..train import infer
from ._common import check_positive, copy_of, store_embedding
from ._distributed import gather_rows, local_device, rank_slice, sum_to_rank0, world_size
from ._distributed import init as ranks
from ._embed_mudata import embed_mudata


def embed_cells(
    adata: AnnData,
    model,
    *,
    pooling: Literal["cls", "mean"] | None = None,
    layer: int | None = None,
    batch_size: int = 32,
    chunk_size: int = 2048,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    device: str = "auto",
    gene_key: str | None = None,
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
    seed: int = 0,
    tokens_key: str = "sct",
    key_added: str = "X_sct",
    copy: bool = False,
) -> AnnData | None:
    """Embed each cell with a transformer.

    Cells are tokenized the way the model was trained (tokens already in ``obsm`` are reused
    when they were made with the model's vocabulary), grouped by length, padded only to the
    longest cell of each batch, and returned in the original order. Backed AnnData is read in
    chunks of ``chunk_size`` cells, so memory does not grow with the number of cells.

    Parameters
    ----------
    adata
        Cells × genes (counts), or already tokenized. A :class:`~mudata.MuData` with a model
        trained on one is embedded over its modalities' shared cells into ``mdata.obsm``.
    model
        A model, a registry name (see :func:`sctransformer.models.available`) or a checkpoint
        folder.
    pooling
        ``"cls"``: the ``<cls>`` token's state; ``"mean"``: the mean over gene tokens (special
        and condition tokens excluded). Default: the model's recommended mode
        (``metadata["pooling"]``), else ``"cls"`` when its cells start with ``<cls>``.
    layer
        Which layer's output: -1 the last (default, or the model's ``metadata["layer"]``),
        -2 the one before, or 1-based from the bottom.
    batch_size
        Cells per forward pass.
    chunk_size
        Cells tokenized and embedded at a time.
    precision
        ``"auto"`` uses bf16 where the CPU/GPU runs it fast, else fp32.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, …
    gene_key
        A ``var`` column with the names to match against the vocabulary (e.g. Ensembl IDs);
        default: the column the model was tokenized with when present, else ``var_names``.
    min_gene_fraction, min_genes
        Refuse data where fewer than this fraction of genes, or fewer than ``min_genes``
        genes, are in the model's vocabulary.
    seed
        Recorded in the parameters (embedding itself draws no random numbers).
    tokens_key
        Prefix of the token arrays written by :func:`sctransformer.pp.tokenize`.
    key_added
        ``obsm`` key of the embedding.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the copy. Writes ``obsm["X_sct"]`` (float32, cells × hidden size) and
    ``uns["sct_embed"]["params"]`` (``sct`` = ``key_added`` without ``X_``). Under ``torchrun``
    each rank embeds a contiguous slice of the cells and rank 0 gathers them in order and
    writes; the other ranks leave ``adata`` untouched and return ``None``.
    """
    if is_mudata(adata):  # one sequence per cell over the modalities (see _mudata.py)
        return embed_mudata(adata, model, pooling=pooling, layer=layer, batch_size=batch_size,
                            precision=precision, device=device, seed=seed, tokens_key=tokens_key,
                            min_gene_fraction=min_gene_fraction, key_added=key_added, copy=copy)  # fmt: skip
    check_writable(adata, copy=copy)
    model = resolve(model)
    ranked = world_size() > 1  # under torchrun: each rank its slice, rank 0 gathers and writes
    rank, size = ranks() if ranked else (0, 1)
    run = model.inference(
        batch_size=batch_size,
        device=local_device() if ranked and device == "auto" else device,
        precision=precision,
        layer=layer,
        pooling=pooling,
    )
    _check(adata, model, chunk_size, gene_key, min_gene_fraction, min_genes)
    model.to(run.device).eval()
    reuse = stored_for(adata, model, tokens_key)
    lo, hi = rank_slice(adata.n_obs, rank, size)
    if ranked:
        start = logg.info(f"rank {rank}/{size}: embedding cells {lo}:{hi} of {adata.n_obs}")
    else:
        start = logg.info(f"embedding {adata.n_obs} cells")
    emb = np.zeros((hi - lo, model.config.hidden_size), dtype=np.float32)
    bar = None if ranked else logg.progress(total=adata.n_obs, desc="embed", unit="cells")
    if hi > lo:
        chunks = model_token_chunks(
            adata,
            model,
            key=tokens_key,
            chunk_size=chunk_size,
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
            cells=np.arange(lo, hi) if ranked else None,
        )
        for a, b, data in chunks:
            emb[a:b] = model.pooled(data, run, progress=bar)
    if ranked:
        emb = gather_rows(emb, rank, size)
        if rank != 0:
            return None  # rank 0 holds and writes the result
    else:
        bar.close()
    adata = copy_of(adata) if copy else adata
    params = model.record(
        seed=seed,
        **run.params(),
        tokens_reused=reuse,
        gene_key=gene_key,
        min_gene_fraction=min_gene_fraction,
        **({"world_size": size} if ranked else {}),
    )
    store_embedding(adata, emb, key_added=key_added, params=params, start=start)
    return adata if copy else None


def _check(adata, model, chunk_size, gene_key, min_gene_fraction, min_genes) -> None:
    _validate.check_nonempty(adata)
    check_positive(chunk_size=chunk_size)
    model.check_genes(
        adata, gene_key=gene_key, min_gene_fraction=min_gene_fraction, min_genes=min_genes
    )


def embed_genes(
    adata: AnnData,
    model,
    *,
    groupby: str | None = None,
    layer: int | None = None,
    batch_size: int = 32,
    chunk_size: int = 2048,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    device: str = "auto",
    gene_key: str | None = None,
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
    seed: int = 0,
    tokens_key: str = "sct",
    key_added: str = "sct_gene",
    copy: bool = False,
) -> AnnData | None:
    """Contextual gene embeddings: each gene's token state averaged over the cells expressing it.

    Parameters
    ----------
    adata, model, layer, batch_size, chunk_size, precision, device, gene_key
        As in :func:`embed_cells`.
    min_gene_fraction, min_genes, seed, tokens_key, copy
        As in :func:`embed_cells`.
    groupby
        ``obs`` column: also average within each of its groups.
    key_added
        Prefix of the keys written.

    Returns
    -------
    ``None`` or the copy. Writes ``varm["sct_gene"]`` (genes × hidden, mean contextual state;
    zeros for genes never seen), ``var["sct_gene_n_cells"]`` (cells contributing),
    ``varm["sct_gene_static"]`` (the model's token embedding of each gene; zeros when the
    vocabulary lacks it), ``uns["sct_gene"]["groups"][g]`` (per group, when ``groupby``)
    and ``uns["sct_gene"]["params"]``. Under ``torchrun`` each rank reads a slice of the cells,
    the sums are added on rank 0, which writes; the other ranks return ``None``.
    """
    check_writable(adata, copy=copy)
    model = resolve(model)
    vocab = model.check()
    run = model.inference(
        batch_size=batch_size, device=device, precision=precision, layer=layer, pools=False
    )
    _check(adata, model, chunk_size, gene_key, min_gene_fraction, min_genes)
    groups = None
    if groupby is not None:
        groups = _validate.obs_column(adata, groupby, fix="fill them first").astype("category")
    names = model.gene_names(adata, gene_key)
    var_ids = vocab.encode_genes(names)
    model.to(run.device).eval()
    d = model.config.hidden_size
    group_codes = groups.cat.codes.to_numpy() if groups is not None else None
    rank, size = ranks() if world_size() > 1 else (0, 1)  # torchrun: a slice per rank
    lo, hi = rank_slice(adata.n_obs, rank, size)
    start = logg.info(f"embedding genes over {adata.n_obs} cells")
    bar = logg.progress(total=adata.n_obs, desc="embed genes", unit="cells")
    chunks = model_token_chunks(
        adata,
        model,
        key=tokens_key,
        chunk_size=chunk_size,
        gene_key=gene_key,
        min_gene_fraction=min_gene_fraction,
        cells=None if size == 1 else np.arange(lo, hi),
    )
    n_groups = len(groups.cat.categories) if groups is not None else 0
    sums, counts = _gene_state_sums(
        model, chunks, run, n_groups=n_groups, group_codes=group_codes, first_cell=lo, progress=bar
    )
    bar.close()
    if size > 1:
        sums, counts = sum_to_rank0(sums, rank), sum_to_rank0(counts, rank)
        if rank != 0:
            return None  # rank 0 holds and writes the result
    means = sums / np.maximum(counts, 1)[..., None]
    found = var_ids >= 0

    def to_var(m: np.ndarray) -> np.ndarray:
        out = np.zeros((len(names), d), dtype=np.float32)
        out[found] = m[var_ids[found]]
        return out

    static = model.embeddings.token.weight.detach().cpu().float().numpy()
    adata = copy_of(adata) if copy else adata
    adata.varm[key_added] = to_var(means[0])
    adata.varm[f"{key_added}_static"] = to_var(static)
    n_cells = np.zeros(len(names), dtype=np.int64)
    n_cells[found] = counts[0][var_ids[found]]
    adata.var[f"{key_added}_n_cells"] = n_cells
    uns = {
        "params": model.record(
            seed=seed,
            **run.params(),
            groupby=groupby,
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
        )
    }
    if groups is not None:
        uns["groups"] = {str(g): to_var(means[i + 1]) for i, g in enumerate(groups.cat.categories)}
    adata.uns[key_added] = uns
    logg.info(
        "    finished",
        time=start,
        deep=f"added varm[{key_added!r}], varm['{key_added}_static'], uns[{key_added!r}]",
    )
    return adata if copy else None


def _gene_state_sums(
    model, chunks, run, *, n_groups, group_codes, first_cell, progress
) -> tuple[np.ndarray, np.ndarray]:
    """Per vocabulary token, the sum of its states (float64) and how many there are, over all
    cells (row 0) and over each group's cells (rows ``1 + code``); ``chunks`` start at cell
    ``first_cell`` of ``group_codes``.
    """
    is_gene = np.asarray(model.vocab.is_gene)
    d = model.config.hidden_size
    sums = np.zeros((1 + n_groups, len(model.vocab), d))
    counts = np.zeros((1 + n_groups, len(model.vocab)))
    for a, _, data in chunks:
        for idx, batch, out in infer.batches(model.module, data, run, progress=progress):
            tok = batch["tokens"][batch["padding_mask"]].cpu().numpy()
            h = out.hidden.cpu().double().numpy()
            keep = is_gene[tok]
            cell_of = np.repeat(np.arange(len(idx)), out.cu_seqlens.diff().cpu().numpy())
            np.add.at(sums[0], tok[keep], h[keep])
            np.add.at(counts[0], tok[keep], 1)
            if group_codes is not None:
                g = group_codes[first_cell + a + idx][cell_of][keep] + 1
                np.add.at(sums, (g, tok[keep]), h[keep])
                np.add.at(counts, (g, tok[keep]), 1)
    return sums, counts
