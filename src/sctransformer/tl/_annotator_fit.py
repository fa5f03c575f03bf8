"""How a :class:`CellAnnotator` is fitted on token arrays: fine-tuning, a linear probe or kNN."""

from __future__ import annotations

import numpy as np

from ..models import Model
from ..train.data import TokenArrays
from ..train.infer import Inference
from ..train.options import FinetuneOptions
from ._annotator import CellAnnotator
from ._sklearn import cv_splitter, fit_quietly


def fit_annotator(
    model: Model,
    data: TokenArrays,
    labels: np.ndarray,
    classes: list[str],
    categories: list[str],
    run: Inference,
    *,
    method: str,
    batch_key: str | None,
    options: FinetuneOptions | None = None,
    n_neighbors: int = 15,
    cv: int = 3,
    seed: int = 0,
    labels_key: str = "",
    embeddings: np.ndarray | None = None,
) -> CellAnnotator:
    """Fit a :class:`CellAnnotator` on token arrays with integer ``labels`` (no AnnData here).

    ``run``: how the model runs (its pooling and layer are the annotator's); ``options``:
    fine-tuning's settings (``class_weight`` also weighs the linear probe's classes);
    ``embeddings``: the cells' pooled vectors when already computed (``linear``/``knn``).
    """
    from ..train.finetune import finetune_classifier, with_classifier

    options = FinetuneOptions() if options is None else options
    y = np.asarray(labels, dtype=np.int64)
    common = dict(
        classes=list(classes),
        categories=list(categories),
        pooling=run.pooling,
        layer=run.layer,
        batch_key=batch_key,
        n_neighbors=n_neighbors,
        labels_key=labels_key,
    )
    if method == "finetune":
        net, history = finetune_classifier(
            with_classifier(model.module, len(classes), seed),
            data,
            y,
            is_gene=model.vocab.is_gene,
            pooling=run.pooling,
            layer=run.layer,
            batch_size=run.batch_size,
            device=run.device,
            seed=seed,
            **options.resolved(),
        )
        return CellAnnotator(model=model.derive(net), method=method, history=history, **common)
    model.to(run.device).eval()
    emb = model.pooled(data, run) if embeddings is None else embeddings
    if method == "knn":
        return CellAnnotator(
            model=model,
            method=method,
            arrays={"reference": emb, "codes": y},
            **common,
        )
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    mean = emb.mean(0)
    scale = emb.std(0)
    scale[scale == 0] = 1.0
    z = (emb - mean) / scale
    balanced = "balanced" if options.class_weight else None
    lr_model = LogisticRegression(max_iter=1000, class_weight=balanced)
    search = GridSearchCV(
        lr_model, {"C": [0.01, 0.1, 1.0, 10.0]}, cv=cv_splitter(y, cv, seed), scoring="f1_macro"
    )
    fit_quietly(search, z, y)
    best = search.best_estimator_
    coef = np.zeros((best.coef_.shape[0], z.shape[1]), dtype=np.float32)
    coef[:] = best.coef_
    intercept = np.asarray(best.intercept_, dtype=np.float32)
    if len(best.classes_) != len(classes) and coef.shape[0] > 1:  # classes missing in training
        full = np.zeros((len(classes), z.shape[1]), dtype=np.float32)
        full_b = np.full(len(classes), -1e4, dtype=np.float32)
        full[best.classes_] = coef
        full_b[best.classes_] = intercept
        coef, intercept = full, full_b
    return CellAnnotator(
        model=model,
        method=method,
        arrays={
            "mean": mean.astype(np.float32),
            "scale": scale.astype(np.float32),
            "coef": coef,
            "intercept": intercept,
        },
        **common,
    )
