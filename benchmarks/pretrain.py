"""Pretraining throughput: this package's training loop vs transformers.BertForMaskedLM.

Both models start from the same random Geneformer-V1-shaped weights (6 layers, hidden 256,
4 heads, FFN 512, ReLU, post-LayerNorm, 2,048 positions; mapped with
``sctransformer.models.converters.bert``). Both train on the same generated cells, in the same
length-grouped batches (``sctransformer.train.data``, padded to each batch's longest cell), with
the same masked positions (``sctransformer.train.objectives.masked_batch`` with the loop's seeds),
AdamW, warm-up + cosine decay and gradient clipping. Ours runs ``sctransformer.train.loop.train``
as ``sct.tl.pretrain`` does; the reference is a plain loop over ``BertForMaskedLM`` with sdpa
attention. The script first checks that both give the same masked-token loss on a batch, then
prints training tokens/s (real tokens, padding excluded) in fp32 and bf16 autocast, and the ratio.

Run: ``python benchmarks/pretrain.py [--cells 48] [--batch-size 8] [--min-len 256]
[--max-len 1024] [--repeats 2] [--dropout 0.02] [--profile]``.
Timings are best-of-``repeats``; on a shared machine they are noisy.
"""

# ruff: noqa: E402  (the path fix below must run before the imports)
from __future__ import annotations

import os
import sys

# scripts in this folder are run directly; put their folder last on the path so their names
# (e.g. tokenize.py) do not shadow standard-library modules, while _common still imports
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import contextlib
import copy
import time

import numpy as np
import torch
import transformers
from _common import GENEFORMER_V1, cpu_model

import sctransformer as sct
from sctransformer.models.converters.bert import config_from_bert, state_dict_from_bert
from sctransformer.nn import CellTransformer
from sctransformer.nn.precision import autocast_context
from sctransformer.train.data import TokenArrays, collate
from sctransformer.train.loop import TrainConfig, _plan, optimizer, seed_step, train
from sctransformer.train.objectives import masked_batch

N_SPECIAL = 2  # ids 0 (<pad>) and 1 (<mask>); genes are 2..vocab_size-1
MASK_ID = 1


