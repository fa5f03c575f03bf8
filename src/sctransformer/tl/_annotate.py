"""``sct.tl.annotate``: cell-type labels from a transformer (the front door)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from .._backed import check_writable
from .._tokens import model_tokens
from ..models import resolve
from ..train.options import FinetuneOptions
from ._annotator import METHODS, CellAnnotator, check_threshold
from ._annotator_fit import fit_annotator
from ._common import batch_values, check_positive, copy_of


def annotate(
    adata: AnnData,
    model,
    *,
    reference: AnnData | None = None,
    labels_key: str | None = None,
    method: Literal["finetune", "linear", "knn"] = "linear",
    freeze: bool = False,
    batch_key: str | None = None,
    pooling: Literal["cls", "mean"] | None = None,
    layer: int | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    encoder_lr: float | None = None,
    weight_decay: float = 0.01,
    class_weight: bool = True,
    validation_fraction: float = 0.1,
    patience: int = 3,
    n_neighbors: int = 15,
    unknown_threshold: float | None = None,
    gene_key: str | None = None,
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
    chunk_size: int = 2048,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    device: str = "auto",
    seed: int = 0,
    key_added: str = "sct_label",
    copy: bool = False,
):
    """Label cells with a classifier trained on a transformer's cell embeddings.

    A classifier is fitted on the labelled ``reference`` (or, when ``reference`` is ``None``, on
    the labelled cells of ``adata``; cells with a missing label are the ones to annotate) and
    applied to every cell of ``adata``. Reference and query may measure different genes: both
    are tokenized with the model's vocabulary, so only genes it knows count, and a query with
    too few of them is refused with an error naming the cause.

    Passing a fitted :class:`CellAnnotator` (or a folder saved from one) as ``model`` with no
    ``labels_key`` annotates ``adata`` with it, without retraining.

    Parameters
    ----------
    adata
        Cells × genes (counts) to annotate.
    model
        A model, a registry name or checkpoint folder (this package's, or a converted
        Geneformer/scGPT), or a fitted :class:`CellAnnotator` / its saved folder.
    reference
        Labelled cells × genes (counts). ``None``: the labelled cells of ``adata``.
    labels_key
        ``obs`` column of the reference labels.
    method
        Default ``"linear"``: on pbmc68k (bundled model, stratified 80/20 split, CPU) it
        scored the highest macro-F1 (0.43–0.45) at a fraction of ``"finetune"``'s time
        (0.25–0.28 in 5–8× the time); ``"knn"`` is the fastest (0.32–0.35); see
        docs/published_models.md. ``"finetune"``: a classifier head on the pooled embedding, trained with the encoder
        (or with the encoder frozen, ``freeze=True``), class weights, early stopping on a
        held-out part of the reference. ``"linear"``: logistic regression on frozen embeddings,
        its ``C`` chosen by cross-validation on the reference. ``"knn"``: majority vote of the
        ``n_neighbors`` nearest reference cells in the embedding.
    freeze
        ``finetune`` only: train the head alone.
    batch_key
        ``obs`` column (in the reference and ``adata``) whose value becomes a ``<batch=…>``
        token after ``<cls>``. Batches the model does not know get a new token, started at the
        mean of its known batch tokens (and trained, for the reference's batches, by
        ``finetune``).
    pooling, layer
        How cells are embedded; defaults as in :func:`sctransformer.tl.embed_cells`.
    epochs, batch_size, lr, encoder_lr, weight_decay
        ``finetune`` optimisation; ``encoder_lr`` defaults to ``lr / 10``.
    class_weight
        Weight classes by inverse frequency (``finetune``, ``linear``).
    validation_fraction, patience
        ``finetune``: held-out share of the reference for early stopping, and epochs without
        improvement of its loss before stopping (the best epoch's weights are kept).
    n_neighbors
        ``knn`` only.
    unknown_threshold
        Cells whose highest probability is below it are labelled ``"unknown"``.
    gene_key
        A ``var`` column (in the reference and ``adata``) with the names to match against the
        vocabulary; default as in :func:`sctransformer.tl.embed_cells`.
    min_gene_fraction, min_genes
        Refuse data where fewer than this fraction of genes, or fewer than ``min_genes``
        genes, are in the model's vocabulary.
    chunk_size
        Cells tokenized and annotated at a time (backed AnnData streams).
    precision, device
        As in :func:`sctransformer.tl.embed_cells`; training runs in fp32.
    seed
        Seeds the head's initialisation, the validation split and the batch order.
    key_added
        Prefix of the keys written.
    copy
        Annotate a copy of ``adata``.

    Returns
    -------
    The fitted :class:`CellAnnotator` (``copy=True``: the tuple
    ``(annotated copy, annotator)``). Writes (``sct_label`` stands for ``key_added``):

    ``obs["sct_label"]``
        Categorical label, categories as the reference's (plus ``"unknown"`` when
        ``unknown_threshold`` is given).
    ``obs["sct_label_score"]``
        Highest class probability.
    ``obsm["sct_label_proba"]``
        DataFrame, one column per class.
    ``uns["sct_label"]["params"]``
        Method, classes and settings, with model name, weights sha256, version, device and
        seed.
    """
    _check_args(method, unknown_threshold, batch_size, chunk_size, epochs, lr,
                validation_fraction, n_neighbors)  # fmt: skip
    check_writable(adata, copy=copy)
    _validate.check_nonempty(adata)
    match = dict(gene_key=gene_key, min_gene_fraction=min_gene_fraction, min_genes=min_genes)
    fitted = _as_annotator(model) if labels_key is None else None
    if fitted is not None:
        if reference is not None:
            raise ValueError("a fitted annotator needs no reference; pass labels_key to refit")
        start = logg.info(
            f"annotating {adata.n_obs} cells with a fitted {fitted.method} classifier"
        )
        written = fitted.predict(
            adata, unknown_threshold=unknown_threshold, batch_size=batch_size,
            precision=precision, device=device, seed=seed, key_added=key_added, copy=copy,
            **match,
        )  # fmt: skip
        logg.info("    finished", time=start, deep=_written(key_added))
        return (written, fitted) if copy else fitted
    if labels_key is None:
        raise ValueError(
            "labels_key is required to train a classifier (the obs column of reference labels)"
        )
    model = resolve(model.model if isinstance(model, CellAnnotator) else model)
    run = model.inference(
        batch_size=batch_size, device=device, precision=precision, layer=layer, pooling=pooling
    )
    ref = adata if reference is None else reference
    what = "adata" if reference is None else "reference"
    _validate.check_nonempty(ref)
    values, known, categories, classes = _labels(ref.obs, labels_key, what)
    if reference is None and known.all():
        logg.hint("every cell of adata is labelled: the classifier is trained on all of them")
    model.check_genes(ref, what=what, **match)
    if reference is not None:
        model.check_genes(adata, what="query", **match)
    if batch_key is not None:
        b_ref = batch_values(ref, batch_key, what=what)
        b_query = batch_values(adata, batch_key, what="query") if reference is not None else b_ref
        model, new = model.with_batch_tokens(np.concatenate([b_ref, b_query]))
        if new:
            logg.hint(f"added batch tokens for {new[:5]}{'…' if len(new) > 5 else ''}")

    ref_idx = np.flatnonzero(known)
    start = logg.info(
        f"annotating {adata.n_obs} cells with method={method!r}: "
        + _cost(method, len(ref_idx), adata.n_obs, epochs, batch_size, validation_fraction)
    )
    tokens = dict(batch_key=batch_key, gene_key=gene_key, min_gene_fraction=min_gene_fraction)
    ref_data = model_tokens(ref, model, cells=ref_idx, chunk_size=chunk_size, **tokens)
    code = {c: i for i, c in enumerate(classes)}
    options = FinetuneOptions(
        freeze=freeze, epochs=epochs, lr=lr, encoder_lr=encoder_lr, weight_decay=weight_decay,
        class_weight=class_weight, validation_fraction=validation_fraction, patience=patience,
    )  # fmt: skip
    annotator = fit_annotator(
        model, ref_data, np.array([code[v] for v in values[ref_idx]], dtype=np.int64),
        classes, categories, run, method=method, batch_key=batch_key, options=options,
        n_neighbors=n_neighbors, seed=seed, labels_key=labels_key,
    )  # fmt: skip
    proba = annotator.predict_proba(
        adata, batch_size=batch_size, precision=run.precision, device=run.device,
        chunk_size=chunk_size, **match,
    )  # fmt: skip
    out = copy_of(adata) if copy else adata
    annotator.write(
        out, proba, run, unknown_threshold=unknown_threshold, key_added=key_added, seed=seed,
        freeze=freeze, epochs=epochs, lr=lr, n_reference=len(ref_idx), reference=what,
        gene_key=gene_key, min_gene_fraction=min_gene_fraction,
    )  # fmt: skip
    logg.info("    finished", time=start, deep=_written(key_added))
    return (out, annotator) if copy else annotator


def _check_args(method, unknown_threshold, batch_size, chunk_size, epochs, lr,
                validation_fraction, n_neighbors) -> None:  # fmt: skip
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {list(METHODS)}")
    check_threshold(unknown_threshold)
    check_positive(batch_size=batch_size, chunk_size=chunk_size)
    if epochs < 1 or lr <= 0:
        raise ValueError("epochs must be positive and lr > 0")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be positive, got {n_neighbors}")


def _cost(method, n_ref, n_query, epochs, batch_size, validation_fraction) -> str:
    """What ``method`` will run, in passes of the model (for the log)."""
    if method == "finetune":
        n_train = max(1, round(n_ref * (1 - validation_fraction)))
        steps = -(-n_train // batch_size)
        return (
            f"up to {epochs} epochs × {steps} training steps of {batch_size} cells (forward and "
            f"backward through the encoder), then one pass over {n_query} cells; the costliest "
            "method (about 10× knn on CPU)"
        )
    fit = (
        "logistic regression, C chosen by cross-validation"
        if method == "linear"
        else ("a nearest-neighbour vote")
    )
    return f"one embedding pass over {n_ref} reference and {n_query} query cells, then {fit}"


def _labels(obs: pd.DataFrame, labels_key: str, what: str):
    """Label of each cell, which cells are labelled, the categories and the classes seen."""
    _validate.check_key(obs, labels_key, where=f"{what}.obs")
    col = obs[labels_key]
    cat = col if isinstance(col.dtype, pd.CategoricalDtype) else col.astype("category")
    categories = [str(c) for c in cat.cat.categories]
    known = cat.notna().to_numpy()
    values = cat.astype(str).to_numpy()
    classes = [c for c in categories if c in set(values[known])]
    if len(classes) < 2:
        raise ValueError(
            f"obs[{labels_key!r}] of the {what} has {len(classes)} labelled class(es); at least "
            "2 are needed to train a classifier"
        )
    return values, known, categories, classes


def _written(key: str) -> str:
    return f"added obs[{key!r}], obs['{key}_score'], obsm['{key}_proba'], uns[{key!r}]"


def _as_annotator(model) -> CellAnnotator | None:
    if isinstance(model, CellAnnotator):
        return model
    if isinstance(model, str | os.PathLike) and Path(model).is_dir():
        meta = Path(model) / "metadata.json"
        if meta.exists() and json.loads(meta.read_text()).get("annotator"):
            return CellAnnotator.load(model)
    return None
