"""``sct.tl.embed_cells`` and ``sct.tl.embed_genes``."""

from __future__ import annotations

from typing import Literal

import numpy as np
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from ..models import resolve
from ..train.data import TokenArrays, collate, length_grouped_batches
from ._inputs import (
    check_model_vocab,
    chunk_arrays,
    record_params,
    resolve_device,
    tokens_match,
)


def iter_encoded(
    model,
    data: TokenArrays,
    *,
    batch_size: int,
    device,
    precision: str,
    layer: int,
):
    """Run the model over cells in length-grouped batches; yield ``(cell indices, output)``.

    The one inference loop behind cell and gene embeddings: cells of similar length share a
    batch and each batch is padded only to its longest cell.
    """
    import torch

    values_used = model.config.value_input != "none"
    for idx in length_grouped_batches(data.lengths, batch_size):
        batch = collate(data, idx, device)
        with torch.inference_mode():
            out = model.encode(
                batch["tokens"],
                batch["values"] if values_used else None,
                padding_mask=batch["padding_mask"],
                precision=precision,
                output_layer=layer,
            )
        yield idx, batch, out


def _check_common(adata: AnnData, model, *, pooling, layer, batch_size):
    _validate.check_nonempty(adata)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n_layers = model.config.num_layers
    if not -n_layers <= layer <= n_layers or layer == 0:
        raise ValueError(
            f"layer={layer} is out of range for a {n_layers}-layer model; use 1..{n_layers} "
            f"or -1..-{n_layers} (-1 = last layer)"
        )
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling={pooling!r}; use 'cls' or 'mean'")
    if pooling == "cls" and not model.tokenize_params.get("add_cls", False):
        raise ValueError(
            "pooling='cls' but this model's cells have no <cls> token; use pooling='mean'"
        )


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
        Cells × genes (counts), or already tokenized.
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
    tokens_key
        Prefix of the token arrays written by :func:`sctransformer.pp.tokenize`.
    key_added
        ``obsm`` key of the embedding.
    copy
        Return a copy instead of writing into ``adata``.

    Returns
    -------
    ``None`` or the copy. Writes ``obsm["X_sct"]`` (float32, cells × hidden size) and
    ``uns["sct_embed"]["params"]`` (``sct`` = ``key_added`` without ``X_``).
    """
    model = resolve(model)
    check_model_vocab(model)
    meta = model.metadata or {}
    layer = int(meta.get("layer", -1)) if layer is None else layer
    if pooling is None:
        pooling = meta.get("pooling") or ("cls" if model.tokenize_params.get("add_cls") else "mean")
    _check_common(adata, model, pooling=pooling, layer=layer, batch_size=batch_size)
    dev = resolve_device(device)
    model.to(dev).eval()
    reuse = tokens_match(adata, model, tokens_key)
    start = logg.info(f"embedding {adata.n_obs} cells")
    is_gene = np.asarray(model.vocab.is_gene)
    emb = np.zeros((adata.n_obs, model.config.hidden_size), dtype=np.float32)
    bar = logg.progress(total=adata.n_obs, desc="embed", unit="cells")
    for a in range(0, adata.n_obs, chunk_size):
        b = min(a + chunk_size, adata.n_obs)
        data = chunk_arrays(adata, model, key=tokens_key, start=a, stop=b, reuse=reuse)
        for idx, batch, out in iter_encoded(
            model, data, batch_size=batch_size, device=dev, precision=precision, layer=layer
        ):
            mask = None
            if pooling == "mean":
                mask = torch_is_gene(is_gene, batch["tokens"])
            emb[a + idx] = out.pool(pooling, mask).cpu().numpy()
            bar.update(len(idx))
    bar.close()
    adata = _copy(adata) if copy else adata
    adata.obsm[key_added] = emb
    uns_key = f"{key_added.removeprefix('X_')}_embed"
    adata.uns[uns_key] = {
        "params": record_params(
            model,
            device=dev,
            pooling=pooling,
            layer=layer,
            precision=precision,
            batch_size=batch_size,
            tokens_reused=reuse,
        )
    }
    logg.info("    finished", time=start, deep=f"added obsm[{key_added!r}], uns[{uns_key!r}]")
    return adata if copy else None


def torch_is_gene(is_gene: np.ndarray, tokens):
    import torch

    return torch.as_tensor(is_gene, device=tokens.device)[tokens]


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
    tokens_key: str = "sct",
    key_added: str = "sct_gene",
    copy: bool = False,
) -> AnnData | None:
    """Contextual gene embeddings: each gene's token state averaged over the cells expressing it.

    Parameters
    ----------
    adata, model, layer, batch_size, chunk_size, precision, device, tokens_key, copy
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
    and ``uns["sct_gene"]["params"]``.
    """
    model = resolve(model)
    vocab = check_model_vocab(model)
    layer = int((model.metadata or {}).get("layer", -1)) if layer is None else layer
    _check_common(adata, model, pooling="mean", layer=layer, batch_size=batch_size)
    groups = None
    if groupby is not None:
        _validate.check_key(adata.obs, groupby, where="adata.obs")
        groups = adata.obs[groupby].astype("category")
    names = [str(g) for g in adata.var_names]
    if model.tokenize_params.get("gene_key", "var_names") not in ("", "var_names"):
        gk = model.tokenize_params["gene_key"]
        if gk in adata.var:
            names = [str(g) for g in adata.var[gk]]
    var_ids = vocab.encode_genes(names)
    if not (var_ids >= 0).any():
        raise ValueError("none of the data's genes are in the model's vocabulary")
    dev = resolve_device(device)
    model.to(dev).eval()
    reuse = tokens_match(adata, model, tokens_key)
    d = model.config.hidden_size
    n_groups = len(groups.cat.categories) if groups is not None else 0
    sums = np.zeros((1 + n_groups, len(vocab), d))
    counts = np.zeros((1 + n_groups, len(vocab)))
    group_codes = groups.cat.codes.to_numpy() if groups is not None else None
    start = logg.info(f"embedding genes over {adata.n_obs} cells")
    bar = logg.progress(total=adata.n_obs, desc="embed genes", unit="cells")
    is_gene = np.asarray(vocab.is_gene)
    for a in range(0, adata.n_obs, chunk_size):
        b = min(a + chunk_size, adata.n_obs)
        data = chunk_arrays(adata, model, key=tokens_key, start=a, stop=b, reuse=reuse)
        for idx, batch, out in iter_encoded(
            model, data, batch_size=batch_size, device=dev, precision=precision, layer=layer
        ):
            tok = batch["tokens"][batch["padding_mask"]].cpu().numpy()
            h = out.hidden.cpu().double().numpy()
            keep = is_gene[tok]
            cell_of = np.repeat(np.arange(len(idx)), out.cu_seqlens.diff().cpu().numpy())
            np.add.at(sums[0], tok[keep], h[keep])
            np.add.at(counts[0], tok[keep], 1)
            if group_codes is not None:
                g = group_codes[a + idx][cell_of][keep] + 1
                np.add.at(sums, (g, tok[keep]), h[keep])
                np.add.at(counts, (g, tok[keep]), 1)
            bar.update(len(idx))
    bar.close()
    means = sums / np.maximum(counts, 1)[..., None]
    found = var_ids >= 0

    def to_var(m: np.ndarray) -> np.ndarray:
        out = np.zeros((len(names), d), dtype=np.float32)
        out[found] = m[var_ids[found]]
        return out

    static = model.embeddings.token.weight.detach().cpu().float().numpy()
    adata = _copy(adata) if copy else adata
    adata.varm[key_added] = to_var(means[0])
    adata.varm[f"{key_added}_static"] = to_var(static)
    n_cells = np.zeros(len(names), dtype=np.int64)
    n_cells[found] = counts[0][var_ids[found]]
    adata.var[f"{key_added}_n_cells"] = n_cells
    uns = {
        "params": record_params(
            model, device=dev, layer=layer, precision=precision, groupby=groupby
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


def _copy(adata: AnnData) -> AnnData:
    return adata.to_memory() if adata.isbacked else adata.copy()
