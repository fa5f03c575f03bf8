"""Convert Geneformer (V1 and V2) checkpoints and dictionaries to this package's model.

Geneformer (Theodoris et al., Nature 2023; V2: Chen et al., bioRxiv 2024) publishes
``transformers.BertForMaskedLM`` folders (``config.json`` + ``model.safetensors``) and pickled
dictionaries: the token dictionary (``<pad>`` 0, ``<mask>`` 1, V2 also ``<cls>`` 2 and ``<eos>``
3, then Ensembl gene IDs), the gene median dictionary (Ensembl ID → median of nonzero
normalised expression) and the gene name → ID dictionary (symbol → Ensembl ID).

Facts used here come from the Geneformer repository (``geneformer/tokenizer.py``,
``geneformer/emb_extractor.py``): rank value encoding of counts / total counts × 10,000 /
gene median; V1 keeps 2,048 genes; V2 keeps 4,094 genes between ``<cls>`` and ``<eos>``;
embeddings come from the second-to-last layer, averaged over genes (V1) or taken at ``<cls>``
(V2).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ...tokenizers import GeneVocab
from .._safe_pickle import load_pickle
from .bert import config_from_bert, state_dict_from_bert

__all__ = [
    "convert_geneformer",
    "find_dictionaries",
    "is_geneformer_folder",
    "load_geneformer_folder",
    "tokenize_params_for",
    "vocab_from_dictionaries",
]

CONVERTER_VERSION = 1
_SPECIAL = re.compile(r"^<[^<>=]+>$")
_DICT_PATTERNS = {
    "token_dictionary": "token_dictionary*.pkl",
    "gene_median_dictionary": "gene_median_dictionary*.pkl",
    "gene_name_id_dict": "gene_name_id_dict*.pkl",
    "ensembl_mapping_dict": "ensembl_mapping_dict*.pkl",
}


def is_geneformer_folder(path: str | os.PathLike) -> bool:
    """A folder with a BERT ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``."""
    p = Path(path)
    cfg = p / "config.json"
    if not p.is_dir() or not cfg.exists():
        return False
    if not ((p / "model.safetensors").exists() or (p / "pytorch_model.bin").exists()):
        return False
    try:
        d = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return d.get("model_type") == "bert" or any(
        str(a).startswith("Bert") for a in d.get("architectures") or []
    )


def _as_mapping(obj, what: str) -> dict | None:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return dict(obj)
    data = load_pickle(obj)
    if not isinstance(data, Mapping):
        raise ValueError(f"{obj} should hold a dict ({what}), found {type(data).__name__}")
    return dict(data)


def vocab_from_dictionaries(
    token_dictionary: Mapping | str | os.PathLike,
    gene_median_dictionary: Mapping | str | os.PathLike | None = None,
    gene_name_id_dict: Mapping | str | os.PathLike | None = None,
    ensembl_mapping_dict: Mapping | str | os.PathLike | None = None,
) -> GeneVocab:
    """A :class:`~sctransformer.tokenizers.GeneVocab` from Geneformer's dictionaries.

    Parameters
    ----------
    token_dictionary
        ``{token: id}``: ``<pad>``, ``<mask>`` (and V2's ``<cls>``, ``<eos>``), then Ensembl IDs;
        a mapping or the path of Geneformer's pickle (read without running code).
    gene_median_dictionary
        ``{Ensembl ID: median}`` used by rank encoding.
    gene_name_id_dict
        ``{gene symbol: Ensembl ID}``; becomes the vocabulary's aliases, so data named by
        symbols maps onto the tokens.
    ensembl_mapping_dict
        ``{Ensembl ID: Ensembl ID}`` that Geneformer V2 uses to collapse retired or duplicate
        IDs; entries that are not tokens themselves become aliases too.

    Returns
    -------
    The vocabulary; ids equal Geneformer's token ids.
    """
    tokens = _as_mapping(token_dictionary, "token → id")
    ids = sorted(int(i) for i in tokens.values())
    if ids != list(range(len(tokens))):
        raise ValueError(
            "the token dictionary's ids are not 0…n-1 without gaps; is it a Geneformer "
            "token dictionary?"
        )
    by_id = sorted(tokens, key=lambda t: int(tokens[t]))
    specials = [str(t) for t in by_id if _SPECIAL.match(str(t))]
    if "<pad>" not in specials:
        raise ValueError("the token dictionary has no '<pad>' token")
    medians = _as_mapping(gene_median_dictionary, "gene → median") or {}
    known = set(map(str, by_id))
    medians = {str(k): float(v) for k, v in medians.items() if str(k) in known}
    aliases = {}
    for extra in (ensembl_mapping_dict, gene_name_id_dict):
        for k, v in (_as_mapping(extra, "name → Ensembl ID") or {}).items():
            if str(k) not in known and str(v) in known:
                aliases[str(k)] = str(v)
    return GeneVocab(by_id, specials=specials, gene_medians=medians, aliases=aliases)


def tokenize_params_for(vocab: GeneVocab, max_positions: int) -> dict:
    """Geneformer's tokenization as ``sct.pp.tokenize`` defaults (V2 when ``<cls>`` exists)."""
    v2 = "<cls>" in vocab.specials and "<eos>" in vocab.specials
    return {
        "method": "rank",
        "target_sum": 10_000.0,
        "normalize": True,
        "max_length": int(max_positions),
        "add_cls": v2,
        "add_eos": v2,
        # Geneformer's tokenizer divides each cell's counts by obs["n_counts"]
        "total_key": "n_counts",
    }


def embedding_defaults(v2: bool, num_layers: int) -> dict:
    """How Geneformer's extractor makes a cell vector (recorded in ``model.metadata``)."""
    return {
        "pooling": "cls" if v2 else "mean",
        # index into hidden_states (embedding output + one per layer): the second-to-last layer
        "layer": -2 if num_layers > 1 else -1,
        "exclude_special_tokens": True,
        "normalize": False,
    }


def find_dictionaries(folder: str | os.PathLike, vocab_size: int | None = None) -> dict:
    """Look for Geneformer dictionaries in ``folder``, its parent and a ``geneformer/`` checkout.

    The Geneformer repository keeps V2 dictionaries in ``geneformer/`` and V1 dictionaries in
    ``geneformer/gene_dictionaries_30m/``, next to the model folders. When several token
    dictionaries are found, the one whose length equals ``vocab_size`` wins, and the other
    dictionaries are taken from its folder.

    Returns
    -------
    ``{role: path}`` for the roles found (``token_dictionary``, ``gene_median_dictionary``,
    ``gene_name_id_dict``, ``ensembl_mapping_dict``).
    """
    folder = Path(folder)
    roots = [
        folder,
        folder.parent,
        folder.parent / "geneformer",
        folder.parent / "geneformer" / "gene_dictionaries_30m",
    ]
    candidates = [p for r in roots if r.is_dir() for p in sorted(r.glob("token_dictionary*.pkl"))]
    chosen = None
    for cand in candidates:
        if vocab_size is None:
            chosen = cand
            break
        try:
            if len(load_pickle(cand)) == vocab_size:
                chosen = cand
                break
        except Exception:
            continue
    if chosen is None:
        return {}
    out = {"token_dictionary": chosen}
    suffix = chosen.name.removeprefix("token_dictionary")
    for role, pattern in _DICT_PATTERNS.items():
        if role == "token_dictionary":
            continue
        exact = chosen.parent / (pattern.split("*")[0] + suffix)
        if exact.exists():
            out[role] = exact
        else:
            found = sorted(chosen.parent.glob(pattern))
            if len(found) == 1:
                out[role] = found[0]
    return out


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)


