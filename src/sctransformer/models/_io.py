"""The one checkpoint format: a folder with config, weights, vocabulary and metadata.

``config.json``      :class:`~sctransformer.nn.TransformerConfig`
``model.safetensors`` the weights (no code runs when loading)
``vocab.json``       :class:`~sctransformer.tokenizers.GeneVocab`
``metadata.json``    package version, objective, training data, tokenization parameters and
                     the sha256 of ``model.safetensors``
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .._version import __version__
from ..nn.config import TransformerConfig
from ..tokenizers import GeneVocab

FILES = ("config.json", "model.safetensors", "vocab.json", "metadata.json")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_checkpoint(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and all((p / f).exists() for f in FILES)


def save(model, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write ``model`` as a checkpoint folder (atomically: a temporary folder, then rename).

    Parameters
    ----------
    model
        A :class:`~sctransformer.nn.CellTransformer` with ``.vocab`` set.
    path
        Folder to create or replace.
    metadata
        Extra entries for ``metadata.json`` (JSON-serialisable).

    Returns
    -------
    The folder's path.
    """
    from safetensors.torch import save_file

    if not isinstance(getattr(model, "vocab", None), GeneVocab):
        raise ValueError("the model has no vocabulary (model.vocab); set a GeneVocab before saving")
    # a Model, or a bare module carrying .vocab (and maybe .tokenize_params, .metadata)
    module = getattr(model, "module", model)
    card = getattr(model, "metadata", None) or {}
    tokenize_params = getattr(model, "tokenize_params", None) or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        # tied weights (MLM decoder = token embedding) are stored once; load re-ties them
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        seen: dict[int, str] = {}
        for k in list(state):
            ptr = state[k].data_ptr()
            if ptr in seen and state[k].shape == state[seen[ptr]].shape:
                del state[k]
            else:
                seen[ptr] = k
        save_file(state, str(tmp / "model.safetensors"))
        module.config.to_json(tmp / "config.json")
        model.vocab.save(tmp / "vocab.json")
        meta = {
            **card,
            **(metadata or {}),
            "package_version": __version__,
            "tokenize_params": dict(tokenize_params),
            "weights_sha256": sha256_file(tmp / "model.safetensors"),
        }
        (tmp / "metadata.json").write_text(
            json.dumps(meta, indent=2, sort_keys=True, default=_plain)
        )
        if path.exists():
            shutil.rmtree(path)
        _default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _plain(value):
    """JSON for numpy values (parameters read back from an h5ad are numpy arrays/scalars)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} in the model metadata cannot be written as JSON")


def read_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> tuple:
    """The parts of a checkpoint folder written by :func:`save`: ``(module, vocab,
    tokenize_params, metadata)`` (:func:`~._model.load_checkpoint` makes the model of them).

    A checkpoint whose metadata names no model is named after its folder.
    """
    from safetensors.torch import load_file

    from ..nn.model import CellTransformer

    path = Path(path)
    missing = [f for f in FILES if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a sctransformer checkpoint: missing {missing} (expected {list(FILES)})"
        )
    meta = json.loads((path / "metadata.json").read_text())
    if verify and meta.get("weights_sha256"):
        digest = sha256_file(path / "model.safetensors")
        if digest != meta["weights_sha256"]:
            raise ValueError(
                f"{path / 'model.safetensors'} has sha256 {digest}, but metadata.json records "
                f"{meta['weights_sha256']}: the file is truncated or was modified; restore it"
            )
    config = TransformerConfig.from_json(path / "config.json")
    model = CellTransformer(config)
    state = load_file(str(path / "model.safetensors"))
    result = model.load_state_dict(state, strict=False)
    tied = {k for k in result.missing_keys if _is_tied(model, k)}
    missing_keys = sorted(set(result.missing_keys) - tied)
    if missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights in {path} do not fit config.json: missing {missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.eval()
    tokenize_params = dict(meta.pop("tokenize_params", {}))
    meta.setdefault("name", path.resolve().name)
    return model, GeneVocab.load(path / "vocab.json"), tokenize_params, meta


def _is_tied(model, key: str) -> bool:
    """A parameter that shares storage with another one that was saved."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    ptr = params[key].data_ptr()
    return any(p.data_ptr() == ptr and k != key for k, p in params.items())


def _default_permissions(folder: Path) -> None:
    """mkdtemp/mkstemp create owner-only entries; give the checkpoint the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)
