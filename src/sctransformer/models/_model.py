"""The model object the front doors work with: a torch module and everything known about it.

:class:`Model` keeps the AnnData-facing facts (vocabulary, how its cells are tokenized, name,
weights sha256, embedding defaults, gene-name matching) apart from the torch module
(:class:`~sctransformer.nn.CellTransformer`), the way scvi-tools keeps ``model`` apart from
``module``. Attributes it does not define (``config``, ``heads``, ``state_dict`` …) are the
module's, so a :class:`Model` can be used where a module is expected.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import _validate
from ..tokenizers import GeneVocab

DEFAULT_PAD_VALUE = -2.0  # scGPT's pad value, the package's default (tokenize's pad_value)


class Model:
    """A transformer with its vocabulary, tokenization parameters and model card.

    Parameters
    ----------
    module
        The torch module (:class:`~sctransformer.nn.CellTransformer`).
    vocab
        Its vocabulary.
    tokenize_params
        How its cells are tokenized (the parameters :func:`sctransformer.pp.tokenize` records).
    metadata
        The model card: name, source, licence, citation, objective, embedding defaults and the
        sha256 of the saved weights.
    """

    def __init__(
        self,
        module,
        *,
        vocab: GeneVocab | None,
        tokenize_params: dict | None = None,
        metadata: dict | None = None,
    ) -> None:
        self.module = module
        self.vocab = vocab
        self.tokenize_params = dict(tokenize_params or {})
        self.metadata = dict(metadata or {})

    @classmethod
    def wrap(cls, obj) -> Model:
        """``obj`` itself when it is a :class:`Model`, else a model around a bare module.

        A module carrying ``.vocab``, ``.tokenize_params`` and ``.metadata`` attributes (as
        converters and hand-built models do) keeps them.
        """
        if isinstance(obj, Model):
            return obj
        if not hasattr(obj, "config") or not hasattr(obj, "vocab"):
            raise ValueError(
                f"expected a model, a model name or a checkpoint path, got "
                f"{type(obj).__name__}; see sct.models.available()"
            )
        return cls(
            obj,
            vocab=obj.vocab,
            tokenize_params=getattr(obj, "tokenize_params", None),
            metadata=getattr(obj, "metadata", None),
        )

    # the torch module's attributes -----------------------------------------------------------
    def __getattr__(self, name: str):
        if name == "module":  # not set yet (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.module, name)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def to(self, device) -> Model:
        self.module.to(device)
        return self

    def eval(self) -> Model:
        self.module.eval()
        return self

    def __repr__(self) -> str:
        c = self.module.config
        return (
            f"Model({self.name!r}, {c.num_layers} layers × {c.hidden_size}, "
            f"{len(self.vocab) if self.vocab else 0} tokens, method={self.method!r})"
        )

    # facts ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "unnamed")

    @property
    def sha256(self) -> str:
        """sha256 of the saved weights file, or of the parameters in memory when unsaved."""
        if self.metadata.get("weights_sha256"):
            return str(self.metadata["weights_sha256"])
        h = hashlib.sha256()
        for k, v in sorted(self.module.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
        return h.hexdigest()

    @property
    def method(self) -> str:
        return str(self.tokenize_params.get("method", ""))

    @property
    def pad_value(self) -> float:
        return float(self.tokenize_params.get("pad_value", DEFAULT_PAD_VALUE))

    @property
    def has_cls(self) -> bool:
        return bool(self.tokenize_params.get("add_cls", False))

    @property
    def max_length(self) -> int | None:
        """Most tokens a cell may have: the tokenization's cap and the position table's."""
        p = self.tokenize_params.get("max_length")
        caps = [p] if isinstance(p, int) and p > 0 else []
        if self.module.config.max_positions:
            caps.append(int(self.module.config.max_positions))
        return min(caps) if caps else None

    def check(self) -> GeneVocab:
        """The vocabulary, after checking the model can tokenize cells at all."""
        if not isinstance(self.vocab, GeneVocab):
            raise ValueError(
                "the model has no vocabulary; load it with sct.models.load or train it"
            )
        if not self.method:
            raise ValueError(
                "the model records no tokenization method (model.tokenize_params['method']); "
                "set it to how its training data were tokenized"
            )
        return self.vocab

    # embedding defaults ---------------------------------------------------------------------
    def pooling(self, pooling: str | None = None) -> str:
        """``pooling`` checked, or the model's default (its card's, else cls when it has one)."""
        if pooling is None:
            pooling = self.metadata.get("pooling") or ("cls" if self.has_cls else "mean")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={pooling!r}; use 'cls' or 'mean'")
        if pooling == "cls" and not self.has_cls:
            raise ValueError(
                "pooling='cls' but this model's cells have no <cls> token; use pooling='mean'"
            )
        return pooling

    def layer(self, layer: int | None = None) -> int:
        """``layer`` checked, or the model's default (its card's, else the last)."""
        layer = int(self.metadata.get("layer", -1)) if layer is None else layer
        n = self.module.config.num_layers
        if isinstance(layer, bool) or layer == 0 or not -n <= int(layer) <= n:
            raise ValueError(
                f"layer={layer} is out of range for a {n}-layer model; use 1..{n} or -1..-{n} "
                "(-1 = last layer)"
            )
        return int(layer)

    def precision(self, precision: str, device) -> str:
        """``precision`` resolved once for a whole call on ``device``: ``"auto"`` becomes the
        faster of fp32 and bf16 for this model's layer shape at its maximum length (measured
        once per process), so every batch runs, and params record, one precision.
        """
        from ..nn.precision import choose_precision

        return choose_precision(
            precision, device, config=self.module.config, length=self.max_length
        )

    def inference(
        self,
        *,
        batch_size: int,
        device="auto",
        precision: str = "auto",
        layer: int | None = None,
        pooling: str | None = None,
        pools: bool = True,
    ):
        """A :class:`~sctransformer.train.infer.Inference` for this model: the arguments
        checked, ``device`` and ``precision`` resolved and ``layer``/``pooling`` defaulted once
        for a whole call (see :meth:`layer`, :meth:`pooling`, :meth:`precision`); ``pools=False``
        for a call that pools no cells (no pooling recorded).
        """
        from .._settings import resolve_device
        from ..train.infer import Inference

        _validate.check_positive(batch_size=batch_size)
        layer, pooling = self.layer(layer), self.pooling(pooling) if pools else None
        dev = resolve_device(device)
        return Inference(batch_size, dev, self.precision(precision, dev), layer, pooling)

    def pooled(self, data, run, *, progress=None) -> np.ndarray:
        """Cell vectors of token arrays made for this model, run as ``run`` says (see
        :func:`sctransformer.train.infer.pooled`), mean pooling over its gene tokens.
        """
        from ..train import infer

        return infer.pooled(self.module, data, run, is_gene=self.vocab.is_gene, progress=progress)

    # genes ----------------------------------------------------------------------------------
    def gene_names(self, adata, gene_key: str | None = None) -> list[str]:
        """The names of ``adata``'s genes matched against the vocabulary.

        ``gene_key`` (a ``var`` column) when given; else the column the model was tokenized
        with when ``adata`` has it; else ``var_names``.
        """
        if gene_key is not None:
            _validate.check_key(adata.var, gene_key, where="adata.var")
            return [str(g) for g in adata.var[gene_key]]
        gk = self.tokenize_params.get("gene_key", "var_names")
        if gk not in ("", "var_names", None) and gk in adata.var:
            return [str(g) for g in adata.var[gk]]
        return [str(g) for g in adata.var_names]

    def gene_key(self, adata, gene_key: str | None = None) -> str | None:
        """The ``var`` column :meth:`gene_names` reads (``None``: ``var_names``)."""
        if gene_key is not None:
            return gene_key
        gk = self.tokenize_params.get("gene_key", "var_names")
        return gk if gk not in ("", "var_names", None) and gk in adata.var else None

    def check_genes(
        self,
        adata,
        *,
        what: str = "data",
        gene_key: str | None = None,
        min_gene_fraction: float = 0.2,
        min_genes: int = 50,
    ) -> int:
        """Raise a clear error when too few of ``adata``'s genes are in the vocabulary.

        Returns the number of genes it knows. The messages name the keywords
        ``min_gene_fraction``/``min_genes``/``gene_key`` that every function which tokenizes for
        a model takes.
        """
        if not 0 <= min_gene_fraction <= 1:
            raise ValueError(f"min_gene_fraction must be in [0, 1], got {min_gene_fraction}")
        if min_genes < 0:
            raise ValueError(f"min_genes must be non-negative, got {min_genes}")
        vocab = self.check()
        names = self.gene_names(adata, gene_key)
        ids = vocab.encode_genes(names)
        n_known = int((ids >= 0).sum())
        if n_known == 0:
            raise ValueError(
                f"none of the {what}'s genes are in the model's vocabulary: check that the "
                "names use the vocabulary's naming (gene symbols vs Ensembl IDs; pass gene_key= "
                "naming a var column that does) and the species"
            )
        need = min(min_genes, vocab.n_genes)
        if n_known < need:
            raise ValueError(
                f"the {what} has only {n_known} of its {len(names)} genes in the model's "
                f"vocabulary (at least {need} needed, min_genes={min_genes}): its cells cannot "
                "be placed reliably. Check that the names use the vocabulary's naming (gene "
                "symbols vs Ensembl IDs; pass gene_key= naming a var column that does) and the "
                "species, or lower min_genes= if this is expected"
            )
        try:
            _validate.check_gene_overlap(names, ids, vocab.genes, min_fraction=min_gene_fraction)
        except ValueError as e:
            raise ValueError(f"the {what}: {e}") from None
        return n_known

    # derived models -------------------------------------------------------------------------
    def derive(self, module, *, vocab: GeneVocab | None = None) -> Model:
        """A model made from this one (fine-tuned, grown): same card, its sha256 as origin."""
        meta = dict(self.metadata)
        meta["derived_from_sha256"] = self.sha256
        meta.pop("weights_sha256", None)
        return Model(
            module,
            vocab=self.vocab if vocab is None else vocab,
            tokenize_params=self.tokenize_params,
            metadata=meta,
        )

    def with_batch_tokens(self, batches) -> tuple[Model, list[str]]:
        """Return this model, or a copy whose vocabulary also has ``<batch=…>`` tokens for ``batches``.

        Existing ids keep their place; new rows of the token embedding start at the mean of
        the model's existing batch tokens (zeros when it has none), so an unseen batch starts
        as an "average" batch.
        """
        import pandas as pd
        import torch

        from ..nn.model import CellTransformer

        vocab = self.check()
        known = set(vocab.conditions.get("batch", []))
        new = [b for b in pd.unique(np.asarray(batches, dtype=str)) if b not in known]
        if not new:
            return self, []
        grown_vocab = vocab.with_conditions("batch", new)
        old_n = self.module.config.vocab_size
        grown = CellTransformer(replace(self.module.config, vocab_size=len(grown_vocab)))
        old_state = self.module.state_dict()
        state = grown.state_dict()
        old_rows = [vocab.condition_id("batch", b) for b in known]
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
        grown.eval()
        return self.derive(grown, vocab=grown_vocab), new

    # parameters for uns ---------------------------------------------------------------------
    def record(self, *, device, seed: int | None = None, **params) -> dict:
        """``uns[...]["params"]``: model name, sha256, version, device, seed and ``params``.

        Never holds ``None`` (anndata cannot write it): ``None`` becomes ``""``.
        """
        return record_params(self, device=device, seed=seed, **params)

    def save(self, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
        """Write this model as a checkpoint folder (see :func:`sctransformer.models.save`)."""
        from ._io import save

        return save(self, path, metadata=metadata)


def record_params(model: Model | None, *, device, seed: int | None = None, **params) -> dict:
    """Parameters for ``uns[key]["params"]``, with or without a model."""
    from .._version import __version__

    out = {
        "model": model.name if model is not None else "",
        "weights_sha256": model.sha256 if model is not None else "",
        "version": __version__,
        "device": str(device),
        "seed": -1 if seed is None else int(seed),
    }
    for k, v in params.items():
        out[k] = "" if v is None else v
    return out


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> Model:
    """Load a checkpoint folder written by :func:`sctransformer.models.save` as a
    :class:`Model` (its files are read by :func:`~._io.read_checkpoint`).
    """
    from ._io import read_checkpoint

    module, vocab, tokenize_params, metadata = read_checkpoint(path, verify=verify)
    return Model(module, vocab=vocab, tokenize_params=tokenize_params, metadata=metadata)
