"""The cells ``sct.tl.benchmark`` scores: the labelled cells of one or two data sets, their
batches, the train/test splits every method shares, and the split it writes to ``obs``.

Cells are numbered over the labelled cells: those of ``adata``, then those of ``test_adata``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ._baselines import EMBEDDINGS, split_cells
from ._common import batch_values
from ._sklearn import cv_splitter


def labelled_cells(adata, labels_key, test_adata):
    """``(cells, cells_b, y, shared)``: the labelled cells of ``adata`` and of ``test_adata``,
    their labels and the genes the baselines use (those both data sets share).
    """
    labels_col = adata.obs[labels_key]
    cells = np.flatnonzero(labels_col.notna().to_numpy())
    y = labels_col.astype(str).to_numpy()[cells]
    n_a = len(cells)
    cells_b = np.zeros(0, dtype=np.int64)
    shared = adata.var_names
    if test_adata is not None:
        col_b = test_adata.obs[labels_key]
        cells_b = np.flatnonzero(col_b.notna().to_numpy())
        if len(cells_b) == 0:
            raise ValueError(f"test_adata.obs[{labels_key!r}] has no labelled cells")
        y = np.concatenate([y, col_b.astype(str).to_numpy()[cells_b]])
        shared = adata.var_names.intersection(test_adata.var_names)
        if len(shared) == 0:
            raise ValueError(
                "test_adata shares no genes (var_names) with adata; give both the same gene "
                "identifiers (e.g. both Ensembl ids or both symbols)"
            )
    if len(set(y[:n_a])) < 2:
        raise ValueError(f"obs[{labels_key!r}] needs at least 2 classes, has {sorted(set(y))}")
    return cells, cells_b, y, shared


def scored_methods(methods, tasks) -> tuple[list[str], list[str]]:
    """The classifiers the label-prediction task scores and the representations the embedding
    and integration tasks score.
    """
    label_methods = [m for m in methods if m not in EMBEDDINGS]
    reps = [m for m in methods if m in EMBEDDINGS]
    if "label_prediction" not in tasks:
        label_methods = []
    if not {"embedding", "integration"} & set(tasks):
        reps = []
    if not label_methods and not reps:
        raise ValueError(
            f"methods {methods} have nothing to score in tasks {tasks}: label_prediction scores "
            f"classifiers, embedding and integration score {list(EMBEDDINGS)}"
        )
    return label_methods, reps


def integration_batches(adata, cells, test_adata, cells_b, batch_key) -> np.ndarray:
    """The batch of each labelled cell: ``obs[batch_key]``, else the data set it comes from."""
    if batch_key is None:
        return np.array(["adata"] * len(cells) + ["test_adata"] * len(cells_b), dtype=object)
    out = batch_values(adata, batch_key)[cells]
    if test_adata is not None:
        out = np.concatenate([out, batch_values(test_adata, batch_key, what="test_adata")[cells_b]])
    if len(set(out)) < 2:
        raise ValueError(
            f"obs[{batch_key!r}] has one batch among the labelled cells; the integration task "
            "needs at least two (or leave it out with tasks=['label_prediction', 'embedding'])"
        )
    return out


def seed_splits(adata, cells, y, split_key, test_groups, test_size, n_folds, test_adata, seed):
    """``[(fold, train indices, test indices)]`` of one seed over the labelled cells."""
    n_a = len(cells)
    if test_adata is not None:
        return [(0, np.arange(n_a), np.arange(n_a, len(y)))]
    if n_folds is not None:
        if n_folds > len(y):
            raise ValueError(f"n_folds={n_folds} exceeds the {len(y)} labelled cells")
        splitter = cv_splitter(y, n_folds, seed)
        return [(f, tr, te) for f, (tr, te) in enumerate(splitter.split(np.zeros(len(y)), y))]
    test = split_cells(
        adata.obs.iloc[cells], y, split_key=split_key, test_groups=test_groups,
        test_size=test_size, seed=seed,
    )  # fmt: skip
    return [(0, np.flatnonzero(~test), np.flatnonzero(test))]


def run_head(dataset, seed, fold, tr_idx, te_idx) -> dict:
    """The columns a run's rows share: its data set, seed, fold, cell counts and split hash (the
    same for every method scored on the split).
    """
    h = hashlib.sha256(np.asarray(tr_idx, dtype=np.int64).tobytes())
    h.update(b"|" + np.asarray(te_idx, dtype=np.int64).tobytes())
    return {"dataset": dataset, "seed": int(seed), "fold": fold, "n_train": len(tr_idx),
            "n_test": len(te_idx), "split_sha": h.hexdigest()[:16]}  # fmt: skip


def scored_subset(n: int, max_cells: int, seed: int) -> np.ndarray:
    """The cells the embedding and integration tasks score: all, or a seeded random subset."""
    scored = np.arange(n)
    if n > max_cells:
        scored = np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))
    return scored


def write_split(adata, cells, splits, *, n_folds, key_added) -> None:
    """``obs[key_added + "_split"]`` (one split) or ``obs[key_added + "_fold"]`` (folds)."""
    if n_folds is None:
        _, tr_idx, te_idx = splits[0]
        split = np.full(adata.n_obs, "unlabelled", dtype=object)
        split[cells[tr_idx]] = "train"
        split[cells[te_idx]] = "test"
        adata.obs[f"{key_added}_split"] = pd.Categorical(
            split, categories=["train", "test", "unlabelled"]
        )
    else:
        fold_of = np.full(adata.n_obs, -1, dtype=np.int64)
        for fold, _, te in splits:
            fold_of[cells[te]] = fold
        adata.obs[f"{key_added}_fold"] = fold_of