def synthetic_cells(n_cells: int, vocab_size: int, lo: int, hi: int, seed: int = 0) -> TokenArrays:
    """Rank-encoded-like cells: distinct gene ids per cell, lengths uniform in [lo, hi]."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, n_cells)
    tokens = np.zeros((n_cells, int(lengths.max())), dtype=np.int64)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.choice(np.arange(N_SPECIAL, vocab_size), size=n, replace=False)
    return TokenArrays(
        tokens=tokens, values=np.zeros(tokens.shape, np.float32), lengths=lengths, pad_id=0
    )


def is_gene_mask(vocab_size: int) -> torch.Tensor:
    is_gene = torch.ones(vocab_size, dtype=torch.bool)
    is_gene[:N_SPECIAL] = False
    return is_gene


def train_ours(model, data, cfg):
    return train(model, data, cfg, is_gene=is_gene_mask(model.config.vocab_size), mask_id=MASK_ID)


def train_bert(bert, data, cfg):
    """The same optimisation as ``train``, written against BertForMaskedLM."""
    is_gene = is_gene_mask(bert.config.vocab_size)
    batches = _plan(data, cfg)
    opt, sched = optimizer(bert, cfg, len(batches))
    ctx = autocast_context(cfg.precision, "cpu")
    bert.train()
    losses = []
    for step, idx in enumerate(batches):
        gen = seed_step(cfg.seed, step)
        batch = collate(data, idx)
        corrupted, chosen = masked_batch(
            batch,
            is_gene=is_gene,
            mask_id=MASK_ID,
            prob=cfg.mask_prob,
            gen=gen,
            mask_tokens=True,
            mask_values=False,
        )
        labels = torch.where(chosen, batch["tokens"], torch.full_like(batch["tokens"], -100))
        with ctx:
            out = bert(
                input_ids=corrupted["tokens"],
                attention_mask=batch["padding_mask"].long(),
                labels=labels,
            )
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(bert.parameters(), cfg.clip)
        opt.step()
        sched.step()
        losses.append(float(out.loss.detach()))
    bert.eval()
    return losses


def check_same_loss(ours, bert, data, cfg) -> float:
    """Masked-token loss of both models on the first planned batch, eval mode (no dropout)."""
    from sctransformer.train.objectives import mlm_loss

    idx = _plan(data, cfg)[0]
    batch = collate(data, idx)
    kw = dict(is_gene=is_gene_mask(ours.config.vocab_size), mask_id=MASK_ID, prob=cfg.mask_prob)
    ours.eval()
    bert.eval()
    with torch.no_grad():
        loss, n = mlm_loss(
            ours,
            batch,
            gen=torch.Generator().manual_seed(1),
            precision_ctx=contextlib.nullcontext(),
            **kw,
        )
        corrupted, chosen = masked_batch(
            batch, gen=torch.Generator().manual_seed(1), mask_tokens=True, mask_values=False, **kw
        )
        labels = torch.where(chosen, batch["tokens"], torch.full_like(batch["tokens"], -100))
        ref = bert(
            input_ids=corrupted["tokens"],
            attention_mask=batch["padding_mask"].long(),
            labels=labels,
        ).loss
    return abs(float(loss) / n - float(ref))


def profile(label, fn, rows=15) -> None:
    from torch.profiler import profile as torch_profile

    with torch_profile() as prof:
        fn()
    print(f"\n-- profile: {label} (self CPU time, top {rows}) --")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--min-len", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.02, help="Geneformer V1 uses 0.02")
    parser.add_argument("--profile", action="store_true", help="profile one run of each (fp32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sct.settings.progress_bars = False
    sct.settings.verbosity = 0

    print(f"CPU: {cpu_model()}; torch threads: {torch.get_num_threads()}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    hf = dict(
        GENEFORMER_V1,
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
    )
    bert0 = transformers.BertForMaskedLM(
        transformers.BertConfig(**hf, attn_implementation="sdpa")
    ).eval()
    config = config_from_bert(bert0.config.to_dict(), with_mlm_head=True)
    ours0 = CellTransformer(config)
    ours0.load_state_dict(state_dict_from_bert(bert0.state_dict(), config))
    ours0.vocab = None

    data = synthetic_cells(args.cells, config.vocab_size, args.min_len, args.max_len)
    n_tokens = int(data.lengths.sum())
    steps = -(-args.cells // args.batch_size)
    padded = sum(
        len(idx) * int(data.lengths[idx].max())
        for idx in _plan(data, TrainConfig(batch_size=args.batch_size))
    )
    print(
        f"{args.cells} cells, length {data.lengths.min()}-{data.lengths.max()} "
        f"(mean {data.lengths.mean():.0f}), batch size {args.batch_size}, {steps} steps/run, "
        f"{n_tokens} real tokens/run ({100 * (1 - n_tokens / padded):.1f}% of the padded "
        f"batches is padding), dropout {args.dropout}, best of {args.repeats}"
    )
    diff = check_same_loss(ours0, bert0, data, TrainConfig(batch_size=args.batch_size))
    print(f"|masked-token loss ours - BertForMaskedLM| on one batch (fp32, eval): {diff:.2e}")
    assert diff < 1e-4, diff

    def cfg(precision):
        return TrainConfig(
            objective="mlm",
            batch_size=args.batch_size,
            lr=1e-4,
            warmup_steps=1,
            precision=precision,
            seed=0,
        )

    def runner(name, precision):
        model0 = ours0 if name == "ours" else bert0
        fn = train_ours if name == "ours" else train_bert

        def run():
            model = copy.deepcopy(model0)
            start = time.perf_counter()
            fn(model, data, cfg(precision))
            return time.perf_counter() - start

        return run

    warm = TokenArrays(data.tokens[:2], data.values[:2], data.lengths[:2], pad_id=0)
    for precision in ("fp32", "bf16"):  # warm-up: kernels, autocast caches
        train_ours(copy.deepcopy(ours0), warm, TrainConfig(batch_size=2, precision=precision))
        train_bert(copy.deepcopy(bert0), warm, TrainConfig(batch_size=2, precision=precision))

    labels = {
        ("ours", "fp32"): "ours (sctransformer.train), fp32",
        ("bert", "fp32"): "BertForMaskedLM sdpa, length-grouped, fp32",
        ("ours", "bf16"): "ours (sctransformer.train), bf16 autocast",
        ("bert", "bf16"): "BertForMaskedLM sdpa, length-grouped, bf16 autocast",
    }
    best = dict.fromkeys(labels, float("inf"))
    for _ in range(args.repeats):  # round-robin, so load from other processes hits all alike
        for key in labels:
            best[key] = min(best[key], runner(*key)())

    print(f"\n{'configuration':52s} {'tokens/s':>9s} {'s/step':>7s}")
    for key, label in labels.items():
        print(f"{label:52s} {n_tokens / best[key]:9.0f} {best[key] / steps:7.2f}")
    for precision in ("fp32", "bf16"):
        ratio = best[("bert", precision)] / best[("ours", precision)]
        print(f"{precision}: ours / BertForMaskedLM = {ratio:.2f}x")

    if args.profile:
        profile("ours fp32", runner("ours", "fp32"))
        profile("BertForMaskedLM fp32", runner("bert", "fp32"))


if __name__ == "__main__":
    main()
