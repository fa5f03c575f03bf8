"""Fine-tuning a classifier head (and the encoder) on labelled cells; no AnnData here.

Uses the pretraining loop's optimiser (AdamW without decay on biases and norms, warm-up and
cosine decay) and its per-step seeding, so a fine-tuning run is reproducible the same way, and
its memory plan (:func:`sctransformer.train.budget.plan_passes`): when a batch of the longest
cells would not fit, each step runs in passes of fewer cells whose gradients add up to the same
update, and when not even one cell fits the run stops before training.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import logging as logg
from ..nn.model import CellTransformer, pool
from . import infer
from .data import TokenArrays, collate, length_grouped_batches, model_inputs
from .optim import optimizer, seed_step
from .options import TrainConfig


def with_classifier(module: CellTransformer, n_classes: int, seed: int) -> CellTransformer:
    """A copy of ``module`` with a fresh classifier head of ``n_classes`` (seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CellTransformer(replace(module.config, num_classes=n_classes))
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("heads.classifier.")}
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("heads.classifier.")]
    if missing or result.unexpected_keys:  # pragma: no cover - same architecture by design
        raise RuntimeError(
            f"could not copy the encoder: {missing[:3]} {result.unexpected_keys[:3]}"
        )
    return net


def split_validation(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation positions, stratified by label where every class allows it."""
    n = len(y)
    n_val = round(n * fraction)
    if fraction <= 0 or n_val < 1 or n - n_val < 2:
        return np.arange(n), np.arange(0)
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    strat = y if counts.min() >= 2 and n_val >= len(counts) else None
    tr, va = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


def finetune_classifier(
    net: CellTransformer,
    data: TokenArrays,
    y: np.ndarray,
    *,
    is_gene: np.ndarray,
    freeze: bool,
    pooling: str,
    layer: int,
    epochs: int,
    batch_size: int,
    lr: float,
    encoder_lr: float,
    weight_decay: float,
    class_weight: bool,
    validation_fraction: float,
    patience: int,
    device,
    seed: int,
    memory_limit: int | None = None,
) -> tuple[CellTransformer, pd.DataFrame]:
    """Train ``net``'s classifier head (and the encoder unless ``freeze``) on ``data``, ``y``.

    When the encoder trains, each step of ``batch_size`` cells runs in as few passes as fit in
    ``memory_limit`` bytes (``None``: the memory available), gradients accumulated to the
    same update; the choice is logged.

    Returns the model with the best validation epoch's weights and the per-epoch history.

    Raises
    ------
    TrainingMemoryError
        Before any weight changes, when not even one of the longest cells fits in memory.
    """
    n_classes = net.config.num_classes
    net = net.to(device)
    tr, va = split_validation(y, validation_fraction, seed)
    micro = (
        batch_size
        if freeze
        else _fit_passes(net, data.lengths[tr], batch_size, device, memory_limit)
    )
    counts = np.bincount(y[tr], minlength=n_classes).astype(np.float64)
    weight = None
    if class_weight:
        w = np.where(counts > 0, len(tr) / (n_classes * np.maximum(counts, 1)), 0.0)
        weight = torch.as_tensor(w, dtype=torch.float32, device=device)
    y_t = torch.as_tensor(y, dtype=torch.long, device=device)
    head = net.heads["classifier"]
    is_gene_t = torch.as_tensor(np.asarray(is_gene), device=device)
    n_layers = net.config.num_layers
    k = layer if layer > 0 else n_layers + 1 + layer

    # Pooled vectors of a pretrained encoder share a large common component (cosine ~1
    # between cells), which a freshly initialised head learns from slowly. The head is trained
    # on standardised vectors (mean and scale of the reference's initial embeddings) and the
    # standardisation is folded into its first layer afterwards, so the saved head is an
    # ordinary ClassifierHead.
    net.eval()
    run = infer.Inference(batch_size, device, "fp32", layer, pooling)
    init = infer.pooled(net, data, run, is_gene=is_gene)
    mu = torch.as_tensor(init.mean(0), device=device)
    sd = torch.as_tensor(np.maximum(init.std(0), 1e-6), device=device)
    frozen = torch.as_tensor(init, device=device) if freeze else None

    def logits_of(idx):
        if frozen is not None:  # the encoder never changes: the head trains on the vectors
            return head((frozen[idx] - mu) / sd)
        batch = collate(data, idx, device)
        tokens, values = model_inputs(net, batch)
        out = net(
            tokens, values, padding_mask=batch["padding_mask"], output_hidden_states=k != n_layers
        )
        h = out.last_hidden_state if k == n_layers else out.hidden_states[k]
        mask = batch["padding_mask"]
        if pooling == "mean":
            mask = mask & is_gene_t[batch["tokens"]]
        return head((pool(h, mask, pooling) - mu) / sd)

    def evaluate(idx_all) -> tuple[float, float]:
        net.eval()
        loss, correct = 0.0, 0
        with torch.no_grad():
            for idx in length_grouped_batches(data.lengths[idx_all], batch_size):
                cells = idx_all[idx]
                lg = logits_of(cells).float()
                # unweighted: class weights on a small held-out part make the loss too noisy
                loss += float(F.cross_entropy(lg, y_t[cells], reduction="sum"))
                correct += int((lg.argmax(1) == y_t[cells]).sum())
        return loss / max(len(idx_all), 1), correct / max(len(idx_all), 1)

    plan = [
        length_grouped_batches(data.lengths[tr], batch_size, shuffle=True, seed=seed * 7919 + e)
        for e in range(epochs)
    ]
    # a constant rate (no warm-up): with early stopping, cosine decay to zero over the planned
    # epochs made the bundled model's pbmc annotation worse (accuracy 0.49 vs 0.57)
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
        warmup_steps=0, lr_schedule="constant",
    )  # fmt: skip
    trained = head if freeze else net
    lr_of = {id(p): lr for p in head.parameters()}
    opt, sched = optimizer(
        trained, cfg, sum(len(p) for p in plan), lr_of=lambda p: lr_of.get(id(p), encoder_lr)
    )
    history = []
    best, best_state, waited, step = np.inf, None, 0, 0
    bar = logg.progress(total=sum(len(p) for p in plan), desc="fine-tune", unit="step")
    with torch.random.fork_rng(devices=[]):
        for epoch, batches in enumerate(plan):
            trained.train()
            total, n_seen = 0.0, 0
            for idx in batches:
                seed_step(seed, step)
                cells = tr[idx]
                opt.zero_grad(set_to_none=True)
                if len(cells) <= micro:
                    loss = F.cross_entropy(logits_of(cells).float(), y_t[cells], weight=weight)
                    loss.backward()
                    loss = loss.item()
                else:  # the batch's weighted mean, one pass of ``micro`` cells at a time
                    norm = len(cells) if weight is None else float(weight[y_t[cells]].sum())
                    loss = 0.0
                    for start in range(0, len(cells), micro):
                        part = cells[start : start + micro]
                        lg = logits_of(part).float()
                        part_loss = F.cross_entropy(lg, y_t[part], weight=weight, reduction="sum")
                        (part_loss / norm).backward()
                        loss += part_loss.item() / norm
                torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
                opt.step()
                sched.step()
                total += loss * len(cells)
                n_seen += len(cells)
                step += 1
                bar.update(1)
            rec = {"epoch": epoch + 1, "train_loss": total / max(n_seen, 1)}
            if len(va):
                rec["val_loss"], rec["val_accuracy"] = evaluate(va)
                bar.set_postfix(val_loss=f"{rec['val_loss']:.3f}")
                if rec["val_loss"] < best - 1e-4:
                    best, waited = rec["val_loss"], 0
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    waited += 1
            history.append(rec)
            if len(va) and patience and waited >= patience:
                logg.hint(f"early stopping after epoch {epoch + 1} (best val loss {best:.3f})")
                break
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    with torch.no_grad():  # fold (x - mu) / sd into the head's first layer
        w = head.dense.weight / sd[None, :]
        head.dense.bias -= w @ mu
        head.dense.weight.copy_(w)
    net.eval()
    return net, pd.DataFrame(history)


def _fit_passes(net, lengths: np.ndarray, batch_size: int, device, memory_limit) -> int:
    """Cells per forward/backward pass when the encoder trains; logs the plan."""
    from .budget import GiB, plan_passes

    longest = int(lengths.max()) if len(lengths) else 1
    cells = min(batch_size, max(1, len(lengths)))
    plan = plan_passes(net, cells, longest, objective=None, device=str(device), memory=memory_limit)
    passes = (
        f"; each step in passes of {plan.micro_batch_size} cells (gradients accumulated, the "
        "same updates)"
        if plan.in_passes
        else ""
    )
    logg.info(
        f"    fine-tune memory: about {plan.estimate.total / GiB:.2f} GiB for {plan.micro_batch_size}"
        f" cells of up to {longest} tokens of {plan.memory / GiB:.1f} GiB available{passes}"
    )
    return plan.micro_batch_size
