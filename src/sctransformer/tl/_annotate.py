"""``sct.tl.annotate``: cell-type labels from a transformer, and the classifier that made them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate
from .. import logging as logg
from ..train.data import TokenArrays, collate, length_grouped_batches
from ._inputs import _quiet, check_model_vocab, record_params, resolve_device, tokens_match

METHODS = ("finetune", "linear", "knn")
UNKNOWN = "unknown"
CLASSIFIER_FILE = "classifier.safetensors"


# ------------------------------------------------------------------------------------------
# inputs shared with benchmark and perturbation


def gene_names(adata: AnnData, model) -> list[str]:
    """The names the model's vocabulary is matched against (``gene_key`` of its tokenization)."""
    gk = (model.tokenize_params or {}).get("gene_key", "var_names")
    if gk not in ("", "var_names") and gk in adata.var:
        return [str(g) for g in adata.var[gk]]
    return [str(g) for g in adata.var_names]


def check_known_genes(
    adata: AnnData, model, *, what: str, min_gene_fraction: float, min_genes: int
) -> int:
    """Raise a clear error when too few of ``adata``'s genes are in the model's vocabulary."""
    names = gene_names(adata, model)
    ids = model.vocab.encode_genes(names)
    n_known = int((ids >= 0).sum())
    if n_known < min(min_genes, model.vocab.n_genes):
        raise ValueError(
            f"the {what} has only {n_known} of its {len(names)} genes in the model's vocabulary "
            f"(at least {min(min_genes, model.vocab.n_genes)} needed, min_genes={min_genes}): "
            "its cells cannot be placed reliably. Check that var_names use the vocabulary's "
            "naming (gene symbols vs Ensembl IDs; pass the matching names as var_names) and the "
            "species"
        )
    try:
        _validate.check_gene_overlap(names, ids, model.vocab.genes, min_fraction=min_gene_fraction)
    except ValueError as e:
        raise ValueError(f"the {what}: {e}") from None
    return n_known


def check_batches(adata: AnnData, batch_key: str, *, what: str) -> np.ndarray:
    col = _validate.obs_column(
        adata,
        batch_key,
        fix="fill them (e.g. with 'unknown') first",
        where=f"the {what}'s obs",
        of=f" of the {what}",
    )
    return col.astype(str).to_numpy()


def with_batch_tokens(model, batches) -> tuple[object, list[str]]:
    """The model, or a copy whose vocabulary also has ``<batch=…>`` tokens for ``batches``.

    Existing ids keep their place; new rows of the token embedding start at the mean of the
    model's existing batch tokens (zeros when it has none), so an unseen batch starts as an
    "average" batch.
    """
    import torch

    from ..nn.model import CellTransformer

    known = set(model.vocab.conditions.get("batch", []))
    new = [b for b in pd.unique(np.asarray(batches, dtype=str)) if b not in known]
    if not new:
        return model, []
    vocab = model.vocab.with_conditions("batch", new)
    old_n = model.config.vocab_size
    config = replace(model.config, vocab_size=len(vocab))
    grown = CellTransformer(config)
    old_state = model.state_dict()
    state = grown.state_dict()
    old_rows = [model.vocab.condition_id("batch", b) for b in known]
    for k, v in old_state.items():
        if k not in state:
            continue
        if state[k].shape == v.shape:
            state[k] = v.clone()
        elif v.shape[0] == old_n and state[k].shape[1:] == v.shape[1:]:
            fill = v[old_rows].mean(0) if (k == "embeddings.token.weight" and old_rows) else 0.0
            t = torch.zeros_like(state[k]) + fill
            t[:old_n] = v
            state[k] = t
    grown.load_state_dict(state, strict=False)
    grown.vocab = vocab
    grown.tokenize_params = dict(model.tokenize_params or {})
    grown.metadata = _derived_metadata(model)
    grown.eval()
    return grown, new


