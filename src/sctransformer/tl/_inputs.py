"""Shared plumbing of the tl front doors: devices, parameters, token arrays from AnnData."""

from __future__ import annotations

import hashlib

import numpy as np
from anndata import AnnData

from .._version import __version__
from ..tokenizers import GeneVocab
from ..train.data import TokenArrays


def resolve_device(device: str):
    import torch

    from .._settings import settings

    device = settings.device if device == "auto" else device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu'")
    return torch.device(device)


def model_name(model) -> str:
    meta = getattr(model, "metadata", {}) or {}
    return str(meta.get("name", "unnamed"))


def weights_sha256(model) -> str:
    """sha256 recorded with the weights, or computed from the parameters in memory."""
    meta = getattr(model, "metadata", {}) or {}
    if meta.get("weights_sha256"):
        return str(meta["weights_sha256"])
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def record_params(model, *, device, **params) -> dict:
    """Parameters for ``uns[...]["params"]``: never ``None`` (anndata cannot write it)."""
    out = {
        "model": model_name(model),
        "weights_sha256": weights_sha256(model),
        "version": __version__,
        "device": str(device),
    }
    for k, v in params.items():
        out[k] = "" if v is None else v
    return out


def tokens_match(adata: AnnData, model, key: str) -> bool:
    """Whether ``obsm`` already holds tokens made with this model's vocabulary and method."""
    if f"{key}_tokens" not in adata.obsm or key not in adata.uns:
        return False
    uns = adata.uns[key]
    params = uns.get("params", {})
    if params.get("method") != model.tokenize_params.get("method", params.get("method")):
        return False
    return uns.get("vocab") == model.vocab.to_json()


def chunk_arrays(adata: AnnData, model, *, key: str, start: int, stop: int, reuse: bool):
    """Token arrays of cells ``start:stop``: from ``obsm`` when ``reuse``, else tokenized now."""
    from ..pp import tokenize

    if reuse:
        tokens = np.asarray(adata.obsm[f"{key}_tokens"][start:stop])
        values = np.asarray(adata.obsm[f"{key}_values"][start:stop])
        lengths = np.asarray(adata.obs[f"{key}_n_tokens"].to_numpy()[start:stop])
    else:
        sub = adata[start:stop]
        sub = sub.to_memory() if adata.isbacked else sub.copy()
        for k in list(sub.obsm):  # only the expression is needed
            del sub.obsm[k]
        with _quiet():
            tokenize(sub, vocab=model, key_added=key)
        tokens = sub.obsm[f"{key}_tokens"]
        values = sub.obsm[f"{key}_values"]
        lengths = sub.obs[f"{key}_n_tokens"].to_numpy()
    return TokenArrays(
        tokens=tokens,
        values=values,
        lengths=lengths,
        pad_id=model.vocab.pad_id,
        pad_value=float(model.tokenize_params.get("pad_value", -2.0)),
    )


class _quiet:
    """Silence the inner tokenize's logging and progress bar while a caller reports."""

    def __enter__(self):
        from .._settings import settings

        self._saved = (settings.verbosity, settings.progress_bars)
        settings.verbosity, settings.progress_bars = 0, False

    def __exit__(self, *exc):
        from .._settings import settings

        settings.verbosity, settings.progress_bars = self._saved


def check_model_vocab(model) -> GeneVocab:
    if not isinstance(getattr(model, "vocab", None), GeneVocab):
        raise ValueError("the model has no vocabulary; load it with sct.models.load or train it")
    if not model.tokenize_params.get("method"):
        raise ValueError(
            "the model records no tokenization method (model.tokenize_params['method']); "
            "set it to how its training data were tokenized"
        )
    return model.vocab
