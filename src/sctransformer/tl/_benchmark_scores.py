"""How ``sct.tl.benchmark`` scores: a classifier's test predictions, and a representation's
label conservation and batch mixing, as the table's tidy rows.
"""

from __future__ import annotations

import json
import time

import numpy as np

from .. import logging as logg
from . import _metrics
from ._baselines import classification_metrics

EMBEDDING_METRICS = ("leiden_ari", "leiden_nmi", "asw_label")
INTEGRATION_METRICS = ("asw_batch", "ilisi", "ilisi_scaled", "batch_entropy", "kbet_acceptance")


def classifier_rows(name, family, y_true, proba, classes, seconds, params, base) -> list[dict]:
    """Tidy rows of one classifier on one split: overall metrics, time and per-class F1."""
    pred = np.asarray(classes, dtype=object)[np.asarray(proba).argmax(1)]
    overall, f1 = classification_metrics(y_true, pred)
    overall["auroc"] = _metrics.auroc_ovr_macro(y_true, proba, classes)
    head = {
        "method": name,
        "family": family,
        **base,
        "best_params": json.dumps(params, default=str, sort_keys=True),
    }
    logg.hint(
        f"    {name} (seed {base['seed']}, fold {base['fold']}): macro-F1 "
        f"{overall['macro_f1']:.3f} ({seconds:.1f} s)"
    )
    out = [{**head, "metric": m, "label": "", "value": float(v)}
           for m, v in {**overall, "time_s": seconds}.items()]  # fmt: skip
    out += [{**head, "metric": "f1", "label": c, "value": float(v)} for c, v in f1.items()]
    return out


def embedding_rows(rep, x, labels, batches, tasks, *, n_neighbors, resolutions, seed, head):
    """Rows of the embedding and integration tasks for one representation."""
    from ._integration import batch_mixing

    family = "transformer" if rep == "sct" else "baseline"
    out = []
    t0 = time.perf_counter()
    if "embedding" in tasks:
        best = _metrics.leiden_match(x, labels, resolutions=resolutions, n_neighbors=n_neighbors,
                                     seed=seed)  # fmt: skip
        params = json.dumps({"resolution": best["resolution"], "n_clusters": best["n_clusters"]})
        values = {
            "leiden_ari": best["ari"],
            "leiden_nmi": best["nmi"],
            "asw_label": _metrics.asw_label(x, labels),
        }
        out += _task_rows("embedding", rep, family, values, params, head)
    if "integration" in tasks and batches is not None:
        entropy, ilisi = batch_mixing(x, batches, n_neighbors=n_neighbors)
        n_b = len(set(batches))
        values = {
            "asw_batch": _metrics.asw_batch(x, batches, labels),
            "ilisi": ilisi,
            "ilisi_scaled": (ilisi - 1) / (n_b - 1),
            "batch_entropy": entropy,
            "kbet_acceptance": _metrics.kbet_acceptance(x, batches, n_neighbors=n_neighbors),
        }
        params = json.dumps({"n_neighbors": int(n_neighbors), "n_batches": n_b})
        out += _task_rows("integration", rep, family, values, params, head)
    logg.hint(f"    {rep} (seed {seed}): scored in {time.perf_counter() - t0:.1f} s")
    return out


def _task_rows(task, rep, family, values, params, head) -> list[dict]:
    return [{**head, "task": task, "method": rep, "family": family, "metric": m, "label": "",
             "value": float(v), "best_params": params} for m, v in values.items()]  # fmt: skip
