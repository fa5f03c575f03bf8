"""Argument checks of ``sct.tl.benchmark``: seeds, data and split settings, tasks and the
transformer arms' settings (the methods are checked beside the front door).
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .. import _validate
from ._common import batch_values, check_positive

TASKS = ("label_prediction", "embedding", "integration")
ANNOTATE_KWDS = {
    "freeze", "epochs", "lr", "encoder_lr", "weight_decay", "class_weight",
    "validation_fraction", "patience", "n_neighbors", "pooling", "layer",
}  # fmt: skip


def check_seeds(seed, seeds, n_seeds) -> list[int]:
    """The seeds of the call: ``seeds``, else ``n_seeds`` counted up from ``seed``, else ``seed``."""
    if seeds is not None and n_seeds is not None:
        raise ValueError("give seeds= or n_seeds=, not both")
    if seeds is not None:
        seeds = [seeds] if isinstance(seeds, int | np.integer) else list(seeds)
        if not seeds:
            raise ValueError("seeds is empty; give at least one seed, e.g. seeds=[0, 1, 2]")
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int | np.integer)]
        if bad:
            raise ValueError(f"seeds must be integers, got {bad}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat a seed; each seed must be given once")
        return [int(s) for s in seeds]
    if n_seeds is not None:
        if isinstance(n_seeds, bool) or not isinstance(n_seeds, int | np.integer) or n_seeds < 1:
            raise ValueError(f"n_seeds must be a positive integer, got {n_seeds!r}")
        return [int(seed) + i for i in range(n_seeds)]
    return [int(seed)]


def check_data(adata, labels_key, split_key, test_groups, layer, test_size, cv, n_folds,
               test_adata, n_neighbors, scvi_epochs, max_cells, resolutions) -> None:  # fmt: skip
    """The data sets, their keys and the split and scoring settings."""
    _validate.check_nonempty(adata)
    _validate.check_key(adata.obs, labels_key, where="adata.obs")
    if split_key is not None:
        _validate.obs_column(adata, split_key, fix="fill them first")
    elif test_groups is not None:
        raise ValueError("test_groups needs split_key")
    if layer is not None:
        _validate.check_key(adata.layers, layer, where="adata.layers")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    if cv < 2:
        raise ValueError(f"cv must be at least 2, got {cv}")
    if n_folds is not None:
        if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
            raise ValueError(f"n_folds must be an integer of at least 2, got {n_folds!r}")
        if split_key is not None:
            raise ValueError("n_folds and split_key are two ways to split; give one of them")
    if test_adata is not None:
        if not isinstance(test_adata, AnnData):
            raise ValueError(f"test_adata must be an AnnData, got {type(test_adata).__name__}")
        if split_key is not None or n_folds is not None:
            raise ValueError("test_adata is the test set; drop split_key and n_folds")
        _validate.check_nonempty(test_adata)
        _validate.check_key(test_adata.obs, labels_key, where="test_adata.obs")
        if layer is not None:
            _validate.check_key(test_adata.layers, layer, where="test_adata.layers")
    check_positive(n_neighbors=n_neighbors, scvi_epochs=scvi_epochs, max_cells=max_cells)
    res = list(resolutions)
    if not res or any(not np.isfinite(r) or r <= 0 for r in res):
        raise ValueError(f"leiden_resolutions must be positive numbers, got {res}")


def check_tasks(adata, tasks, test_adata, batch_key, annotate_kwds) -> tuple[list[str], dict]:
    """The tasks to run (``None``: every one that applies) and the arms' extra arguments."""
    integrable = batch_key is not None or test_adata is not None
    if tasks is None:
        tasks = [t for t in TASKS if t != "integration" or integrable]
    else:
        tasks = [tasks] if isinstance(tasks, str) else list(dict.fromkeys(tasks))
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise ValueError(f"unknown tasks {bad}; use some of {list(TASKS)}")
        if "integration" in tasks and not integrable:
            raise ValueError("task 'integration' needs batch_key= (or test_adata=)")
    if batch_key is not None:
        batch_values(adata, batch_key)
        if test_adata is not None:
            batch_values(test_adata, batch_key, what="test_adata")
    kw = dict(annotate_kwds or {})
    bad = sorted(set(kw) - ANNOTATE_KWDS)
    if bad:
        raise ValueError(f"annotate_kwds {bad} not understood; use some of {sorted(ANNOTATE_KWDS)}")
    return tasks, kw
