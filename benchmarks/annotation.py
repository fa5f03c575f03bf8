"""Cell-type annotation: transformer arms against tuned classical baselines, on one split each.

Two data sets, both offline:

1. pbmc68k counts (``sct.datasets.pbmc68k_counts()``, 700 PBMCs × 765 genes, ``bulk_labels``,
   10 types) with a stratified 80/20 split.
2. A generated two-batch data set (negative-binomial counts with cell-type programmes, batch 2
   with per-gene multiplicative distortion and twice the depth) with a cross-batch split:
   trained on batch ``b1``, tested on batch ``b2``.

Every method of ``sct.tl.benchmark`` runs on the same split; the baselines (logistic
regression on log-normalised HVGs, PCA + logistic regression, PCA + kNN, XGBoost when
installed) are tuned by cross-validation on the training cells only. The transformer arms use
the bundled ``sct-tiny-pbmc`` model for pbmc68k when it exists, else a small model pretrained
here (masked-token objective, no labels); the two-batch data always gets a model pretrained
here (its genes are made up), with ``<batch=…>`` condition tokens.

Run: ``python benchmarks/annotation.py [--epochs 10] [--pretrain-epochs 8] [--no-xgboost]``.
Timings are wall-clock seconds on a shared machine; they are noisy.
"""

# ruff: noqa: E402  (the path fix below must run before the imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

import sctransformer as sct
from sctransformer.tl._benchmark import has_xgboost, summary

TINY = Path(sct.__file__).parent / "models" / "weights" / "sct-tiny-pbmc"


def two_batch_counts(n_cells=800, n_genes=400, n_types=6, seed=0) -> AnnData:
    rng = np.random.default_rng(seed)
    base = rng.lognormal(-1.0, 1.2, n_genes) * 2.0
    labels = rng.integers(0, n_types, n_cells)
    programme = np.ones((n_types, n_genes))
    for t, block in enumerate(np.array_split(rng.permutation(n_genes), n_types)):
        programme[t, block[: len(block) // 4]] = 4.0  # weaker programmes than the tests use
    batch = np.where(rng.random(n_cells) < 0.5, "b1", "b2")
    distortion = np.where(
        batch[:, None] == "b2", rng.lognormal(0.0, 0.6, n_genes)[None, :] * 2.0, 1.0
    )
    size = rng.lognormal(0.0, 0.4, n_cells)[:, None]
    mu = base[None, :] * programme[labels] * size * distortion
    counts = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type{t}" for t in labels]),
            "batch": pd.Categorical(batch),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return AnnData(
        sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)])
    )


def pretrain_small(adata: AnnData, *, epochs: int, batch_key=None, seed=0):
    tok = adata.copy()
    sct.pp.tokenize(tok, method="rank", max_length=128, batch_key=batch_key)
    vocab = sct.tokenizers.GeneVocab.from_json(tok.uns["sct"]["vocab"])
    cfg = sct.nn.TransformerConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        ffn_size=128,
        max_positions=128,
        dropout=0.1,
        attention_dropout=0.1,
        pad_token_id=vocab.pad_id,
    )
    t0 = time.perf_counter()
    model = sct.tl.pretrain(
        tok,
        model=cfg,
        epochs=epochs,
        batch_size=16,
        lr=3e-3,
        seed=seed,
        device="cpu",
        batch_key=batch_key,
    )
    hist = tok.uns["sct_pretrain"]["history"]
    print(
        f"  pretrained (MLM, no labels) on all {tok.n_obs} cells: {len(hist)} steps in "
        f"{time.perf_counter() - t0:.0f} s, loss {hist['loss'].head(5).mean():.2f} -> "
        f"{hist['loss'].tail(20).mean():.2f}"
    )
    model.metadata["name"] = "pretrained in benchmarks/annotation.py"
    return model


def show(adata: AnnData, title: str) -> None:
    table = summary(adata).round(3)
    params = adata.uns["sct_benchmark_params"]
    t = adata.uns["sct_benchmark"]
    print(f"\n{title}")
    print(
        f"  train {t['n_train'].iloc[0]} / test {t['n_test'].iloc[0]} cells; split "
        f"{params['split_key'] or 'stratified'} {params['test_groups'] or ''}; one split for "
        f"all methods (split sha {t['split_sha'].iloc[0]}, {t['split_sha'].nunique()} distinct)"
    )
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(table.sort_values("macro_f1", ascending=False).to_string())
    best = t[(t["label"] == "") & (t["metric"] == "macro_f1")].set_index("method")["best_params"]
    print("  tuned hyper-parameters: " + "; ".join(f"{m}: {p}" for m, p in best.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (early stopping)")
    p.add_argument("--pretrain-epochs", type=int, default=8)
    p.add_argument("--no-xgboost", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    sct.settings.progress_bars = False
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print("machine:", platform.platform(), "|", platform.processor() or platform.machine())
    print(
        f"  cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, python "
        f"{platform.python_version()}, torch {torch.__version__}, sctransformer "
        f"{sct.__version__}, xgboost {'yes' if has_xgboost() else 'not installed'}"
    )
    methods = None
    if args.no_xgboost:
        methods = [
            "majority",
            "logreg_hvg",
            "pca_logreg",
            "pca_knn",
            "sct_linear",
            "sct_knn",
            "sct_finetune",
        ]
    kw = {"epochs": args.epochs}

    pbmc = sct.datasets.pbmc68k_counts()
    print(f"\n[1] pbmc68k counts: {pbmc.n_obs} cells × {pbmc.n_vars} genes, bulk_labels")
    if TINY.exists():
        model = sct.models.load("sct-tiny-pbmc")
        print("  model: bundled sct-tiny-pbmc (pretrained without labels on these 700 cells)")
    else:
        print("  model: sct-tiny-pbmc not built; pretraining a small model here")
        model = pretrain_small(pbmc, epochs=args.pretrain_epochs, seed=args.seed)
    t0 = time.perf_counter()
    sct.tl.benchmark(
        pbmc,
        labels_key="bulk_labels",
        model=model,
        methods=methods,
        annotate_kwds=kw,
        seed=args.seed,
        device="cpu",
    )
    show(pbmc, f"pbmc68k, stratified 80/20 split ({time.perf_counter() - t0:.0f} s)")

    two = two_batch_counts(seed=args.seed)
    print(f"\n[2] generated two-batch data: {two.n_obs} cells × {two.n_vars} genes, 6 types")
    model2 = pretrain_small(two, epochs=args.pretrain_epochs, batch_key="batch", seed=args.seed)
    t0 = time.perf_counter()
    sct.tl.benchmark(
        two,
        labels_key="cell_type",
        split_key="batch",
        test_groups=["b2"],
        model=model2,
        methods=methods,
        annotate_kwds=kw,
        batch_key="batch",
        seed=args.seed,
        device="cpu",
    )
    show(
        two, f"two batches, cross-batch split: train b1, test b2 ({time.perf_counter() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
