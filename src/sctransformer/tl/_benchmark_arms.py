"""The methods ``sct.tl.benchmark`` compares: what they read (counts, the model's tokens and
frozen embeddings, scVI's latent space), the tuned baselines and the transformer arms on one
split, and the representations of the embedding tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .._tokens import model_tokens
from ..models import resolve
from ..train.options import FinetuneOptions
from ._annotator_fit import fit_annotator
from ._baselines import _baseline, _counts, _hvg, _normalise, pca_embedding, scvi_latent
from ._benchmark_scores import classifier_rows
from ._common import batch_values


@dataclass
class Inputs:
    """What the methods read, over the labelled cells (``adata``'s ``n_a``, then ``test_adata``'s)."""

    y: np.ndarray
    n_a: int
    x: object = None  # log-normalised counts on the shared genes
    counts: object = None
    prep: float = 0.0  # seconds spent on x, charged to every baseline
    net: object = None
    data: list | None = None  # token arrays, one per data set
    frozen: np.ndarray | None = None  # the model's frozen cell embeddings
    frozen_time: float = 0.0  # seconds spent on tokens and frozen embeddings


def prepared_model(model, adata, test_adata, kw, *, batch_key, min_genes, gene_key,
                   min_gene_fraction):  # fmt: skip
    """The model, checked against the data's genes, with tokens for the data's batches; sets
    ``kw``'s ``pooling`` and ``layer`` to the model's defaults where not given.
    """
    match = dict(gene_key=gene_key, min_gene_fraction=min_gene_fraction)
    net = resolve(model)
    kw["pooling"], kw["layer"] = net.pooling(kw.get("pooling")), net.layer(kw.get("layer"))
    net.check_genes(adata, min_genes=min_genes, **match)
    if test_adata is not None:
        net.check_genes(test_adata, what="test_adata", min_genes=min_genes, **match)
    if batch_key is not None:
        values = batch_values(adata, batch_key)
        if test_adata is not None:
            values = np.concatenate([values, batch_values(test_adata, batch_key,
                                                          what="test_adata")])  # fmt: skip
        net, _ = net.with_batch_tokens(values)
    return net


def cell_inputs(adata, cells, test_adata, cells_b, shared, y, net, run, *, need_x,
                need_frozen, layer, batch_key, gene_key, min_gene_fraction) -> Inputs:  # fmt: skip
    """Counts (``need_x``, from ``adata.layers[layer]``), the model's tokens (with ``net``) and
    frozen embeddings (``need_frozen``, run as ``run`` says) of the labelled cells.
    """
    inp = Inputs(y=y, n_a=len(cells), net=net)
    if need_x:
        t0 = time.perf_counter()
        counts = _counts(adata, cells, layer)
        if test_adata is not None:
            import scipy.sparse as sp

            ia = adata.var_names.get_indexer(shared)
            ib = test_adata.var_names.get_indexer(shared)
            cb = _counts(test_adata, cells_b, layer)
            inp.x = sp.vstack([_normalise(counts)[:, ia], _normalise(cb)[:, ib]]).tocsr()
            inp.counts = sp.vstack([counts[:, ia], cb[:, ib]]).tocsr()
        else:
            inp.x, inp.counts = _normalise(counts), counts
        inp.prep = time.perf_counter() - t0
    if net is not None:
        t0 = time.perf_counter()
        match = dict(batch_key=batch_key, gene_key=gene_key, min_gene_fraction=min_gene_fraction)
        inp.data = [model_tokens(adata, net, cells=cells, **match)]
        if test_adata is not None:
            inp.data.append(model_tokens(test_adata, net, cells=cells_b, **match))
        if need_frozen:
            net.to(run.device).eval()
            inp.frozen = np.concatenate([net.pooled(d, run) for d in inp.data])
        inp.frozen_time = time.perf_counter() - t0
    return inp


def timed_latent(inp: Inputs, batches, *, n_top_genes, epochs, seed, device):
    """ScVI's latent space of the labelled cells (one per seed) and the seconds it took."""
    t0 = time.perf_counter()
    latent = scvi_latent(inp.counts, inp.x, batches, n_top_genes=n_top_genes, epochs=epochs,
                         seed=seed, device=device)  # fmt: skip
    return latent, time.perf_counter() - t0


