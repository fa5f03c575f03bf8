"""Attention masks for the three training objectives.

Every mask here is boolean and means *may attend*: ``mask[..., i, j]`` is ``True`` when query
position ``i`` is allowed to read key position ``j``. Shapes broadcast against attention scores of
shape ``[batch, heads, queries, keys]``. :func:`to_additive` turns a boolean mask into the additive
form (``0`` or ``-inf``) used by explicit softmax attention.

Padding queries are never left without a key to read (that would give ``NaN`` in softmax): their
outputs are meaningless and are discarded by callers, but they stay finite.
"""

from __future__ import annotations

import torch

__all__ = [
    "bidirectional_mask",
    "causal_mask",
    "generative_mask",
    "mask_for_objective",
    "padding_mask_from_lengths",
    "to_additive",
]


def padding_mask_from_lengths(lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """Boolean ``[batch, max_length]`` mask that is ``True`` on the first ``lengths[b]`` tokens.

    Parameters
    ----------
    lengths
        Number of real (non-padding) tokens of each sequence, shape ``[batch]``.
    max_length
        Padded length; defaults to ``lengths.max()``.

    Returns
    -------
    Boolean tensor, ``True`` for real tokens.
    """
    lengths = torch.as_tensor(lengths)
    if max_length is None:
        max_length = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(max_length, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def bidirectional_mask(padding_mask: torch.Tensor) -> torch.Tensor:
    """Mask for masked-token (BERT-style) encoders: every token reads every real token.

    Parameters
    ----------
    padding_mask
        Boolean ``[batch, length]``, ``True`` for real tokens.

    Returns
    -------
    Boolean ``[batch, 1, 1, length]``: ``allowed[b, :, i, j] = padding_mask[b, j]``.
    """
    return padding_mask[:, None, None, :]


def causal_mask(padding_mask: torch.Tensor) -> torch.Tensor:
    """Mask for decoder-only next-token prediction (tGPT, scMulan).

    Parameters
    ----------
    padding_mask
        Boolean ``[batch, length]``, ``True`` for real tokens.

    Returns
    -------
    Boolean ``[batch, 1, length, length]``: ``allowed[b, :, i, j] = (j <= i) and
    padding_mask[b, j]``. A query sees itself and the real tokens before it, never later ones.
    Position 0 of a left-padded row would see nothing, so the diagonal is always allowed.
    """
    length = padding_mask.shape[-1]
    idx = torch.arange(length, device=padding_mask.device)
    lower = idx[None, :] <= idx[:, None]  # [query, key]
    diagonal = idx[None, :] == idx[:, None]
    return (lower[None] & padding_mask[:, None, :] | diagonal[None])[:, None]


def generative_mask(padding_mask: torch.Tensor, gen_mask: torch.Tensor) -> torch.Tensor:
    """ScGPT's generative attention mask.

    Genes are split into *known* genes (their values are inputs) and genes *to be generated*
    (``gen_mask`` is ``True``). Known genes attend to known genes only; a gene to be generated
    attends to the known genes and to itself, never to another gene being generated. Padding is
    never read (except a padding query reading itself, which keeps its row finite).

    Parameters
    ----------
    padding_mask
        Boolean ``[batch, length]``, ``True`` for real tokens.
    gen_mask
        Boolean ``[batch, length]``, ``True`` for the genes to be generated.

    Returns
    -------
    Boolean ``[batch, 1, length, length]``:
    ``allowed[b, :, i, j] = known[b, j] or i == j`` with ``known = padding_mask & ~gen_mask``.
    """
    if gen_mask.shape != padding_mask.shape:
        raise ValueError(
            f"gen_mask has shape {tuple(gen_mask.shape)} but tokens have {tuple(padding_mask.shape)}"
        )
    known = padding_mask & ~gen_mask.bool()
    length = padding_mask.shape[-1]
    idx = torch.arange(length, device=padding_mask.device)
    diagonal = idx[None, :] == idx[:, None]
    return (known[:, None, :] | diagonal[None])[:, None]


def mask_for_objective(
    objective: str, padding_mask: torch.Tensor, gen_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Boolean attention mask for ``objective`` in ``{"mlm", "ntp", "generative"}``."""
    if objective == "mlm":
        return bidirectional_mask(padding_mask)
    if objective == "ntp":
        return causal_mask(padding_mask)
    if objective == "generative":
        if gen_mask is None:
            raise ValueError('objective="generative" needs gen_mask (True for genes to generate)')
        return generative_mask(padding_mask, gen_mask)
    raise ValueError(f"objective={objective!r} is not supported; use 'mlm', 'ntp' or 'generative'")


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive form of a boolean mask: ``0`` where allowed, ``-inf`` where not."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(~mask, float("-inf"))