def _tie_mlm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fill in tensors that a tied BertForMaskedLM may store under one of two names."""
    sd = dict(sd)
    emb = next((k for k in sd if k.endswith("embeddings.word_embeddings.weight")), None)
    dec = "cls.predictions.decoder.weight"
    if emb is None and dec in sd:
        sd["bert.embeddings.word_embeddings.weight"] = sd[dec]
    elif emb is not None and dec in sd and not torch.equal(sd[emb], sd[dec]):
        raise ValueError(
            "the MLM decoder is not tied to the token embedding; this model ties them (as "
            "Geneformer does) and cannot hold separate decoder weights"
        )
    sd.pop(dec, None)
    if "cls.predictions.bias" not in sd and "cls.predictions.decoder.bias" in sd:
        sd["cls.predictions.bias"] = sd["cls.predictions.decoder.bias"]
    return sd


def convert_geneformer(
    hf_config: Mapping,
    state_dict: Mapping[str, torch.Tensor],
    vocab: GeneVocab,
    *,
    name: str | None = None,
):
    """Build a :class:`~sctransformer.nn.CellTransformer` from Geneformer's parts.

    Parameters
    ----------
    hf_config
        The BERT ``config.json`` as a dict.
    state_dict
        The ``BertForMaskedLM`` (or ``BertModel``) tensors.
    vocab
        From :func:`vocab_from_dictionaries`; its size must equal ``vocab_size``.
    name
        Recorded in ``model.metadata["name"]``.

    Returns
    -------
    The model in eval mode with ``.vocab``, ``.tokenize_params`` (Geneformer's tokenization)
    and ``.metadata`` (source, embedding defaults) set.
    """
    from ...nn.model import CellTransformer

    hf_config = dict(hf_config)
    if len(vocab) != hf_config["vocab_size"]:
        raise ValueError(
            f"the token dictionary has {len(vocab)} tokens but the model's vocab_size is "
            f"{hf_config['vocab_size']}: the dictionaries belong to another Geneformer version "
            "(V1 uses the *_gc30M dictionaries, V2 the *_gc104M ones)"
        )
    if vocab.pad_id != (hf_config.get("pad_token_id") or 0):
        raise ValueError("the token dictionary's <pad> id differs from the model's pad_token_id")
    sd = _tie_mlm(dict(state_dict))
    with_mlm = any(k.startswith("cls.predictions.transform") for k in sd)
    config = config_from_bert(hf_config, with_mlm_head=with_mlm)
    v2 = "<cls>" in vocab.specials
    config.extra.update({"converted_from": "geneformer", "variant": "V2" if v2 else "V1"})
    model = CellTransformer(config)
    model.load_state_dict(state_dict_from_bert(sd, config), strict=True)
    model.vocab = vocab
    model.tokenize_params = tokenize_params_for(vocab, config.max_positions)
    model.metadata = {
        "name": name or f"geneformer-{'v2' if v2 else 'v1'}",
        "source": "Geneformer (BertForMaskedLM)",
        "converter": "geneformer",
        "converter_version": CONVERTER_VERSION,
        "embedding": embedding_defaults(v2, config.num_layers),
        # read by sct.tl.embed_cells as its defaults
        "pooling": "cls" if v2 else "mean",
        "layer": embedding_defaults(v2, config.num_layers)["layer"],
        "dropped_keys": [],
    }
    return model.eval()


def load_geneformer_folder(
    path: str | os.PathLike,
    *,
    token_dictionary=None,
    gene_median_dictionary=None,
    gene_name_id_dict=None,
    ensembl_mapping_dict=None,
    name: str | None = None,
):
    """Load a Geneformer model folder (``transformers`` layout) and its dictionaries.

    Dictionaries not given are looked up with :func:`find_dictionaries`.

    Returns
    -------
    See :func:`convert_geneformer`.
    """
    from ... import logging as logg

    path = Path(path)
    hf_config = json.loads((path / "config.json").read_text())
    given = {
        "token_dictionary": token_dictionary,
        "gene_median_dictionary": gene_median_dictionary,
        "gene_name_id_dict": gene_name_id_dict,
        "ensembl_mapping_dict": ensembl_mapping_dict,
    }
    found = {} if token_dictionary is not None else find_dictionaries(path, hf_config["vocab_size"])
    if token_dictionary is None and "token_dictionary" not in found:
        raise FileNotFoundError(
            f"no Geneformer token dictionary with {hf_config['vocab_size']} tokens next to {path}; "
            "pass token_dictionary= (and gene_median_dictionary=, gene_name_id_dict=) to "
            "sct.models.load, e.g. the token_dictionary_gc104M.pkl of the Geneformer repository"
        )
    if found and token_dictionary is None:
        for role, p in found.items():
            if given[role] is None:
                given[role] = p
    if given["gene_median_dictionary"] is None:
        logg.warning(
            "no Geneformer gene median dictionary given or found; rank tokenization will use "
            "medians computed from your data, which differs from Geneformer's"
        )
    vocab = vocab_from_dictionaries(**given)
    model = convert_geneformer(hf_config, _read_weights(path), vocab, name=name or path.name)
    model.metadata["source"] = str(path)
    return model
