"""Named models and folders as :class:`~sctransformer.models.Model`: listing, the files a
published model needs, and loading (download, sha256 check and conversion, once).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from . import _io
from ._entry import ModelEntry
from ._model import Model, load_checkpoint
from ._published import REGISTRY


def available() -> pd.DataFrame:
    """Every named model with its size, source, licence and citation.

    Returns
    -------
    One row per model, indexed by name: ``description``, ``size_mb`` (download size),
    ``source``, ``license``, ``citation`` and ``cached`` (already converted in
    ``sct.settings.cachedir``, or shipped with the package).
    """
    rows = []
    for e in REGISTRY.values():
        size = e.size_bytes
        if e.bundled and e.location().exists():
            size = sum(f.stat().st_size for f in e.location().iterdir())
        cached = (
            e.location().exists()
            if e.bundled
            else _io.is_checkpoint(e.cache_folder() / "converted")
        )
        rows.append(
            {
                "name": e.name,
                "description": e.description,
                "size_mb": round(size / 1e6, 2),
                "source": e.source,
                "license": e.license,
                "citation": e.citation,
                "cached": bool(cached),
            }
        )
    return pd.DataFrame(rows).set_index("name")


def files(name: str) -> pd.DataFrame:
    """The files a published model needs and where they go, e.g. to place them by hand offline.

    Parameters
    ----------
    name
        A name from :func:`available`.

    Returns
    -------
    One row per file (indexed by role): ``url`` (revision-pinned), ``sha256``, ``size_bytes``
    (-1 when not recorded), ``path`` (where :func:`load` looks for it) and ``present`` (the file
    is there with the right hash).
    """
    entry = _entry(name)
    rows = []
    for role, f in entry.files.items():
        dest = entry.cache_folder() / "download" / f.filename
        rows.append(
            {
                "role": role,
                "url": f.url,
                "sha256": f.sha256,
                "size_bytes": -1 if f.size is None else f.size,
                "path": str(dest),
                "present": dest.exists() and _io.sha256_file(dest) == f.sha256,
            }
        )
    return pd.DataFrame(rows).set_index("role")


def _entry(name: str) -> ModelEntry:
    if name not in REGISTRY:
        raise ValueError(f"{name!r} is not a registered model; known: {sorted(REGISTRY)}")
    return REGISTRY[name]


def load(
    name_or_path: str | os.PathLike,
    *,
    token_dictionary=None,
    gene_median_dictionary=None,
    gene_name_id_dict=None,
    ensembl_mapping_dict=None,
):
    """Load a model by registry name or from a folder.

    A published model (see :func:`available`) is downloaded once into
    ``sct.settings.cachedir`` (``$SCTRANSFORMER_CACHE_DIR``), each file checked against its
    pinned sha256, converted once to this package's checkpoint format (kept beside the
    downloads, in ``<cachedir>/<name>/converted``) and loaded from there afterwards. With
    ``sct.settings.offline`` (``SCTRANSFORMER_OFFLINE=1``) nothing is downloaded: a missing file
    fails at once with its URL, sha256 and the path to put it at (see :func:`files`).

    A folder may be in this package's format (:func:`save`), in Geneformer's (a
    ``transformers`` ``BertForMaskedLM`` folder: ``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``) or in scGPT's (``best_model.pt``, ``args.json``, ``vocab.json``).
    Nothing in any file runs code while loading: safetensors, ``torch.load(weights_only=True)``
    and a restricted unpickler for Geneformer's pickled dictionaries.

    Parameters
    ----------
    name_or_path
        A name from :func:`available` or a folder.
    token_dictionary, gene_median_dictionary, gene_name_id_dict, ensembl_mapping_dict
        Geneformer folders only: the dictionaries (paths to Geneformer's pickles, or dicts).
        When not given they are looked for beside the folder and in a ``geneformer/``
        checkout next to it; the token dictionary whose size matches the model is used.

    Returns
    -------
    :class:`~sctransformer.models.Model`: the torch module (``.module``, in eval mode) with
    ``.vocab``, ``.tokenize_params`` (the publisher's tokenization, used by
    ``sct.pp.tokenize`` when the model is passed as ``vocab=``) and ``.metadata`` (name,
    source, licence, citation, the publisher's embedding defaults under ``"embedding"``,
    dropped tensors). A folder's model is named after its metadata, else the folder.
    """
    from .converters import geneformer, scgpt

    key = str(name_or_path)
    if key in REGISTRY:
        entry = REGISTRY[key]
        if entry.bundled:
            return load_checkpoint(entry.location())
        return _load_published(entry)
    path = Path(name_or_path)
    if path.exists():
        if _io.is_checkpoint(path):
            return load_checkpoint(path)
        if scgpt.is_scgpt_folder(path):
            return _named(scgpt.load_scgpt_folder(path), path)
        if geneformer.is_geneformer_folder(path):
            return _named(
                geneformer.load_geneformer_folder(
                    path,
                    token_dictionary=token_dictionary,
                    gene_median_dictionary=gene_median_dictionary,
                    gene_name_id_dict=gene_name_id_dict,
                    ensembl_mapping_dict=ensembl_mapping_dict,
                ),
                path,
            )
        raise ValueError(
            f"{path} is not a model folder this package can read: expected its own checkpoint "
            f"({list(_io.FILES)}), a Geneformer folder (config.json + model.safetensors or "
            f"pytorch_model.bin) or an scGPT folder ({list(scgpt.FILES)})"
        )
    raise ValueError(
        f"{key!r} is neither a registered model ({sorted(REGISTRY)}) nor an existing folder; "
        "see sct.models.available()"
    )


def _named(module, path: Path) -> Model:
    """A converted publisher's folder as a model, named after its metadata or the folder."""
    model = Model.wrap(module)
    if not model.metadata.get("name") or model.metadata["name"] == "unnamed":
        model.metadata["name"] = path.resolve().name
    return model


def _converter_version(kind: str) -> int:
    from .converters import geneformer, scgpt

    return {"geneformer": geneformer, "scgpt": scgpt}[kind].CONVERTER_VERSION


def _load_published(entry: ModelEntry):
    from .. import logging as logg
    from ._fetch import OfflineError, fetch

    converted = entry.cache_folder() / "converted"
    hashes = {role: f.sha256 for role, f in entry.files.items()}
    if _io.is_checkpoint(converted):
        import json

        meta = json.loads((converted / "metadata.json").read_text())
        if meta.get("source_files") == hashes and meta.get("converter_version") == (
            _converter_version(entry.kind)
        ):
            return load_checkpoint(converted)
        logg.info(f"{converted} was converted from other files or code; converting again")
    paths, missing = {}, []
    for role, f in entry.files.items():
        try:
            paths[role] = fetch(f.url, f.sha256, entry.cache_folder() / "download" / f.filename)
        except OfflineError as e:
            missing.append(str(e))
    if missing:
        raise OfflineError(
            f"{entry.name} needs {len(missing)} file(s) that are not in the cache:\n"
            + "\n".join(missing)
            + f"\n(sct.models.files({entry.name!r}) lists every file and its path)"
        )
    start = logg.info(f"converting {entry.name} to the sctransformer checkpoint format")
    model = _convert(entry, paths)
    _io.save(
        model,
        converted,
        metadata={
            "name": entry.name,
            "source": entry.source,
            "license": entry.license,
            "citation": entry.citation,
            "source_files": hashes,
        },
    )
    logg.info("    finished", time=start, deep=f"saved {converted}")
    return load_checkpoint(converted)


def _convert(entry: ModelEntry, paths: dict[str, Path]):
    if entry.kind == "geneformer":
        from safetensors.torch import load_file

        from .converters import geneformer

        vocab = geneformer.vocab_from_dictionaries(
            paths["token_dictionary"],
            paths.get("gene_median_dictionary"),
            paths.get("gene_name_id_dict"),
            paths.get("ensembl_mapping_dict"),
        )
        return geneformer.convert_geneformer(
            entry.config, load_file(str(paths["weights"])), vocab, name=entry.name
        )
    if entry.kind == "scgpt":
        import json

        import torch

        from .converters import scgpt

        state = torch.load(paths["weights"], map_location="cpu", weights_only=True)
        args = json.loads(Path(paths["args"]).read_text())
        vocab = json.loads(Path(paths["vocab"]).read_text())
        return scgpt.convert_scgpt(state, args, vocab, name=entry.name)
    raise ValueError(f"no converter for {entry.name!r} (kind={entry.kind!r})")


def resolve(model) -> Model:
    """The :class:`~sctransformer.models.Model` for a model, a registry name or a folder.

    A bare :class:`~sctransformer.nn.CellTransformer` carrying ``.vocab`` (and
    ``.tokenize_params``, ``.metadata``) is wrapped.
    """
    if isinstance(model, str | os.PathLike):
        return load(model)
    model = Model.wrap(model)
    if model.vocab is None:
        raise ValueError("the model has no vocabulary (model.vocab); load or train it with one")
    return model
