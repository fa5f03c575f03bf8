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

``--real`` runs the real-shaped case instead: cells generated as raw counts over a 32,786-gene
vocabulary with 400–6,000 expressed genes each, tokenized by ``sct.pp.tokenize(method="rank",
max_length=...)`` and trained with ``sct.tl.pretrain``'s default model (4 layers, hidden 128,
4 heads, FFN 256, dropout 0.02). Each configuration runs in its own process, so peak resident
memory is clean; the script prints training tokens/s, the peak RSS of the training steps (a
5 ms sampling thread, minus the RSS before training) and our memory estimate
(``sctransformer.train.budget``) beside the measured peak, for ours and for ``BertForMaskedLM``
(sdpa) on the same weights and batches: ``python benchmarks/pretrain.py --real [--steps 3]``.
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
import json
import subprocess
import threading
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
from sctransformer.train.loop import TrainConfig, _plan, train
from sctransformer.train.objectives import masked_batch
from sctransformer.train.optim import optimizer, seed_step

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


# --- the real-shaped case -------------------------------------------------------------------

REAL_GENES = 32_786  # the celltypist sample's gene count
DEFAULT_MODEL = dict(  # sct.tl.pretrain's default encoder, as BertConfig arguments
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=256,
    hidden_act="relu",
    layer_norm_eps=1e-12,
    pad_token_id=0,
    hidden_dropout_prob=0.02,
    attention_probs_dropout_prob=0.02,
)


def real_cells(n_cells: int, max_length: int, seed: int = 0):
    """Raw counts over 32,786 genes, 400–6,000 expressed per cell, tokenized by rank."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n_expr = rng.integers(400, 6001, n_cells)
    rows, cols, vals = [], [], []
    gene_scale = rng.lognormal(0.0, 1.0, REAL_GENES)
    for i, n in enumerate(n_expr):
        genes = rng.choice(REAL_GENES, size=n, replace=False, p=gene_scale / gene_scale.sum())
        rows.append(np.full(n, i))
        cols.append(genes)
        vals.append(1 + rng.negative_binomial(2, 0.5, n))
    x = sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_cells, REAL_GENES),
    )
    adata = ad.AnnData(x)
    adata.var_names = [f"G{j}" for j in range(REAL_GENES)]
    sct.pp.tokenize(adata, method="rank", max_length=max_length)
    return adata, n_expr


class PeakRSS:
    """Samples this process's resident memory every 5 ms (``/proc/self/statm``)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def run_case(case: dict) -> dict:
    """One configuration in this (fresh) process; returns its figures."""
    import resource

    import anndata as ad

    from sctransformer.train.budget import estimate_training_bytes

    torch.set_num_threads(case["threads"])
    sct.settings.progress_bars = False
    sct.settings.verbosity = 0
    adata = ad.read_h5ad(case["path"])
    lengths = adata.obs["sct_n_tokens"].to_numpy()
    width = adata.obsm["sct_tokens"].shape[1]
    data = TokenArrays(
        np.asarray(adata.obsm["sct_tokens"]),
        np.asarray(adata.obsm["sct_values"]),
        lengths,
        pad_id=0,
    )
    vocab_size = int(adata.uns["sct"]["vocab_size"])
    is_gene = torch.as_tensor(np.asarray(adata.uns["sct"]["is_gene"]))
    mask_id = int(adata.uns["sct"]["mask_id"])
    del adata
    torch.manual_seed(0)
    hf = dict(
        DEFAULT_MODEL,
        vocab_size=vocab_size,
        max_position_embeddings=width,
        hidden_dropout_prob=case["dropout"],
        attention_probs_dropout_prob=case["dropout"],
    )
    bert = transformers.BertForMaskedLM(transformers.BertConfig(**hf, attn_implementation="sdpa"))
    config = config_from_bert(bert.config.to_dict(), with_mlm_head=True)
    cfg = TrainConfig(
        batch_size=case["batch_size"],
        max_steps=case["steps"],
        lr=1e-4,
        warmup_steps=1,
        precision=case["precision"],
        micro_batch_size=case.get("micro_batch_size"),
    )
    if case["impl"] == "ours":
        model = CellTransformer(config)
        model.load_state_dict(state_dict_from_bert(bert.state_dict(), config))
        del bert
    else:
        model = bert
    batches = _plan(data, cfg)
    real = sum(int(data.lengths[idx].sum()) for idx in batches)
    longest = max(int(data.lengths[idx].max()) for idx in batches)
    estimate = estimate_training_bytes(config, case["batch_size"], longest, device="cpu")
    base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with PeakRSS() as mem:
        start = time.perf_counter()
        if case["impl"] == "ours":
            train(model, data, cfg, is_gene=is_gene, mask_id=mask_id)
        else:
            train_bert_with(model, data, cfg, is_gene, mask_id)
        seconds = time.perf_counter() - start
    return {
        **{k: v for k, v in case.items() if k != "path"},
        "tokens_per_s": real / seconds,
        "s_per_step": seconds / len(batches),
        "longest": longest,
        "step_peak_MiB": (mem.peak - mem.start) / 2**20,
        "process_peak_MiB": max(mem.peak, base_max) / 2**20,
        "estimate_MiB": estimate.total / 2**20 if case["impl"] == "ours" else float("nan"),
        "micro_batch_size": cfg.micro_batch_size or case["batch_size"],
    }


