"""Named models: the bundled demonstration model and published models fetched with pooch."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from .._settings import settings
from . import _io
from ._model import Model

_BUNDLED = Path(__file__).parent / "weights"


class RemoteFile(NamedTuple):
    """One published file: revision-pinned URL, sha256 and size in bytes (``None``: unknown)."""

    url: str
    sha256: str
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ModelEntry:
    """One named model: where it comes from, its size and how to cite it.

    ``files`` maps a role (``"weights"``, ``"token_dictionary"``, ``"args"``, …) to a
    :class:`RemoteFile`; ``kind`` names the converter (``"geneformer"`` or ``"scgpt"``);
    ``config`` holds the publisher's configuration facts the converter needs.
    """

    name: str
    description: str
    source: str
    license: str
    citation: str
    size_bytes: int
    files: dict = field(default_factory=dict)  # role -> RemoteFile
    bundled: str | None = None  # folder name under models/weights
    kind: str | None = None
    config: dict = field(default_factory=dict)

    def location(self) -> Path | None:
        return _BUNDLED / self.bundled if self.bundled else None

    def cache_folder(self) -> Path:
        """``<sct.settings.cachedir>/<name>``: downloads in ``download/``, ours in ``converted/``."""
        return Path(settings.cachedir) / self.name


REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    REGISTRY[entry.name] = entry


register(
    ModelEntry(
        name="sct-tiny-pbmc",
        description=(
            "demonstration model: 2-layer, 64-dim rank-input encoder pretrained (MLM, 30 "
            "epochs) on the 700 bundled pbmc68k cells; not a foundation model"
        ),
        source="shipped inside the package (scripts/train_tiny.py)",
        license="BSD-3-Clause",
        citation="sctransformer; data: scanpy.datasets.pbmc68k_reduced (10x Genomics PBMC 68k)",
        size_bytes=0,
        bundled="sct-tiny-pbmc",
    )
)


_GF = (
    "https://huggingface.co/ctheodoris/Geneformer/resolve/ff551ee40322e9f58bd86ca867d76cf78f26e41b/"
)
_SCGPT = (
    "https://huggingface.co/wanglab/scGPT-human/resolve/a24c237737a40f3720f75abb555489e9fe753be6/"
)
_GF_LICENSE = "Apache-2.0 (Geneformer model card on the Hugging Face Hub)"
_GF_V1_CITATION = (
    "Theodoris CV et al. Transfer learning enables predictions in network biology. "
    "Nature 618, 616-624 (2023). doi:10.1038/s41586-023-06139-9"
)
_GF_V2_CITATION = (
    "Chen H et al. Quantized multi-task learning for context-specific representations of gene "
    "network dynamics. bioRxiv (2024). doi:10.1101/2024.08.16.608180; and " + _GF_V1_CITATION
)
# BertForMaskedLM settings shared by every Geneformer model (from their config.json files)
_GF_BERT = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "hidden_act": "relu",
    "layer_norm_eps": 1e-12,
    "type_vocab_size": 2,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "hidden_dropout_prob": 0.02,
    "attention_probs_dropout_prob": 0.02,
}
_GF_V1_DICTS = {
    "token_dictionary": RemoteFile(
        _GF + "geneformer/gene_dictionaries_30m/token_dictionary_gc30M.pkl",
        "ab9dc40973fa5224d77b793e2fd114cacf3d08423ed9c4c49caf0ba9c7f218f1",
    ),
    "gene_median_dictionary": RemoteFile(
        _GF + "geneformer/gene_dictionaries_30m/gene_median_dictionary_gc30M.pkl",
        "b3b589bb5ec75040d05fc44dd6bf0184cf87f3c362cf158d196a6ed3b7fe5f39",
    ),
    "gene_name_id_dict": RemoteFile(
        _GF + "geneformer/gene_dictionaries_30m/gene_name_id_dict_gc30M.pkl",
        "55e67962e79c0039a6c32d43c5c99f38e51964bbcfa32f736150ee1e285c438c",
    ),
    "ensembl_mapping_dict": RemoteFile(
        _GF + "geneformer/gene_dictionaries_30m/ensembl_mapping_dict_gc30M.pkl",
        "eac0fb0b3007267871b6305ac0003ceba19d4f28d85686cb9067ecf142787869",
    ),
}
_GF_V2_DICTS = {
    "token_dictionary": RemoteFile(
        _GF + "geneformer/token_dictionary_gc104M.pkl",
        "67c445f4385127adfc48dcc072320cd65d6822829bf27dd38070e6e787bc597f",
        425_590,
    ),
    "gene_median_dictionary": RemoteFile(
        _GF + "geneformer/gene_median_dictionary_gc104M.pkl",
        "a51c53f6a771d64508dfaf61529df70e394c53bd20856926117ae5d641a24bf5",
    ),
    "gene_name_id_dict": RemoteFile(
        _GF + "geneformer/gene_name_id_dict_gc104M.pkl",
        "fabfa0c2f49c598c59ae432a32c3499a5908c033756c663b5e0cddf58deea8e1",
    ),
    "ensembl_mapping_dict": RemoteFile(
        _GF + "geneformer/ensembl_mapping_dict_gc104M.pkl",
        "0819bcbd869cfa14279449b037eb9ed1d09a91310e77bd1a19d927465030e95c",
    ),
}


def _geneformer(name, folder, sha256, size, dicts, citation, description, **shape):
    return ModelEntry(
        name=name,
        description=description,
        source=f"huggingface.co/ctheodoris/Geneformer @ ff551ee ({folder})",
        license=_GF_LICENSE,
        citation=citation,
        size_bytes=size + sum(f.size or 0 for f in dicts.values()),
        files={"weights": RemoteFile(f"{_GF}{folder}/model.safetensors", sha256, size), **dicts},
        kind="geneformer",
        config={**_GF_BERT, **shape},
    )


register(
    _geneformer(
        "geneformer-v1-10m",
        "Geneformer-V1-10M",
        "a5e33a757431643b3697de7ef6127950cdc49e06e58d4266b3a3ab191b683f14",
        41_183_536,
        _GF_V1_DICTS,
        _GF_V1_CITATION,
        "Geneformer V1, 10M parameters: 6 layers, 256 wide, 2,048 genes ranked by "
        "median-scaled expression, pretrained on Genecorpus-30M (MLM)",
        hidden_size=256,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=2048,
        vocab_size=25_426,
    )
)
register(
    _geneformer(
        "geneformer-v2-104m",
        "Geneformer-V2-104M",
        "fff5cba29ddd8792991fa77b4872246fbe548a178cebda3775cdc72b67780e7f",
        417_571_156,
        _GF_V2_DICTS,
        _GF_V2_CITATION,
        "Geneformer V2, 104M parameters: 12 layers, 768 wide, <cls> + 4,094 ranked genes + "
        "<eos>, pretrained on Genecorpus-104M (MLM)",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=4096,
        vocab_size=20_275,
    )
)
register(
    _geneformer(
        "geneformer-v2-316m",
        "Geneformer-V2-316M",
        "965ceccea81953d362081ef3843560a0e4fef88d396c28017881f1e94b1246f3",
        1_265_455_076,
        _GF_V2_DICTS,
        _GF_V2_CITATION,
        "Geneformer V2, 316M parameters: 18 layers, 1,152 wide, <cls> + 4,094 ranked genes + "
        "<eos>, pretrained on Genecorpus-104M (MLM)",
        hidden_size=1152,
        num_hidden_layers=18,
        num_attention_heads=18,
        intermediate_size=4608,
        max_position_embeddings=4096,
        vocab_size=20_275,
    )
)
register(
    ModelEntry(
        name="scgpt-human",
        description=(
            "scGPT whole-human: 12 layers, 512 wide, 8 heads, continuous value input of 51 "
            "adaptive bins, up to 1,200 genes, pretrained on 33M human cells (CELLxGENE)"
        ),
        source="huggingface.co/wanglab/scGPT-human @ a24c237 (mirror of scGPT's release)",
        license="MIT (scGPT repository licence, github.com/bowang-lab/scGPT)",
        citation=(
            "Cui H et al. scGPT: toward building a foundation model for single-cell multi-omics "
            "using generative AI. Nature Methods 21, 1470-1480 (2024). "
            "doi:10.1038/s41592-024-02201-0"
        ),
        size_bytes=205_385_258,
        files={
            "weights": RemoteFile(
                _SCGPT + "best_model.pt",
                "6cb5d451ab5c4b33eb673adbe4fddc61d2389df1b89b7651a9fe2e557572b922",
                205_385_258,
            ),
            "args": RemoteFile(
                _SCGPT + "args.json",
                "c18e075e018140cb8b2d9029387b9de26607a5ce6a8ccabd6ead70cd76b95d60",
            ),
            "vocab": RemoteFile(
                _SCGPT + "vocab.json",
                "acca93d114ca62c3f0f50debbd23e8c87f0714f4737764454f6b2b13f2e8580f",
            ),
        },
        kind="scgpt",
        config={"embsize": 512, "nlayers": 12, "nheads": 8, "d_hid": 512, "n_bins": 51},
    )
)


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
            return _io.load_checkpoint(entry.location())
        return _load_published(entry)
    path = Path(name_or_path)
    if path.exists():
        if _io.is_checkpoint(path):
            return _io.load_checkpoint(path)
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
            return _io.load_checkpoint(converted)
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
    return _io.load_checkpoint(converted)


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