def token_arrays(
    adata: AnnData,
    model,
    *,
    batch_key: str | None = None,
    tokens_key: str = "sct",
    min_gene_fraction: float = 0.2,
) -> TokenArrays:
    """Token arrays of every cell of ``adata`` as the model reads them (``adata`` untouched)."""
    from ..pp import tokenize

    if batch_key is None and tokens_match(adata, model, tokens_key):
        if not (adata.uns[tokens_key].get("params", {}).get("batch_key") or ""):
            return TokenArrays(
                tokens=np.asarray(adata.obsm[f"{tokens_key}_tokens"]),
                values=np.asarray(adata.obsm[f"{tokens_key}_values"]),
                lengths=adata.obs[f"{tokens_key}_n_tokens"].to_numpy(),
                pad_id=model.vocab.pad_id,
                pad_value=float(model.tokenize_params.get("pad_value", -2.0)),
            )
    src = adata.to_memory() if adata.isbacked else adata
    obs = src.obs[[batch_key]].copy() if batch_key else pd.DataFrame(index=src.obs_names)
    sub = AnnData(src.X, obs=obs, var=src.var.copy())
    with _quiet():
        tokenize(
            sub,
            vocab=model,
            batch_key=batch_key,
            min_gene_fraction=min_gene_fraction,
            key_added="sct",
        )
    return TokenArrays(
        tokens=sub.obsm["sct_tokens"],
        values=sub.obsm["sct_values"],
        lengths=sub.obs["sct_n_tokens"].to_numpy(),
        pad_id=model.vocab.pad_id,
        pad_value=float(model.tokenize_params.get("pad_value", -2.0)),
    )


def subset(data: TokenArrays, idx) -> TokenArrays:
    return TokenArrays(
        tokens=data.tokens[idx],
        values=data.values[idx],
        lengths=data.lengths[idx],
        pad_id=data.pad_id,
        pad_value=data.pad_value,
    )


def default_pooling(model, pooling: str | None) -> str:
    if pooling is None:
        meta = model.metadata or {}
        pooling = meta.get("pooling") or ("cls" if model.tokenize_params.get("add_cls") else "mean")
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling={pooling!r}; use 'cls' or 'mean'")
    if pooling == "cls" and not model.tokenize_params.get("add_cls", False):
        raise ValueError(
            "pooling='cls' but this model's cells have no <cls> token; use pooling='mean'"
        )
    return pooling


def default_layer(model, layer: int | None) -> int:
    layer = int((model.metadata or {}).get("layer", -1)) if layer is None else int(layer)
    n = model.config.num_layers
    if layer == 0 or not -n <= layer <= n:
        raise ValueError(
            f"layer={layer} is out of range for a {n}-layer model; use 1..{n} or -1..-{n}"
        )
    return layer


def embed_arrays(
    model,
    data: TokenArrays,
    *,
    pooling: str,
    layer: int,
    batch_size: int,
    device,
    precision: str,
    desc: str = "embed",
) -> np.ndarray:
    """Pooled cell vectors of ``data`` through the shared inference loop."""
    from ._embed import iter_encoded, torch_is_gene

    is_gene = np.asarray(model.vocab.is_gene)
    out = np.zeros((len(data), model.config.hidden_size), dtype=np.float32)
    bar = logg.progress(total=len(data), desc=desc, unit="cells")
    for idx, batch, enc in iter_encoded(
        model, data, batch_size=batch_size, device=device, precision=precision, layer=layer
    ):
        mask = torch_is_gene(is_gene, batch["tokens"]) if pooling == "mean" else None
        out[idx] = enc.pool(pooling, mask).cpu().numpy()
        bar.update(len(idx))
    bar.close()
    return out