def train_bert_with(bert, data, cfg, is_gene, mask_id) -> None:
    """train_bert with this vocabulary's gene mask and mask id."""
    batches = _plan(data, cfg)
    opt, sched = optimizer(bert, cfg, len(batches))
    ctx = autocast_context(cfg.precision, "cpu")
    bert.train()
    for step, idx in enumerate(batches):
        gen = seed_step(cfg.seed, step)
        batch = collate(data, idx)
        corrupted, chosen = masked_batch(
            batch,
            is_gene=is_gene,
            mask_id=mask_id,
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


def real_main(args) -> None:
    import tempfile

    print(f"CPU: {cpu_model()}; torch threads: {args.threads}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    tmp = tempfile.mkdtemp()
    paths = {}
    for max_length in args.lengths:
        adata, n_expr = real_cells(args.real_cells, max_length)
        # the array keys the child needs, stored with the tokens
        vocab = sct.tokenizers.GeneVocab.from_json(adata.uns["sct"]["vocab"])
        adata.uns["sct"]["vocab_size"] = len(vocab)
        adata.uns["sct"]["is_gene"] = np.asarray(vocab.is_gene)
        adata.uns["sct"]["mask_id"] = vocab.mask_id
        path = os.path.join(tmp, f"cells_{max_length}.h5ad")
        adata.write_h5ad(path)
        paths[max_length] = path
        n = adata.obs["sct_n_tokens"].to_numpy()
        print(
            f"max_length {max_length}: {len(n)} cells, {n_expr.min()}-{n_expr.max()} expressed "
            f"genes, {n.mean():.0f} tokens per cell (max {n.max()}), "
            f"{int((n_expr + 1 > max_length).sum())} cut by max_length"
        )
    cases = []
    for max_length in args.lengths:
        for impl, batch in (("ours", args.pair_batch), ("bert", args.pair_batch)):
            cases.append(dict(impl=impl, max_length=max_length, batch_size=batch))
        for batch in args.ours_batches:
            cases.append(dict(impl="ours", max_length=max_length, batch_size=batch))
    print(
        f"\n{'configuration':34s} {'batch':>5s} {'pass':>4s} {'longest':>7s} {'tokens/s':>9s} "
        f"{'s/step':>7s} {'peak MiB':>9s} {'estimate':>9s}"
    )
    for case in cases:
        case.update(
            path=paths[case["max_length"]],
            steps=args.steps,
            precision="fp32",
            dropout=args.dropout,
            threads=args.threads,
        )
        proc = subprocess.run(
            [sys.executable, __file__, "--case", json.dumps(case)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            print(f"{case['impl']} batch {case['batch_size']}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        label = (
            "ours (sctransformer.train)"
            if r["impl"] == "ours"
            else "BertForMaskedLM sdpa, length-grouped"
        )
        label = f"{label}, L<={r['max_length']}"
        print(
            f"{label:34s} {r['batch_size']:5d} "
            f"{r['micro_batch_size']:4d} {r['longest']:7d} {r['tokens_per_s']:9.0f} "
            f"{r['s_per_step']:7.2f} {r['step_peak_MiB']:9.0f} {r['estimate_MiB']:9.0f}"
        )
    print(
        "peak MiB: resident memory the training steps added (sampled every 5 ms); estimate: "
        "sctransformer.train.budget.estimate_training_bytes for the same shape"
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        print(json.dumps(run_case(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--min-len", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.02, help="Geneformer V1 uses 0.02")
    parser.add_argument("--profile", action="store_true", help="profile one run of each (fp32)")
    parser.add_argument("--real", action="store_true", help="the real-shaped case (see docs)")
    parser.add_argument("--real-cells", type=int, default=32)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pair-batch", type=int, default=2, help="ours vs BertForMaskedLM")
    parser.add_argument("--ours-batches", type=int, nargs="*", default=[8, 16])
    args = parser.parse_args()
    if args.real:
        real_main(args)
        return
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
