"""How a :class:`CellAnnotator` is fitted on token arrays: fine-tuning, a linear probe or kNN."""

from __future__ import annotations

import numpy as np

from ..models import Model
from ..train.data import TokenArrays
from ._annotator import CellAnnotator
from ._sklearn import cv_splitter, fit_quietly


def fit_annotator(
    model: Model,
    data: TokenArrays,
    labels: np.ndarray,
    classes: list[str],
    categories: list[str],
    *,
    method: str,
    pooling: str,
    layer: int,
    batch_key: str | None,
    freeze: bool = False,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    encoder_lr: float | None = None,
    weight_decay: float = 0.01,
    class_weight: bool = True,
    validation_fraction: float = 0.1,
    patience: int = 3,
    n_neighbors: int = 15,
    cv: int = 3,
    precision: str = "auto",
    device="cpu",
    seed: int = 0,
    labels_key: str = "",
    embeddings: np.ndarray | None = None,
) -> CellAnnotator:
    """Fit a :class:`CellAnnotator` on token arrays with integer ``labels`` (no AnnData here).

    ``embeddings``: the cells' pooled vectors when already computed (``linear``/``knn``).
    """
    from ..train.finetune import finetune_classifier, with_classifier

    y = np.asarray(labels, dtype=np.int64)
    common = dict(
        classes=list(classes),
        categories=list(categories),
        pooling=pooling,
        layer=layer,
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
            freeze=freeze,
            pooling=pooling,
            layer=layer,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            encoder_lr=lr / 10 if encoder_lr is None else encoder_lr,
            weight_decay=weight_decay,
            class_weight=class_weight,
            validation_fraction=validation_fraction,
            patience=patience,
            device=device,
            seed=seed,
        )
        return CellAnnotator(model=model.derive(net), method=method, history=history, **common)
    model.to(device).eval()
    emb = embeddings
    if emb is None:
        emb = model.pooled(
            data,
            pooling=pooling,
            layer=layer,
            batch_size=batch_size,
            device=device,
            precision=precision,
        )
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
    lr_model = LogisticRegression(max_iter=1000, class_weight="balanced" if class_weight else None)
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
