"""The one inference loop: cells in length-grouped batches through a module, without grad.

Embedding, gene embedding, annotation, perturbation, benchmarking and attention extraction all
run through :func:`batches`; :func:`pooled` adds the cell pooling most of them need.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .data import TokenArrays, collate, length_grouped_batches, model_inputs


def batches(
    module,
    data: TokenArrays,
    *,
    batch_size: int,
    device,
    precision: str = "fp32",
    layer: int = -1,
    attentions: bool = False,
    hidden_states: bool = False,
    objective: str = "mlm",
    progress=None,
) -> Iterator[tuple[np.ndarray, dict, object]]:
    """Yield ``(cell indices, batch, output)`` over ``data``, longest cells first.

    Each batch is padded only to its longest cell. Without ``attentions`` the output is the
    packed :meth:`~sctransformer.nn.CellTransformer.encode` result of layer ``layer`` (no
    compute on padding); with ``attentions`` it is :func:`attention_forward`'s (attention
    probabilities, and every layer's states with ``hidden_states``). ``progress`` (a tqdm
    bar) advances by the cells done.
    """
    import torch

    if precision == "auto" and len(data):  # one precision for every batch of the call
        from ..nn.precision import choose_precision

        length = int(np.max(data.lengths))
        precision = choose_precision("auto", device, config=module.config, length=length)
    for idx in length_grouped_batches(data.lengths, batch_size):
        batch = collate(data, idx, device)
        with torch.inference_mode():
            if attentions:
                out = attention_forward(module, batch, objective, hidden_states=hidden_states)
            else:
                tokens, values = model_inputs(module, batch)
                out = module.encode(
                    tokens,
                    values,
                    padding_mask=batch["padding_mask"],
                    precision=precision,
                    output_layer=layer,
                )
        yield idx, batch, out
        if progress is not None:
            progress.update(len(idx))


def attention_forward(module, batch: dict, objective: str = "mlm", *, hidden_states=False):
    """The padded forward pass of a collated batch through the ``"math"`` backend, the one
    that returns attention probabilities (and every layer's states with ``hidden_states``).
    """
    tokens, values = model_inputs(module, batch)
    return module(
        tokens,
        values,
        padding_mask=batch["padding_mask"],
        objective=objective,
        output_attentions=True,
        output_hidden_states=hidden_states,
        backend="math",
    )


def gene_positions(is_gene: np.ndarray, tokens):
    """Boolean tensor of the positions holding gene tokens (not special/condition tokens)."""
    import torch

    return torch.as_tensor(np.asarray(is_gene), device=tokens.device)[tokens]


def pooled(
    module,
    data: TokenArrays,
    *,
    pooling: str,
    layer: int,
    is_gene: np.ndarray,
    batch_size: int,
    device,
    precision: str = "fp32",
    progress=None,
) -> np.ndarray:
    """Cell vectors ``(n, hidden)`` float32 in ``data``'s order.

    ``"cls"``: the first token's state; ``"mean"``: the mean over gene tokens.
    """
    out = np.zeros((len(data), module.config.hidden_size), dtype=np.float32)
    for idx, batch, enc in batches(
        module,
        data,
        batch_size=batch_size,
        device=device,
        precision=precision,
        layer=layer,
        progress=progress,
    ):
        mask = gene_positions(is_gene, batch["tokens"]) if pooling == "mean" else None
        out[idx] = enc.pool(pooling, mask).cpu().numpy()
    return out
