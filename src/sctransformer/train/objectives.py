"""Pretraining objectives: masked tokens (MLM), next token (NTP) and scGPT's generative task.

Each objective corrupts a batch with a seeded generator and returns the summed loss and the
number of predicted positions, so the loss can be normalised by the *global* count across
processes (what makes distributed training equal single-process training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_VALUE = -1.0  # continuous input at masked positions (scGPT's mask_value)

# rows of vocabulary logits computed at once by token_loss (fp32: ~64 MiB at 32,768 tokens)
LOGIT_ELEMENTS = 16 * 2**20


def _local(draws: torch.Tensor, batch: dict) -> torch.Tensor:
    """Return this share's rows (and columns: a micro-batch may be trimmed to its longest cell)."""
    rows = batch.get("rows")
    if rows is not None:
        draws = draws[rows]
    return draws[:, : batch["tokens"].shape[1]].to(batch["tokens"].device)


def _uniform(batch: dict, gen: torch.Generator) -> torch.Tensor:
    """Uniform draws over the *global* batch, sliced to this process's rows (see loop.py)."""
    u = torch.rand(batch.get("global_shape", tuple(batch["tokens"].shape)), generator=gen)
    return _local(u, batch)


def _randint(batch: dict, gen: torch.Generator, high: int) -> torch.Tensor:
    shape = batch.get("global_shape", tuple(batch["tokens"].shape))
    return _local(torch.randint(high, shape, generator=gen), batch)


def _head_loss(head, hidden, target):
    return F.cross_entropy(head(hidden).float(), target, reduction="sum")


def token_loss(head, hidden: torch.Tensor, target: torch.Tensor, *, block_elements=None):
    """Summed cross-entropy of a vocabulary head at the predicted positions only.

    ``hidden`` holds just the predicted rows ``[n, d]`` (never all ``L`` positions), and the
    ``[n, vocab_size]`` logits are made in blocks of rows, each recomputed in the backward pass
    (:func:`torch.utils.checkpoint.checkpoint`), so at most one block of logits is alive:
    memory stays small however large the vocabulary and the batch. Same value and gradients
    as one ``cross_entropy(head(hidden), target, reduction="sum")``.
    """
    from torch.utils.checkpoint import checkpoint

    n = hidden.shape[0]
    vocab = head.bias.shape[0] if hasattr(head, "bias") and head.bias is not None else None
    if vocab is None:
        vocab = head.decoder.out_features
    rows = max(1, (block_elements or LOGIT_ELEMENTS) // vocab)
    if not torch.is_grad_enabled() or n <= rows:
        return _head_loss(head, hidden, target)
    loss = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, n, rows):
        sl = slice(start, start + rows)
        loss = loss + checkpoint(_head_loss, head, hidden[sl], target[sl], use_reentrant=False)
    return loss


def _choose(candidates: torch.Tensor, prob: float, draw: torch.Tensor) -> torch.Tensor:
    chosen = (draw < prob) & candidates
    # every cell with a candidate predicts at least one position, so no batch is empty
    none = candidates.any(1) & ~chosen.any(1)
    if none.any():
        first = torch.where(candidates, draw, torch.full_like(draw, 2.0)).argmin(1)
        chosen[none, first[none]] = True
    return chosen


def _value_losses(model, hidden, values, chosen) -> tuple[torch.Tensor, int]:
    loss = hidden.new_zeros(())
    if "bins" in model.heads:
        n_bins = model.config.n_value_bins
        target = values[chosen].long().clamp(0, n_bins - 1)
        loss = loss + F.cross_entropy(
            model.heads["bins"](hidden[chosen]).float(), target, reduction="sum"
        )
    if "value" in model.heads:
        pred = model.heads["value"](hidden[chosen]).float()
        loss = loss + F.mse_loss(pred, values[chosen].float(), reduction="sum")
    return loss, int(chosen.sum())


