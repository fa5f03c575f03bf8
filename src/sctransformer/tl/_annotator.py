"""The fitted cell-type classifier (:class:`CellAnnotator`): prediction and persistence."""

from __future__ import annotations

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
from .._tokens import model_token_chunks
from ..models import Model
from ..train.data import TokenArrays
from ._common import batch_values, check_positive, copy_of

METHODS = ("finetune", "linear", "knn")
UNKNOWN = "unknown"
CLASSIFIER_FILE = "classifier.safetensors"
PREDICT_CHUNK = 2048  # cells per streamed chunk when predicting (predict has no keyword for it)


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

    model: Model
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
    def inference(self, *, batch_size: int, device="auto", precision: str = "auto"):
        """How :attr:`model` runs for this annotator: its pooling and layer, resolved once."""
        return self.model.inference(batch_size=batch_size, device=device, precision=precision,
                                    layer=self.layer, pooling=self.pooling)  # fmt: skip

    def proba_arrays(self, data: TokenArrays, run, *, progress=None) -> np.ndarray:
        """Class probabilities of token arrays made for :attr:`model`, run as ``run`` says
        (from :meth:`inference`).
        """
        self.model.to(run.device).eval()
        emb = self.model.pooled(data, run, progress=progress)
        return self.proba_from_embeddings(emb, device=run.device)

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
        gene_key: str | None = None,
        min_gene_fraction: float = 0.2,
        min_genes: int = 50,
        chunk_size: int = PREDICT_CHUNK,
    ) -> pd.DataFrame:
        """Class probabilities of every cell of ``adata`` (cells × classes); nothing written.

        Cells stream through in chunks of ``chunk_size`` (backed AnnData included).
        """
        proba, _ = self._proba_and_run(
            adata, batch_size=batch_size, precision=precision, device=device, gene_key=gene_key,
            min_gene_fraction=min_gene_fraction, min_genes=min_genes, chunk_size=chunk_size,
        )  # fmt: skip
        return proba

    def _proba_and_run(
        self, adata, *, batch_size, precision, device, gene_key, min_gene_fraction, min_genes,
        chunk_size,
    ):  # fmt: skip
        """:meth:`predict_proba` and the :meth:`inference` it ran with."""
        check_positive(chunk_size=chunk_size)
        annot = self.prepared(
            adata, gene_key=gene_key, min_gene_fraction=min_gene_fraction, min_genes=min_genes
        )
        run = annot.inference(batch_size=batch_size, device=device, precision=precision)
        proba = np.zeros((adata.n_obs, len(self.classes)))
        bar = logg.progress(total=adata.n_obs, desc="annotate", unit="cells")
        chunks = model_token_chunks(
            adata,
            annot.model,
            chunk_size=chunk_size,
            batch_key=self.batch_key,
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
        )
        for a, b, data in chunks:
            proba[a:b] = annot.proba_arrays(data, run, progress=bar)
        bar.close()
        frame = pd.DataFrame(proba, index=adata.obs_names.copy(), columns=list(self.classes))
        return frame, run

    def prepared(
        self,
        adata: AnnData,
        *,
        gene_key: str | None = None,
        min_gene_fraction: float = 0.2,
        min_genes: int = 50,
    ) -> CellAnnotator:
        """Return this annotator, checked against ``adata``'s genes, with tokens for its new batches."""
        _validate.check_nonempty(adata)
        self.model.check_genes(
            adata,
            what="query",
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
            min_genes=min_genes,
        )
        if self.batch_key is None:
            return self
        model, new = self.model.with_batch_tokens(batch_values(adata, self.batch_key, what="query"))
        if new:
            logg.hint(f"batches {new[:5]} are new to the model; their token starts as the mean")
        return replace(self, model=model)

    def predict(
        self,
        adata: AnnData,
        *,
        unknown_threshold: float | None = None,
        batch_size: int = 32,
        precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
        device: str = "auto",
        gene_key: str | None = None,
        min_gene_fraction: float = 0.2,
        min_genes: int = 50,
        seed: int = 0,
        key_added: str = "sct_label",
        copy: bool = False,
    ) -> AnnData | None:
        """Annotate ``adata`` with this classifier; writes the keys listed in
        :func:`~sctransformer.tl.annotate`.
        """
        check_threshold(unknown_threshold)
        proba, run = self._proba_and_run(
            adata,
            batch_size=batch_size,
            precision=precision,
            device=device,
            gene_key=gene_key,
            min_gene_fraction=min_gene_fraction,
            min_genes=min_genes,
            chunk_size=PREDICT_CHUNK,
        )
        adata = copy_of(adata) if copy else adata
        self.write(adata, proba, run, unknown_threshold=unknown_threshold, key_added=key_added,
                   seed=seed)  # fmt: skip
        return adata if copy else None

    def write(
        self, adata, proba: pd.DataFrame, run, *, unknown_threshold, key_added, seed, **params
    ) -> None:
        """Write labels, scores, probabilities and parameters (see :func:`annotate`); ``run``
        is the :meth:`inference` the probabilities came from.
        """
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
            "params": self.model.record(
                seed=seed,
                **run.params(),
                method=self.method,
                classes=list(self.classes),
                labels_key=self.labels_key,
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
            self.model.save(tmp / "ckpt", metadata=meta)
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
        from ..models._model import load_checkpoint

        path = Path(path)
        model = load_checkpoint(path)
        meta = model.metadata.get("annotator")
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


def check_threshold(t) -> None:
    if t is not None and not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"unknown_threshold must be in [0, 1], got {t}")
