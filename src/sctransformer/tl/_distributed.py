"""Inference under ``torchrun``: each rank embeds a contiguous slice of the cells, rank 0
gathers the slices in the original order and writes; the other ranks write nothing.

A slice is read through the same token path as one process (stored tokens, or tokenized chunk
by chunk), so a backed file is streamed on every rank. The result equals a one-process run.
"""

from __future__ import annotations

import os

import numpy as np


def world_size() -> int:
    """Processes launched together (``WORLD_SIZE`` set by ``torchrun``); 1 otherwise."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init() -> tuple[int, int]:
    """``(rank, world size)``, starting the process group (gloo on CPU, nccl on CUDA)."""
    import torch.distributed as dist

    from ..train.loop import init_distributed_from_env

    if not init_distributed_from_env():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def rank_slice(n: int, rank: int, size: int) -> tuple[int, int]:
    """The cells ``[lo, hi)`` of ``rank``: contiguous, sizes differing by at most one."""
    bounds = np.linspace(0, n, size + 1).round().astype(int)
    return int(bounds[rank]), int(bounds[rank + 1])


_CPU_GROUP: list = []


def cpu_group():
    """A gloo group for the CPU-side exchanges (``None``: the default group is gloo already)."""
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    if not _CPU_GROUP:
        _CPU_GROUP.append(dist.new_group(backend="gloo"))  # every rank calls this, in turn
    return _CPU_GROUP[0]


def gather_rows(local: np.ndarray, rank: int, size: int) -> np.ndarray | None:
    """Every rank's rows stacked in rank order on rank 0 (``None`` elsewhere)."""
    import torch.distributed as dist

    parts = [None] * size if rank == 0 else None
    dist.gather_object(local, parts, dst=0, group=cpu_group())
    return np.concatenate(parts, axis=0) if rank == 0 else None


def sum_to_rank0(values: np.ndarray, rank: int) -> np.ndarray:
    """``values`` summed over the ranks (float64), on rank 0; other ranks get their own back."""
    import torch
    import torch.distributed as dist

    t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))
    dist.reduce(t, dst=0, op=dist.ReduceOp.SUM, group=cpu_group())
    return t.numpy() if rank == 0 else values


def embed_cells(
    adata,
    model,
    *,
    pooling,
    layer,
    batch_size,
    chunk_size,
    precision,
    device,
    gene_key,
    min_gene_fraction,
    min_genes,
    seed,
    tokens_key,
    key_added,
    copy,
):
    """:func:`sctransformer.tl.embed_cells` across ranks (see the module docstring)."""
    from .. import logging as logg
    from .._backed import check_writable
    from .._tokens import model_token_chunks, stored_for
    from ..models import resolve
    from ..train import infer
    from ._common import copy_of, resolve_device
    from ._embed import _check

    check_writable(adata, copy=copy)
    model = resolve(model)
    pooling, layer = model.pooling(pooling), model.layer(layer)
    _check(adata, model, batch_size, chunk_size, gene_key, min_gene_fraction, min_genes)
    rank, size = init()
    if device == "auto":
        import torch

        device = (
            f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        )
    dev = resolve_device(device)
    model.to(dev).eval()
    reuse = stored_for(adata, model, tokens_key)
    lo, hi = rank_slice(adata.n_obs, rank, size)
    start = logg.info(f"rank {rank}/{size}: embedding cells {lo}:{hi} of {adata.n_obs}")
    local = np.zeros((hi - lo, model.config.hidden_size), dtype=np.float32)
    if hi > lo:
        chunks = model_token_chunks(
            adata,
            model,
            key=tokens_key,
            chunk_size=chunk_size,
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
            cells=np.arange(lo, hi),
        )
        for a, b, data in chunks:
            local[a:b] = infer.pooled(
                model.module,
                data,
                pooling=pooling,
                layer=layer,
                is_gene=model.vocab.is_gene,
                batch_size=batch_size,
                device=dev,
                precision=precision,
            )
    emb = gather_rows(local, rank, size)
    if rank != 0:
        return None  # rank 0 holds and writes the result
    adata = copy_of(adata) if copy else adata
    adata.obsm[key_added] = emb
    uns_key = f"{key_added.removeprefix('X_')}_embed"
    adata.uns[uns_key] = {
        "params": model.record(
            device=dev,
            seed=seed,
            pooling=pooling,
            layer=layer,
            precision=precision,
            batch_size=batch_size,
            tokens_reused=reuse,
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
            world_size=size,
        )
    }
    logg.info("    finished", time=start, deep=f"added obsm[{key_added!r}], uns[{uns_key!r}]")
    return adata if copy else None