def cv_splitter(y: np.ndarray, folds: int, seed: int):
    """Stratified folds when every class has enough cells, else plain shuffled folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    _, counts = np.unique(y, return_counts=True)
    folds = int(max(2, min(folds, len(y) // 2)))
    if counts.min() >= folds:
        return StratifiedKFold(folds, shuffle=True, random_state=seed)
    return KFold(folds, shuffle=True, random_state=seed)


def fit_quietly(estimator, x, y):
    """Fit, turning sklearn's convergence warnings into one log line (they are not errors)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        estimator.fit(x, y)
    n = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning) and "least populated" not in str(
            w.message
        ):
            warnings.warn(w.message, w.category, stacklevel=2)
    if n:
        logg.hint(f"{type(estimator).__name__}: {n} fit(s) stopped at max_iter")
    return estimator


# ------------------------------------------------------------------------------------------
# the fitted classifier


@dataclass
class CellAnnotator:
    """A fitted cell-type classifier on a transformer's cell embeddings.

    Made by :func:`annotate`; annotates further data sets with :meth:`predict` without
    retraining and saves to / loads from the model checkpoint format (:meth:`save`,
    :meth:`load`).

    Attributes
    ----------
    model
        The encoder (for ``method="finetune"`` with its trained ``heads["classifier"]``).
    method
        ``"finetune"``, ``"linear"`` or ``"knn"``.
    classes
        Class names, in the order of the probability columns.
    categories
        The reference's label categories (``obs[key_added]`` uses them, plus ``"unknown"``).
    pooling, layer, batch_key
        How cells are embedded; ``batch_key`` names the ``obs`` column of batch tokens.
    arrays
        ``"linear"``: ``mean``, ``scale``, ``coef``, ``intercept``; ``"knn"``: ``reference``
        (embeddings) and ``codes`` (class index of each reference cell).
    n_neighbors
        ``"knn"`` only.
    history
        Per-epoch training and validation loss (``"finetune"``).
    """

    model: object
    method: str
    classes: list[str]
    categories: list[str]
    pooling: str
    layer: int
    batch_key: str | None = None
    arrays: dict = field(default_factory=dict)
    n_neighbors: int = 15
    labels_key: str = ""
    history: pd.DataFrame | None = None

    # prediction ---------------------------------------------------------------------------
    def _proba_arrays(self, data: TokenArrays, *, batch_size, device, precision) -> np.ndarray:
        dev = resolve_device(device) if isinstance(device, str) else device
        self.model.to(dev).eval()
        emb = embed_arrays(
            self.model,
            data,
            pooling=self.pooling,
            layer=self.layer,
            batch_size=batch_size,
            device=dev,
            precision=precision,
            desc="annotate",
        )
        return self.proba_from_embeddings(emb, device=dev)

    def proba_from_embeddings(self, emb: np.ndarray, *, device="cpu") -> np.ndarray:
        """Class probabilities from pooled cell vectors made the way this annotator embeds."""
        import torch

        if self.method == "finetune":
            dev = device
            head = self.model.heads["classifier"]
            with torch.inference_mode():
                logits = head(torch.as_tensor(emb, device=dev)).float()
            return torch.softmax(logits, -1).cpu().numpy()
        if self.method == "linear":
            a = self.arrays
            z = (emb - a["mean"]) / a["scale"]
            scores = z @ a["coef"].T + a["intercept"]
            if scores.shape[1] == 1:  # binary logistic regression
                p = 1.0 / (1.0 + np.exp(-scores[:, 0]))
                return np.stack([1 - p, p], axis=1)
            scores = scores - scores.max(1, keepdims=True)
            e = np.exp(scores)
            return e / e.sum(1, keepdims=True)
        from sklearn.neighbors import KNeighborsClassifier

        ref, codes = self.arrays["reference"], self.arrays["codes"]
        knn = KNeighborsClassifier(min(self.n_neighbors, len(ref))).fit(ref, codes)
        proba = np.zeros((len(emb), len(self.classes)))
        proba[:, knn.classes_] = knn.predict_proba(emb)
        return proba

    def predict_proba(
        self,
        adata: AnnData,
        *,
        batch_size: int = 32,
        precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
        device: str = "auto",
        min_gene_fraction: float = 0.2,
        min_genes: int = 50,
    ) -> pd.DataFrame:
        """Class probabilities of every cell of ``adata`` (cells × classes); nothing written."""
        model = self._prepared(adata, min_gene_fraction=min_gene_fraction, min_genes=min_genes)
        data = token_arrays(
            adata, model, batch_key=self.batch_key, min_gene_fraction=min_gene_fraction
        )
        annot = self if model is self.model else replace(self, model=model)
        proba = annot._proba_arrays(data, batch_size=batch_size, device=device, precision=precision)
        return pd.DataFrame(proba, index=adata.obs_names.copy(), columns=list(self.classes))

    def _prepared(self, adata: AnnData, *, min_gene_fraction: float, min_genes: int):
        _validate.check_nonempty(adata)
        check_known_genes(
            adata,
            self.model,
            what="query",
            min_gene_fraction=min_gene_fraction,
            min_genes=min_genes,
        )
        if self.batch_key is None:
            return self.model
        batches = check_batches(adata, self.batch_key, what="query")
        model, new = with_batch_tokens(self.model, batches)
        if new:
            logg.hint(f"batches {new[:5]} are new to the model; their token starts as the mean")
        return model

    def predict(
        self,
        adata: AnnData,
        *,
        unknown_threshold: float | None = None,
        batch_size: int = 32,
        precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
        device: str = "auto",
        min_gene_fraction: float = 0.2,
        min_genes: int = 50,
        key_added: str = "sct_label",
        copy: bool = False,
    ) -> AnnData | None:
        """Annotate ``adata`` with this classifier; writes the keys listed in :func:`annotate`."""
        _check_threshold(unknown_threshold)
        _check_batch_size(batch_size)
        proba = self.predict_proba(
            adata,
            batch_size=batch_size,
            precision=precision,
            device=device,
            min_gene_fraction=min_gene_fraction,
            min_genes=min_genes,
        )
        adata = adata.copy() if copy else adata
        self._write(
            adata,
            proba,
            unknown_threshold=unknown_threshold,
            key_added=key_added,
            device=device,
            precision=precision,
            batch_size=batch_size,
        )
        return adata if copy else None

    def _write(self, adata, proba: pd.DataFrame, *, unknown_threshold, key_added, **params):
        p = proba.to_numpy()
        best = p.argmax(1)
        score = p.max(1)
        labels = np.asarray(self.classes, dtype=object)[best]
        categories = list(self.categories)
        if unknown_threshold is not None:
            labels = np.where(score < unknown_threshold, UNKNOWN, labels)
            if UNKNOWN not in categories:
                categories.append(UNKNOWN)
        adata.obs[key_added] = pd.Categorical(labels, categories=categories)
        adata.obs[f"{key_added}_score"] = score.astype(np.float32)
        adata.obsm[f"{key_added}_proba"] = pd.DataFrame(
            p.astype(np.float32), index=adata.obs_names.copy(), columns=list(self.classes)
        )
        adata.uns[key_added] = {
            "params": record_params(
                self.model,
                device=resolve_device(params.pop("device", "auto")),
                method=self.method,
                classes=list(self.classes),
                labels_key=self.labels_key,
                pooling=self.pooling,
                layer=self.layer,
                batch_key=self.batch_key,
                unknown_threshold=-1.0 if unknown_threshold is None else float(unknown_threshold),
                **params,
            )
        }

    # persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the annotator as a model checkpoint folder.

        The folder is a normal checkpoint (``sct.models.load`` reads it): for ``"finetune"`` the
        classifier head is part of ``model.safetensors`` (``config.num_classes`` > 0); for
        ``"linear"``/``"knn"`` its arrays are in ``classifier.safetensors``. Class names and
        settings are in ``metadata.json`` under ``"annotator"``. Written atomically.
        """
        from safetensors.numpy import save_file

        from ..models._io import save

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            meta = {
                "annotator": {
                    "method": self.method,
                    "classes": list(self.classes),
                    "categories": list(self.categories),
                    "pooling": self.pooling,
                    "layer": int(self.layer),
                    "batch_key": self.batch_key or "",
                    "n_neighbors": int(self.n_neighbors),
                    "labels_key": self.labels_key,
                }
            }
            save(self.model, tmp / "ckpt", metadata=meta)
            if self.arrays:
                save_file(
                    {k: np.ascontiguousarray(v) for k, v in self.arrays.items()},
                    str(tmp / "ckpt" / CLASSIFIER_FILE),
                )
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp / "ckpt", path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CellAnnotator:
        """Read a folder written by :meth:`save`."""
        from ..models._io import load_checkpoint

        path = Path(path)
        model = load_checkpoint(path)
        meta = (model.metadata or {}).get("annotator")
        if not meta:
            raise ValueError(
                f"{path} is a model checkpoint without a fitted classifier (no 'annotator' in "
                "metadata.json); fit one with sct.tl.annotate and save it with .save(path)"
            )
        arrays = {}
        if meta["method"] in ("linear", "knn"):
            from safetensors.numpy import load_file

            if not (path / CLASSIFIER_FILE).exists():
                raise FileNotFoundError(f"{path / CLASSIFIER_FILE} is missing")
            arrays = dict(load_file(str(path / CLASSIFIER_FILE)))
        return cls(
            model=model,
            method=meta["method"],
            classes=list(meta["classes"]),
            categories=list(meta["categories"]),
            pooling=meta["pooling"],
            layer=int(meta["layer"]),
            batch_key=meta.get("batch_key") or None,
            arrays=arrays,
            n_neighbors=int(meta.get("n_neighbors", 15)),
            labels_key=meta.get("labels_key", ""),
        )


def _check_threshold(t) -> None:
    if t is not None and not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"unknown_threshold must be in [0, 1], got {t}")


def _check_batch_size(b) -> None:
    if b < 1:
        raise ValueError(f"batch_size must be positive, got {b}")


# ------------------------------------------------------------------------------------------
# fitting


def _classifier_model(model, n_classes: int, seed: int):
    """A copy of ``model`` with a fresh classifier head of ``n_classes``."""
    import torch

    from ..nn.model import CellTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = CellTransformer(replace(model.config, num_classes=n_classes))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.classifier.")}
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("heads.classifier.")]
    if missing or result.unexpected_keys:  # pragma: no cover - same architecture by design
        raise RuntimeError(
            f"could not copy the encoder: {missing[:3]} {result.unexpected_keys[:3]}"
        )
    net.vocab = model.vocab
    net.tokenize_params = dict(model.tokenize_params or {})
    net.metadata = _derived_metadata(model)
    return net


def _derived_metadata(model) -> dict:
    """Metadata of a model derived from ``model``: its recorded sha256 no longer applies."""
    from ._inputs import weights_sha256

    meta = dict(model.metadata or {})
    meta["derived_from_sha256"] = weights_sha256(model)
    meta.pop("weights_sha256", None)
    return meta


def _split_validation(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(y)
    n_val = round(n * fraction)
    if fraction <= 0 or n_val < 1 or n - n_val < 2:
        return np.arange(n), np.arange(0)
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    strat = y if counts.min() >= 2 and n_val >= len(counts) else None
    tr, va = train_test_split(np.arange(n), test_size=n_val, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


def _pooled(model, out, batch, *, pooling: str, layer: int, is_gene_t):
    from ..nn.model import pool

    n = model.config.num_layers
    k = layer if layer > 0 else n + 1 + layer
    h = out.last_hidden_state if k == n else out.hidden_states[k]
    mask = batch["padding_mask"]
    if pooling == "mean":
        mask = mask & is_gene_t[batch["tokens"]]
    return pool(h, mask, pooling)


def _finetune(
    model,
    data: TokenArrays,
    y: np.ndarray,
    n_classes: int,
    *,
    freeze: bool,
    pooling: str,
    layer: int,
    epochs: int,
    batch_size: int,
    lr: float,
    encoder_lr: float,
    weight_decay: float,
    class_weight: bool,
    validation_fraction: float,
    patience: int,
    precision: str,
    device,
    seed: int,
):
    """Train a classifier head (and the encoder unless ``freeze``); returns (model, history)."""
    import copy

    import torch
    import torch.nn.functional as F

    net = _classifier_model(model, n_classes, seed).to(device)
    tr, va = _split_validation(y, validation_fraction, seed)
    counts = np.bincount(y[tr], minlength=n_classes).astype(np.float64)
    weight = None
    if class_weight:
        w = np.where(counts > 0, len(tr) / (n_classes * np.maximum(counts, 1)), 0.0)
        weight = torch.as_tensor(w, dtype=torch.float32, device=device)
    y_t = torch.as_tensor(y, dtype=torch.long, device=device)
    head = net.heads["classifier"]
    is_gene_t = torch.as_tensor(np.asarray(net.vocab.is_gene), device=device)
    values_used = net.config.value_input != "none"
    need_hidden = layer not in (-1, net.config.num_layers)

    # Pooled vectors of a pretrained encoder share a large common component (cosine ~1
    # between cells), which a freshly initialised head learns from slowly. The head is trained
    # on standardised vectors (mean and scale of the reference's initial embeddings) and the
    # standardisation is folded into its first layer afterwards, so the saved head is an
    # ordinary ClassifierHead.
    net.eval()
    init = embed_arrays(
        net,
        data,
        pooling=pooling,
        layer=layer,
        batch_size=batch_size,
        device=device,
        precision="fp32",
        desc="embed reference",
    )
    mu = torch.as_tensor(init.mean(0), device=device)
    sd = torch.as_tensor(np.maximum(init.std(0), 1e-6), device=device)
    emb = None
    if freeze:  # the encoder never changes: train the head on the vectors
        emb = torch.as_tensor(init, device=device)
        params = [{"params": head.parameters(), "lr": lr}]
    else:
        enc_params = [p for n, p in net.named_parameters() if not n.startswith("heads.")]
        params = [
            {"params": head.parameters(), "lr": lr},
            {"params": enc_params, "lr": encoder_lr},
        ]
    opt = torch.optim.AdamW(params, weight_decay=weight_decay)

    def logits_of(idx, train: bool):
        if emb is not None:
            return head((emb[idx] - mu) / sd)
        batch = collate(data, idx, device)
        out = net(
            batch["tokens"],
            batch["values"] if values_used else None,
            padding_mask=batch["padding_mask"],
            output_hidden_states=need_hidden,
        )
        pooled = _pooled(net, out, batch, pooling=pooling, layer=layer, is_gene_t=is_gene_t)
        return head((pooled - mu) / sd)

    def evaluate(idx_all) -> tuple[float, float]:
        net.eval()
        loss, correct = 0.0, 0
        with torch.no_grad():
            for idx in length_grouped_batches(data.lengths[idx_all], batch_size):
                cells = idx_all[idx]
                lg = logits_of(cells, False).float()
                # unweighted: class weights on a small held-out part make the loss too noisy
                loss += float(F.cross_entropy(lg, y_t[cells], reduction="sum"))
                correct += int((lg.argmax(1) == y_t[cells]).sum())
        return loss / max(len(idx_all), 1), correct / max(len(idx_all), 1)

    history = []
    best, best_state, waited = np.inf, None, 0
    plan = [
        length_grouped_batches(data.lengths[tr], batch_size, shuffle=True, seed=seed * 7919 + e)
        for e in range(epochs)
    ]
    bar = logg.progress(total=sum(len(p) for p in plan), desc="fine-tune", unit="step")
    with torch.random.fork_rng(devices=[]):
        for epoch, batches in enumerate(plan):
            net.train() if not freeze else head.train()
            total, n_seen = 0.0, 0
            for step, idx in enumerate(batches):
                torch.manual_seed(seed * 1_000_003 + epoch * 100_003 + step)
                cells = tr[idx]
                lg = logits_of(cells, True).float()
                loss = F.cross_entropy(lg, y_t[cells], weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                total += loss.item() * len(cells)
                n_seen += len(cells)
                bar.update(1)
            rec = {"epoch": epoch + 1, "train_loss": total / max(n_seen, 1)}
            if len(va):
                rec["val_loss"], rec["val_accuracy"] = evaluate(va)
                bar.set_postfix(val_loss=f"{rec['val_loss']:.3f}")
                if rec["val_loss"] < best - 1e-4:
                    best, waited = rec["val_loss"], 0
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    waited += 1
            history.append(rec)
            if len(va) and patience and waited >= patience:
                logg.hint(f"early stopping after epoch {epoch + 1} (best val loss {best:.3f})")
                break
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    with torch.no_grad():  # fold (x - mu) / sd into the head's first layer
        w = head.dense.weight / sd[None, :]
        head.dense.bias -= w @ mu
        head.dense.weight.copy_(w)
    net.eval()
    return net, pd.DataFrame(history)


def fit_annotator(
    model,
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
    device=None,
    seed: int = 0,
    labels_key: str = "",
    embeddings: np.ndarray | None = None,
) -> CellAnnotator:
    """Fit a :class:`CellAnnotator` on token arrays with integer ``labels`` (no AnnData here)."""
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
        net, history = _finetune(
            model,
            data,
            y,
            len(classes),
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
            precision=precision,
            device=device,
            seed=seed,
        )
        return CellAnnotator(model=net, method=method, history=history, **common)
    model.to(device).eval()
    emb = embeddings
    if emb is None:
        emb = embed_arrays(
            model,
            data,
            pooling=pooling,
            layer=layer,
            batch_size=batch_size,
            device=device,
            precision=precision,
            desc="embed reference",
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


def _labels(obs: pd.DataFrame, labels_key: str, what: str):
    _validate.check_key(obs, labels_key, where=f"{what}.obs")
    col = obs[labels_key]
    cat = col if isinstance(col.dtype, pd.CategoricalDtype) else col.astype("category")
    categories = [str(c) for c in cat.cat.categories]
    known = cat.notna().to_numpy()
    values = cat.astype(str).to_numpy()
    return values, known, categories


# ------------------------------------------------------------------------------------------
# the front door


def annotate(
    adata: AnnData,
    model,
    *,
    reference: AnnData | None = None,
    labels_key: str | None = None,
    method: Literal["finetune", "linear", "knn"] = "finetune",
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
    min_gene_fraction: float = 0.2,
    min_genes: int = 50,
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
        ``"finetune"``: a classifier head on the pooled embedding, trained with the encoder
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
    min_gene_fraction, min_genes
        Refuse data where fewer than this fraction of genes, or fewer than ``min_genes``
        genes, are in the model's vocabulary.
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
        Method, classes and settings, with model name, weights sha256, version and device.
    """
    # validation first: nothing is written before everything is checked
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {list(METHODS)}")
    _check_threshold(unknown_threshold)
    _check_batch_size(batch_size)
    if epochs < 1 or lr <= 0:
        raise ValueError("epochs must be positive and lr > 0")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be positive, got {n_neighbors}")
    _validate.check_nonempty(adata)

    fitted = _as_annotator(model) if labels_key is None else None
    if fitted is not None:
        if reference is not None:
            raise ValueError("a fitted annotator needs no reference; pass labels_key to refit")
        start = logg.info(
            f"annotating {adata.n_obs} cells with a fitted {fitted.method} classifier"
        )
        written = fitted.predict(
            adata,
            unknown_threshold=unknown_threshold,
            batch_size=batch_size,
            precision=precision,
            device=device,
            min_gene_fraction=min_gene_fraction,
            min_genes=min_genes,
            key_added=key_added,
            copy=copy,
        )
        logg.info("    finished", time=start, deep=_written(key_added))
        return (written, fitted) if copy else fitted
    if labels_key is None:
        raise ValueError(
            "labels_key is required to train a classifier (the obs column of reference labels)"
        )
    from ..models import resolve

    model = resolve(model.model if isinstance(model, CellAnnotator) else model)
    check_model_vocab(model)
    pooling = default_pooling(model, pooling)
    layer = default_layer(model, layer)
    ref = adata if reference is None else reference
    what = "adata" if reference is None else "reference"
    _validate.check_nonempty(ref)
    values, known, categories = _labels(ref.obs, labels_key, what)
    classes = [c for c in categories if c in set(values[known])]
    if len(classes) < 2:
        raise ValueError(
            f"obs[{labels_key!r}] of the {what} has {len(classes)} labelled class(es); at least "
            "2 are needed to train a classifier"
        )
    if reference is None and known.all():
        logg.hint("every cell of adata is labelled: the classifier is trained on all of them")
    check_known_genes(
        ref, model, what=what, min_gene_fraction=min_gene_fraction, min_genes=min_genes
    )
    if reference is not None:
        check_known_genes(
            adata, model, what="query", min_gene_fraction=min_gene_fraction, min_genes=min_genes
        )
    if batch_key is not None:
        b_ref = check_batches(ref, batch_key, what=what)
        b_query = check_batches(adata, batch_key, what="query") if reference is not None else b_ref
        model, new = with_batch_tokens(model, np.concatenate([b_ref, b_query]))
        if new:
            logg.hint(f"added batch tokens for {new[:5]}{'…' if len(new) > 5 else ''}")
    dev = resolve_device(device)

    start = logg.info(f"annotating {adata.n_obs} cells with method={method!r}")
    ref_idx = np.flatnonzero(known)
    ref_all = token_arrays(ref, model, batch_key=batch_key, min_gene_fraction=min_gene_fraction)
    ref_data = subset(ref_all, ref_idx)
    code = {c: i for i, c in enumerate(classes)}
    y = np.array([code[v] for v in values[ref_idx]], dtype=np.int64)
    annotator = fit_annotator(
        model,
        ref_data,
        y,
        classes,
        categories,
        method=method,
        pooling=pooling,
        layer=layer,
        batch_key=batch_key,
        freeze=freeze,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        encoder_lr=encoder_lr,
        weight_decay=weight_decay,
        class_weight=class_weight,
        validation_fraction=validation_fraction,
        patience=patience,
        n_neighbors=n_neighbors,
        precision=precision,
        device=dev,
        seed=seed,
        labels_key=labels_key,
    )
    query_data = (
        ref_all
        if reference is None
        else token_arrays(
            adata, annotator.model, batch_key=batch_key, min_gene_fraction=min_gene_fraction
        )
    )
    proba = annotator._proba_arrays(
        query_data, batch_size=batch_size, device=dev, precision=precision
    )
    proba = pd.DataFrame(proba, index=adata.obs_names.copy(), columns=classes)
    out = adata.copy() if copy else adata
    annotator._write(
        out,
        proba,
        unknown_threshold=unknown_threshold,
        key_added=key_added,
        device=str(dev),
        precision=precision,
        batch_size=batch_size,
        freeze=freeze,
        epochs=epochs,
        lr=lr,
        seed=seed,
        n_reference=len(ref_idx),
        reference="adata" if reference is None else "reference",
    )
    logg.info("    finished", time=start, deep=_written(key_added))
    return (out, annotator) if copy else annotator


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
