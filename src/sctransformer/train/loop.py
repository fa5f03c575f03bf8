"""The pretraining loop: AdamW, warm-up + cosine decay, clipping, checkpoints, resume, DDP/FSDP.

Every random choice of step ``s`` (batch order, masking, dropout) is derived from
``(seed, s)``, so resuming from a checkpoint at step ``s`` continues exactly as an
uninterrupted run would. Under ``torchrun`` each process takes its share of every global batch
and the loss is normalised by the global number of predicted positions, so the update equals
a single-process step on the same global batch.

Memory is planned before the first step (:mod:`sctransformer.train.budget`): when a batch of
the longest cells would not fit, each step runs in passes of fewer cells whose gradients add up
to the same update (the masks are drawn for the whole batch, as under DDP), and the run's cost
(tokens per cell, steps, memory, then seconds per step) is logged before it gets long.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import numpy as np
import torch

from .. import logging as logg
from .checkpoint import load_trainer, load_weights, save_state, start_step_of
from .data import TokenArrays, collate, length_grouped_batches
from .distributed import (
    copy_into,
    full_optimizer_state,
    process_group,
    require_process_group,
    shard,
)
from .optim import optimizer, seed_step
from .options import TrainConfig, config_dict  # noqa: F401  (their home; imported from here too)
from .step import Step, accumulate, global_objective, share


def _plan(data: TokenArrays, cfg: TrainConfig) -> list[np.ndarray]:
    """Global batches of every epoch, in order; each epoch shuffled from (seed, epoch)."""
    batches = []
    for epoch in range(cfg.epochs):
        batches.extend(
            length_grouped_batches(
                data.lengths, cfg.batch_size, shuffle=True, seed=cfg.seed * 7919 + epoch
            )
        )
    if cfg.max_steps is not None:
        batches = batches[: cfg.max_steps]
    return batches


def train(
    model,
    data: TokenArrays,
    cfg: TrainConfig,
    *,
    is_gene: np.ndarray,
    mask_id: int,
    device: str = "cpu",
    resume_from: str | os.PathLike | None = None,
    card=None,
    max_length: int | None = None,
    n_truncated: int | None = None,
) -> list[dict]:
    """Pretrain ``model`` in place on ``data``; returns the loss history (one dict per step).

    ``card``: what checkpoints save (a :class:`~sctransformer.models.Model` around ``model``,
    so each ``step-N/model`` folder carries the vocabulary and tokenization); default ``model``.

    Before the first step ``cfg.precision`` is resolved (``"auto"`` → the faster of fp32 and
    bf16 measured for this model's layer shape, training) and ``cfg.micro_batch_size`` set
    (``None`` → the most of the longest cells that fit in ``cfg.memory_limit`` or the memory
    available), so that ``config_dict(cfg)`` records what ran. ``max_length`` and
    ``n_truncated`` (cells whose genes did not all fit) only feed the cost log.

    Under ``torchrun`` ``cfg.distributed="ddp"`` wraps the step in DistributedDataParallel;
    ``"fsdp"`` trains a copy sharded with FSDP2 and gathers its whole weights into ``model``
    (left on the CPU) at every checkpoint and at the end, so checkpoints keep one format.

    Raises
    ------
    TrainingMemoryError
        Before training, when not even one of the longest cells fits in memory.
    ValueError
        ``cfg.distributed="fsdp"`` without a process group (not launched by ``torchrun``).
    """
    from ..nn.precision import autocast_context, choose_precision
    from .budget import plan_passes
    from .cost import TrainingCost

    require_process_group(cfg.distributed)
    dist = process_group()
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist else (1, 0)
    device = torch.device(device)
    fsdp = cfg.distributed == "fsdp"
    if resume_from is not None:
        load_weights(resume_from, model)
    if fsdp:  # a sharded copy trains; ``model`` receives its weights at checkpoints and the end
        runner = shard(Step(copy.deepcopy(model), cfg.objective), device)
        trained = runner.model
    else:
        trained = model.to(device).train()
        runner = Step(model, cfg.objective)
    if dist and not fsdp:
        # pretraining objectives use every head except a classifier; only then is the extra
        # autograd traversal for unused parameters needed
        runner = torch.nn.parallel.DistributedDataParallel(
            runner, find_unused_parameters="classifier" in model.heads
        )
    batches = _plan(data, cfg)
    total = len(batches)
    longest = int(data.lengths.max()) if len(data) else 1
    cfg.precision = choose_precision(
        cfg.precision, device, config=model.config, length=longest, training=True
    )
    if dist:  # one measured choice for every process: rank 0's
        names = ["fp32", "bf16", "fp16"]
        code = torch.tensor([names.index(cfg.precision)], device=device)
        dist.broadcast(code, 0)
        cfg.precision = names[int(code)]

    def smallest(micro: int) -> int:  # every process must accumulate, or none
        if not dist:
            return micro
        fits = torch.tensor([micro], device=device)
        dist.all_reduce(fits, op=dist.ReduceOp.MIN)
        return int(fits)

    local_cells = -(-cfg.batch_size // world)
    passes = plan_passes(
        model,
        local_cells,
        longest,
        objective=cfg.objective,
        mask_prob=cfg.mask_prob,
        device=str(device),
        memory=cfg.memory_limit or None,
        micro_batch_size=cfg.micro_batch_size,
        agree=smallest,
        shards=world if fsdp else 1,
    )
    micro = cfg.micro_batch_size = passes.micro_batch_size
    cost = TrainingCost(
        lengths=data.lengths,
        steps=total - (start_step_of(resume_from) if resume_from is not None else 0),
        batch_size=cfg.batch_size,
        config=model.config,
        precision=cfg.precision,
        device=str(device),
        max_length=max_length or (data.tokens.shape[1] if len(data) else None),
        n_truncated=n_truncated,
        micro_batch_size=micro,
        memory_estimate=passes.estimate,
        memory_available=passes.memory,
    )
    if rank == 0:
        cost.before()
    opt, sched = optimizer(trained, cfg, total)
    history: list[dict] = []
    start_step = 0
    if resume_from is not None:
        start_step, history = load_trainer(resume_from, opt, sched)
    is_gene_t = torch.as_tensor(is_gene, dtype=torch.bool, device=device)
    n_per_epoch = max(1, math.ceil(len(data) / cfg.batch_size))
    bar = logg.progress(total=total, desc=f"pretrain ({cfg.objective})", unit="step")
    bar.update(start_step)
    cost.start()
    with torch.random.fork_rng(devices=[]):
        for step in range(start_step, total):
            gen = seed_step(cfg.seed, step)
            batch = collate(data, batches[step])
            # masks are drawn for the global batch, then each process keeps its share
            local = share(batch, rank, world)
            kw = {
                "is_gene": is_gene_t,
                "mask_id": mask_id,
                "prob": cfg.mask_prob,
                "gen": gen,
                "precision_ctx": autocast_context(cfg.precision, device),
            }
            opt.zero_grad(set_to_none=True)
            if not passes.in_passes:
                loss_sum, n = global_objective(runner, batch, local, kw, device, dist)
                n_total = torch.tensor(float(n), device=device)
                if dist:
                    dist.all_reduce(n_total)
                n_total = max(float(n_total), 1.0)
                loss = loss_sum * (world / n_total)
                loss.backward()
            else:
                loss_sum, n_total = accumulate(runner, batch, local, micro, kw, device, dist)
                for p in trained.parameters():
                    if p.grad is not None:
                        p.grad.mul_(world / n_total)
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(trained.parameters(), cfg.clip)
            lr = float(opt.param_groups[0]["lr"])  # the rate of this step, before it advances
            opt.step()
            sched.step()
            logged = loss_sum.detach().clone()
            if dist:
                dist.all_reduce(logged)
            record = {
                "step": step + 1,
                "epoch": step // n_per_epoch,
                "loss": float(logged) / n_total,
                "lr": lr,
                "n_predicted": int(n_total),
            }
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            bar.update(1)
            if rank == 0:
                cost.step_done()
            if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
                if fsdp:  # every rank takes part in gathering; rank 0 writes
                    copy_into(model, trained)
                opt_state = full_optimizer_state(opt)
                if rank == 0:
                    save_state(
                        Path(cfg.checkpoint_dir) / f"step-{step + 1}",
                        model if card is None else card,
                        opt_state,
                        sched,
                        step + 1,
                        history,
                    )
    bar.close()
    if fsdp:
        copy_into(model, trained)
    model.eval()
    return history
