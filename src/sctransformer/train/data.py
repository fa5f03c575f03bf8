"""The one batching path: token arrays → length-grouped, minimally padded torch batches.

Training, embedding and attention extraction all go through :func:`length_grouped_batches`
and :func:`collate`, so padding, ordering and trimming behave the same everywhere.
"""

from __future__ import annotations

import numpy as np

from ..tokenizers import TokenArrays

__all__ = ["TokenArrays", "collate", "length_grouped_batches", "model_inputs"]


def length_grouped_batches(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    group_size: int = 50,
) -> list[np.ndarray]:
    """Cell indices in batches of similar length.

    Without shuffling, cells are sorted by length (longest first) and cut into batches, which
    minimises padding for inference. With shuffling (training), cells are shuffled, cut into
    groups of ``group_size`` batches, sorted by length within each group and the batches are
    shuffled again — Geneformer's length-grouped sampling, which keeps batches random while
    padding little.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    lengths = np.asarray(lengths)
    n = len(lengths)
    if not shuffle:
        order = np.argsort(-lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    step = batch_size * group_size
    batches = []
    for g in range(0, n, step):
        group = perm[g : g + step]
        group = group[np.argsort(-lengths[group], kind="stable")]
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def collate(data: TokenArrays, idx: np.ndarray, device="cpu") -> dict:
    """Tensors for the cells ``idx``, padded only to the longest of them."""
    import torch

    lengths = data.lengths[idx]
    width = max(int(lengths.max()) if len(idx) else 0, 1)
    tokens = torch.as_tensor(np.ascontiguousarray(data.tokens[idx, :width]), dtype=torch.long)
    values = torch.as_tensor(np.ascontiguousarray(data.values[idx, :width]), dtype=torch.float32)
    lengths_t = torch.as_tensor(lengths, dtype=torch.long)
    mask = torch.arange(width)[None, :] < lengths_t[:, None]
    return {
        "tokens": tokens.to(device),
        "values": values.to(device),
        "lengths": lengths_t.to(device),
        "padding_mask": mask.to(device),
        "index": idx,
    }


def model_inputs(module, batch: dict) -> tuple:
    """``(tokens, values or None)`` as the module reads them (values only where it uses them)."""
    values = batch["values"] if module.config.value_input != "none" else None
    return batch["tokens"], values