def representation(rep, inp: Inputs, latent, *, n_top_genes, n_pcs, seed) -> np.ndarray:
    """The cell vectors of ``"pca"`` (fit on ``adata``'s labelled cells), ``"scvi"`` or ``"sct"``."""
    if rep == "pca":
        return pca_embedding(inp.x, np.arange(inp.n_a), n_top_genes=n_top_genes, n_pcs=n_pcs,
                             seed=seed)  # fmt: skip
    return latent if rep == "scvi" else inp.frozen


def label_rows(inp: Inputs, latent, scvi_time, tr_idx, te_idx, baselines, arms, kw, base, run,
               *, n_top_genes, n_pcs, cv, batch_key, seed) -> list[dict]:  # fmt: skip
    """Rows of the label-prediction task on one split: the baselines, then the arms."""
    y_te = inp.y[te_idx]
    rows = []
    if baselines:
        for name, proba, classes, seconds, params in _run_baselines(
            inp.x, latent, inp.y, tr_idx, te_idx, baselines, n_top_genes=n_top_genes,
            n_pcs=n_pcs, cv=cv, seed=seed,
        ):  # fmt: skip
            if name == "scvi_logreg":
                seconds += scvi_time
            rows += classifier_rows(name, "baseline", y_te, proba, classes, inp.prep + seconds,
                                    params, base)  # fmt: skip
    if arms:
        for name, proba, classes, seconds, params in _run_transformer(
            inp, tr_idx, te_idx, arms, dict(kw), run, batch_key=batch_key, seed=seed
        ):
            rows += classifier_rows(name, "transformer", y_te, proba, classes,
                                    inp.frozen_time + seconds, params, base)  # fmt: skip
    return rows


def _run_baselines(x, latent, y, tr_idx, te_idx, names, *, n_top_genes, n_pcs, cv, seed):
    """Yield ``(name, test probabilities, classes, seconds, best parameters)`` per baseline."""
    t0 = time.perf_counter()
    xs = x[:, _hvg(x[tr_idx], n_top_genes)] if x is not None else None
    prep = time.perf_counter() - t0
    for name in names:
        t0 = time.perf_counter()
        feats = latent if name == "scvi_logreg" else xs
        proba_of, classes, params = _baseline(
            name, feats[tr_idx], y[tr_idx], cv=cv, n_pcs=n_pcs, seed=seed
        )
        proba = proba_of(feats[te_idx])
        extra = 0.0 if name == "scvi_logreg" else prep
        yield name, proba, classes, extra + time.perf_counter() - t0, params


def _tokens_of(inp: Inputs, idx):
    """Token arrays of combined cell indices that lie in one data set."""
    if len(inp.data) == 1 or idx.max() < inp.n_a:
        return inp.data[0].subset(idx)
    return inp.data[1].subset(idx - inp.n_a)


def _run_transformer(inp: Inputs, tr_idx, te_idx, arms, kw, run, *, batch_key, seed):
    """Yield ``(name, test probabilities, classes, seconds, parameters)`` per transformer arm
    (``kw``: the arms' settings; ``run`` holds their pooling and layer).
    """
    del kw["pooling"], kw["layer"]  # run holds them
    frozen = inp.frozen
    classes = sorted(set(inp.y[tr_idx]))
    code = {c: i for i, c in enumerate(classes)}
    y_tr = np.array([code[v] for v in inp.y[tr_idx]])
    for name in arms:
        method = name.removeprefix("sct_")
        t0 = time.perf_counter()
        args = {k: v for k, v in kw.items()
                if method == "finetune" or k in ("n_neighbors", "class_weight")}  # fmt: skip
        options = {k: v for k, v in args.items() if k != "n_neighbors"}
        annot = fit_annotator(
            inp.net, _tokens_of(inp, tr_idx), y_tr, classes, classes, run, method=method,
            batch_key=batch_key, options=FinetuneOptions(**options),
            n_neighbors=args.get("n_neighbors", 15), seed=seed,
            embeddings=None if frozen is None else frozen[tr_idx],
        )  # fmt: skip
        if method == "finetune":
            proba = annot.proba_arrays(_tokens_of(inp, te_idx), run)
        else:
            proba = annot.proba_from_embeddings(frozen[te_idx])
        params = {"method": method, **args}
        if method == "linear":
            params["C"] = "cv over [0.01, 0.1, 1, 10]"
        yield name, proba, classes, time.perf_counter() - t0, params