def masked_batch(
    batch: dict,
    *,
    is_gene: torch.Tensor,
    mask_id: int,
    prob: float,
    gen: torch.Generator,
    mask_tokens: bool,
    mask_values: bool,
) -> tuple[dict, torch.Tensor]:
    """Corrupt a batch BERT-style: of the chosen gene positions 80% ``<mask>``, 10% a random
    gene, 10% unchanged (tokens); chosen values are replaced by the mask value.
    """
    tokens, values = batch["tokens"], batch["values"]
    candidates = batch["padding_mask"] & is_gene[tokens]
    chosen = _choose(candidates, prob, _uniform(batch, gen))
    new = dict(batch)
    if mask_tokens:
        r = _uniform(batch, gen)
        gene_ids = torch.nonzero(is_gene).ravel()
        random_gene = gene_ids[_randint(batch, gen, len(gene_ids))]
        t = tokens.clone()
        t[chosen & (r < 0.8)] = mask_id
        swap = chosen & (r >= 0.8) & (r < 0.9)
        t[swap] = random_gene[swap]
        new["tokens"] = t
    if mask_values:
        v = values.clone()
        v[chosen] = MASK_VALUE
        new["values"] = v
    return new, chosen


def mlm_loss(model, batch, *, is_gene, mask_id, prob, gen, precision_ctx):
    """Masked-token loss (token, bin and value heads) summed, and the positions predicted."""
    has_tokens = "mlm" in model.heads
    corrupted, chosen = masked_batch(
        batch,
        is_gene=is_gene,
        mask_id=mask_id,
        prob=prob,
        gen=gen,
        mask_tokens=has_tokens,
        mask_values=model.config.value_input != "none",
    )
    with precision_ctx:
        out = _forward(model, corrupted["tokens"], corrupted["values"], batch, "mlm")
    hidden = out.last_hidden_state
    loss, n = _value_losses(model, hidden, batch["values"], chosen)
    if has_tokens:
        loss = loss + token_loss(model.heads["mlm"], hidden[chosen], batch["tokens"][chosen])
    return loss, n


def ntp_loss(model, batch, *, precision_ctx, **_):
    """Decoder-only: each position predicts the next token (tGPT / scMulan)."""
    with precision_ctx:
        out = _forward(model, batch["tokens"], batch["values"], batch, "ntp")
    hidden = out.last_hidden_state[:, :-1]
    target = batch["tokens"][:, 1:]
    valid = batch["padding_mask"][:, 1:]
    return token_loss(model.heads["ntp"], hidden[valid], target[valid]), int(valid.sum())


def generative_loss(model, batch, *, is_gene, mask_id, prob, gen, precision_ctx):
    """ScGPT's generative task: chosen genes are hidden and predicted from the known genes only."""
    candidates = batch["padding_mask"] & is_gene[batch["tokens"]]
    chosen = _choose(candidates, prob, _uniform(batch, gen))
    tokens, values = batch["tokens"].clone(), batch["values"].clone()
    has_tokens = "mlm" in model.heads
    if has_tokens:
        tokens[chosen] = mask_id
    if model.config.value_input != "none":
        values[chosen] = MASK_VALUE
    with precision_ctx:
        out = _forward(model, tokens, values, batch, "generative", gen_mask=chosen)
    hidden = out.last_hidden_state
    loss, n = _value_losses(model, hidden, batch["values"], chosen)
    if has_tokens:
        loss = loss + token_loss(model.heads["mlm"], hidden[chosen], batch["tokens"][chosen])
    return loss, n


def _forward(model, tokens, values, batch, objective, gen_mask=None):
    """The training forward pass over ``batch``'s padding, values only where the model reads them."""
    values = values if model.config.value_input != "none" else None
    return model(
        tokens, values, padding_mask=batch["padding_mask"], objective=objective, gen_mask=gen_mask
    )


OBJECTIVES = {"mlm": mlm_loss, "ntp": ntp_loss, "generative": generative_loss}
