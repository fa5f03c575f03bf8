"""The evaluation of ``sct.tl.benchmark`` on two offline data sets, over several seeds.

1. pbmc68k counts (``sct.datasets.pbmc68k_counts()``, 700 PBMCs × 765 genes, ``bulk_labels``,
   10 types): k-fold cross-validation (label prediction) and the embedding task, with the
   bundled ``sct-tiny-pbmc`` model (pretrained without labels on these 700 cells).
2. A generated two-batch data set (negative-binomial counts with cell-type programmes, batch 2
   with per-gene multiplicative distortion and twice the depth): a cross-batch split (trained
   on batch ``b1``, tested on ``b2``), the embedding task and the integration task, with a small
   model pretrained here (its genes are made up) with ``<batch=…>`` condition tokens.

Every method runs on the same splits; the baselines (L2 and L1 logistic regression on
log-normalised HVGs, PCA + logistic regression, PCA + kNN, XGBoost and scVI when installed)
are tuned by cross-validation on the training cells only. Each table row is the mean ± sample
standard deviation over seeds (of each seed's mean over folds). The cz-benchmarks-style long
tables go to ``--export`` (TSV).

Run: ``python benchmarks/annotation.py [--seeds 3] [--folds 3] [--epochs 3] [--no-xgboost]``.
Timings are wall-clock seconds on a shared machine; they are noisy.
"""

# ruff: noqa: E402  (the path fix below must run before the imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from _common import cpu_model
from anndata import AnnData

import sctransformer as sct
from sctransformer.tl._baselines import has_scvi
from sctransformer.tl._benchmark import has_xgboost

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


def show(adata: AnnData, title: str) -> pd.DataFrame:
    entry = adata.uns["sct_benchmark"]
    t, params = entry["table"], entry["params"]
    lab = t[t["task"] == "label_prediction"]
    print(f"\n{title}")
    if len(lab):
        how = (f"{params['n_folds']}-fold cross-validation" if params["n_folds"]
               else f"split {params['split_key'] or 'stratified'} {params['test_groups'] or ''}")  # fmt: skip
        print(f"  {how}; seeds {params['seeds']}; train {lab['n_train'].iloc[0]} / test "
              f"{lab['n_test'].iloc[0]} cells per split; {lab['split_sha'].nunique()} distinct "
              "splits, shared by every method")  # fmt: skip
    s = entry["summary"]
    s = s.assign(cell=[f"{m:.3f} ± {d:.3f}" for m, d in zip(s["mean"], s["std"], strict=True)])
    out = []
    for task in ("label_prediction", "embedding", "integration"):
        part = s[s["task"] == task]
        if part.empty:
            continue
        wide = part.pivot_table(index=["method", "family"], columns="metric", values="cell",
                                aggfunc="first", sort=False)  # fmt: skip
        first = "macro_f1" if task == "label_prediction" else wide.columns[0]
        order = part[part["metric"] == first].sort_values("mean", ascending=False)["method"]
        wide = wide.reset_index().set_index("method").loc[list(order)]
        print(f"  task {task} (mean ± std over {part['n'].max()} {part['spread_over'].iloc[0]})")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(wide.to_string())
        out.append(wide)
    best = lab[(lab["label"] == "") & (lab["metric"] == "macro_f1") & (lab["seed"] == lab["seed"].min())
               & (lab["fold"] == 0)].set_index("method")["best_params"]  # fmt: skip
    if len(best):
        print("  tuned hyper-parameters (first seed, first fold): "
              + "; ".join(f"{m}: {p}" for m, p in best.items()))  # fmt: skip
    return out


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument(
        "--folds",
        type=int,
        default=3,
        help="k of the pbmc68k cross-validation; 0: one stratified 80/20 split",
    )
    p.add_argument("--n-top-genes", type=int, default=2000, help="baseline genes (HVGs)")
    p.add_argument("--cv", type=int, default=3, help="folds of the baselines' tuning")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (early stopping)")
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--scvi-epochs", type=int, default=50)
    p.add_argument("--two-batch-cells", type=int, default=600)
    p.add_argument("--no-xgboost", action="store_true")
    p.add_argument("--no-finetune", action="store_true")
    p.add_argument("--export", help="write the cz-benchmarks-style long tables here (TSV)")
    p.add_argument("--only", choices=["pbmc68k", "two_batch"], help="run one data set")
    p.add_argument("--verbose", action="store_true", help="log each method as it finishes")
    args = p.parse_args()
    sct.settings.progress_bars = False
    sct.settings.verbosity = 3 if args.verbose else 1
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print("machine:", platform.platform(), "|", cpu_model(), "| shared with other jobs")
    print(
        f"  cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, python "
        f"{platform.python_version()}, torch {torch.__version__}, sctransformer "
        f"{sct.__version__}, xgboost {'yes' if has_xgboost() else 'not installed'}, "
        f"scvi-tools {'yes' if has_scvi() else 'not installed'}"
    )
    seeds = list(range(args.seeds))
    methods = [m for m in sct.tl._benchmark.default_methods("model")
               if not (args.no_xgboost and m == "xgboost")
               and not (args.no_finetune and m == "sct_finetune")]  # fmt: skip
    kw = {"epochs": args.epochs}
    common = dict(methods=methods, annotate_kwds=kw, seeds=seeds, scvi_epochs=args.scvi_epochs,
                  n_top_genes=args.n_top_genes, cv=args.cv, device="cpu")  # fmt: skip

    done = []
    if args.only != "two_batch":
        done.append(run_pbmc(args, common))
    if args.only != "pbmc68k":
        done.append(run_two_batch(args, common))
    print(f"\npeak RSS {peak_rss_mib():.0f} MiB")
    if args.export:
        cz = pd.concat([sct.tl.to_czbenchmarks(a) for a in done], ignore_index=True)
        cz.to_csv(args.export, sep="\t", index=False)
        print(f"cz-benchmarks-style long table ({len(cz)} rows) written to {args.export}")


def run_pbmc(args, common) -> AnnData:
    pbmc = sct.datasets.pbmc68k_counts()
    print(f"\n[1] pbmc68k counts: {pbmc.n_obs} cells × {pbmc.n_vars} genes, bulk_labels")
    if TINY.exists():
        model = sct.models.load("sct-tiny-pbmc")
        print("  model: bundled sct-tiny-pbmc (pretrained without labels on these 700 cells)")
    else:
        print("  model: sct-tiny-pbmc not built; pretraining a small model here")
        model = pretrain_small(pbmc, epochs=args.pretrain_epochs)
    t0 = time.perf_counter()
    sct.tl.benchmark(pbmc, labels_key="bulk_labels", model=model, n_folds=args.folds or None,
                     dataset="pbmc68k", **common)  # fmt: skip
    how = f"{args.folds}-fold cross-validation" if args.folds else "stratified 80/20 split"
    show(pbmc, f"pbmc68k, {how} ({time.perf_counter() - t0:.0f} s)")
    return pbmc


def run_two_batch(args, common) -> AnnData:
    two = two_batch_counts(n_cells=args.two_batch_cells)
    print(f"\n[2] generated two-batch data: {two.n_obs} cells × {two.n_vars} genes, 6 types")
    model2 = pretrain_small(two, epochs=args.pretrain_epochs, batch_key="batch")
    t0 = time.perf_counter()
    sct.tl.benchmark(two, labels_key="cell_type", split_key="batch", test_groups=["b2"],
                     model=model2, batch_key="batch", dataset="two_batch", **common)  # fmt: skip
    show(two, f"two batches: train b1, test b2; integration over b1+b2 "
              f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return two


if __name__ == "__main__":
    main()
