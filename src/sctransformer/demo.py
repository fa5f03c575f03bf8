"""``sctransformer demo``: the package's main job end to end on bundled data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def knn_accuracy(x: np.ndarray, labels, *, k: int = 15, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated k-nearest-neighbour accuracy of ``labels`` in the space ``x``."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(k), x, np.asarray(labels), cv=cv)
    return float(scores.mean())


def run_demo(out: Path, *, pretrain: bool = False, epochs: int = 3) -> dict:
    """Run the package's main job end to end on the bundled PBMC counts.

    Tokenize → load (or pretrain) a model → embed → neighbours/UMAP → annotate → attention
    network → figures, h5ad and a summary.

    ``demo.h5ad`` holds, besides the tokens, ``obsm["X_sct"]``, the UMAP and the attention
    network: ``obs["sct_label"]`` (the label predicted by a linear classifier fitted on the
    reference cells, for every cell), ``obs["sct_label_score"]``, ``obsm["sct_label_proba"]``,
    ``uns["sct_label"]["params"]`` as :func:`sctransformer.tl.annotate` writes them, and
    ``obs["sct_split"]`` (``"reference"``: the 70% the classifier was fitted on; ``"query"``:
    the cells the reported annotation accuracy is measured on).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    import sctransformer as sct

    out.mkdir(parents=True, exist_ok=True)
    adata = sct.datasets.pbmc68k_counts()
    print(f"data: pbmc68k counts, {adata.n_obs} cells × {adata.n_vars} genes")
    if pretrain:
        sct.pp.tokenize(adata, method="rank", max_length=512)
        model = sct.tl.pretrain(adata, epochs=epochs, batch_size=16, lr=2e-3, seed=0)
        sct.pl.training_history(adata, save=out / "training_history.png")
        sct.models.save(model, out / "model")
        model_name = "pretrained in demo"
    else:
        model = sct.models.load("sct-tiny-pbmc")
        sct.pp.tokenize(adata, vocab=model)
        model_name = str(model.metadata.get("name", "sct-tiny-pbmc"))
    sct.tl.embed_cells(adata, model)
    sc.pp.neighbors(adata, use_rep="X_sct", random_state=0)
    sc.tl.umap(adata, random_state=0)
    fig = sc.pl.umap(
        adata,
        color="bulk_labels",
        title=f"UMAP of the transformer embedding obsm['X_sct'] ({model_name})",
        return_fig=True,
        show=False,
    )
    fig.savefig(out / "umap_sct.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    # annotation: a classifier fitted on 70% of the cells (the reference) labels every cell;
    # obs["sct_split"] says which cells it was fitted on, and the accuracy counts the others
    rng = np.random.default_rng(0)
    is_ref = rng.random(adata.n_obs) < 0.7
    sct.tl.annotate(
        adata,
        model,
        reference=adata[is_ref].copy(),
        labels_key="bulk_labels",
        method="linear",
    )
    adata.obs["sct_split"] = pd.Categorical(
        np.where(is_ref, "reference", "query"), categories=["reference", "query"]
    )
    query = adata.obs[~is_ref]
    annot_acc = float((query["sct_label"].astype(str) == query["bulk_labels"].astype(str)).mean())

    # attention network over all cells, drawn as a graph
    sct.tl.attention_grn(adata, model, top_k=10, batch_size=8)
    sct.pl.grn(adata, top=40, save=out / "grn.png")

    ref = adata.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.pca(ref, n_comps=50, random_state=0)
    labels = adata.obs["bulk_labels"].to_numpy()
    summary = {
        "cells": int(adata.n_obs),
        "model": model_name,
        "embedding_dim": int(adata.obsm["X_sct"].shape[1]),
        "knn_accuracy_X_sct": round(knn_accuracy(adata.obsm["X_sct"], labels), 3),
        "knn_accuracy_X_pca": round(knn_accuracy(ref.obsm["X_pca"], labels), 3),
        "annotation_accuracy_linear_30pct_query": round(annot_acc, 3),
        "attention_edges": len(adata.uns["sct_grn"]["edges"]),
        "majority_class_accuracy": round(
            float(adata.obs["bulk_labels"].value_counts(normalize=True).iloc[0]), 3
        ),
    }
    adata.write_h5ad(out / "demo.h5ad")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("summary (bulk_labels, 5-fold kNN accuracy):")
    for k, v in summary.items():
        print(f"  {k}: {v}")
    print(f"wrote {sorted(p.name for p in out.iterdir())} to {out}")
    return summary
