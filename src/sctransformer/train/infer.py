"""The one inference loop: cells in length-grouped batches through a module, without grad.

Embedding, gene embedding, annotation, perturbation, benchmarking and attention extraction all
run through :func:`batches`; :func:`pooled` adds the cell pooling most of them need.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .data import TokenArrays, collate, length_grouped_batches, model_inputs


@dataclass(frozen=True)
class Inference:
    """How one call runs a module, fixed once for all its batches and recorded in its params.

    ``device`` is resolved and ``precision`` is never ``"auto"`` when made by
    :meth:`sctransformer.models.Model.inference`; ``layer`` is the layer whose states are read
    (-1: the last) and ``pooling`` how a cell's vector is taken from them (``None`` for a call
    that pools no cells).
    """

    batch_size: int
    device: object = "cpu"
    precision: str = "fp32"
    layer: int = -1
    pooling: str | None = None

    def params(self) -> dict:
        """The settings as ``uns[...]["params"]`` records them."""
        out = {
            "device": str(self.device),
            "precision": self.precision,
            "batch_size": self.batch_size,
            "layer": self.layer,
        }
        if self.pooling is not None:
            out["pooling"] = self.pooling
        return out


def batches(
    module,
    data: TokenArrays,
    run: Inference,
    *,
    attentions: bool = False,
    hidden_states: bool = False,
    objective: str = "mlm",
    progress=None,
) -> Iterator[tuple[np.ndarray, dict, object]]:
    """Yield ``(cell indices, batch, output)`` over ``data``, longest cells first.

    Each batch of ``run.batch_size`` cells is padded only to its longest cell. Without
    ``attentions`` the output is the packed :meth:`~sctransformer.nn.CellTransformer.encode`
    result of layer ``run.layer`` (no
    compute on padding); with ``attentions`` it is :func:`attention_forward`'s (attention
    probabilities, and every layer's states with ``hidden_states``). ``progress`` (a tqdm
    bar) advances by the cells done.
    """
    import torch

    precision = run.precision
    if precision == "auto" and len(data):  # one precision for every batch of the call
        from ..nn.precision import choose_precision

        length = int(np.max(data.lengths))
        precision = choose_precision("auto", run.device, config=module.config, length=length)
    for idx in length_grouped_batches(data.lengths, run.batch_size):
        batch = collate(data, idx, run.device)
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
                    output_layer=run.layer,
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
    module, data: TokenArrays, run: Inference, *, is_gene: np.ndarray, progress=None
) -> np.ndarray:
    """Cell vectors ``(n, hidden)`` float32 in ``data``'s order.

    ``run.pooling``: ``"cls"`` the first token's state, ``"mean"`` the mean over gene tokens.
    """
    if run.pooling not in ("cls", "mean"):
        raise ValueError(f"pooling={run.pooling!r}; use 'cls' or 'mean'")
    out = np.zeros((len(data), module.config.hidden_size), dtype=np.float32)
    for idx, batch, enc in batches(module, data, run, progress=progress):
        mask = gene_positions(is_gene, batch["tokens"]) if run.pooling == "mean" else None
        out[idx] = enc.pool(run.pooling, mask).cpu().numpy()
    return out
