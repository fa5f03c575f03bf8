"""Convert scGPT checkpoints (``best_model.pt`` + ``args.json`` + ``vocab.json``).

scGPT (Cui et al., Nature Methods 2024) runs ``TransformerModel._encode``: gene encoder
(embedding → LayerNorm) plus continuous value encoder (clamp at 512 → Linear(1, d) → ReLU →
Linear(d, d) → LayerNorm), summed and fed to post-LayerNorm encoder layers with ReLU
feed-forward, no positional encoding and a key padding mask. The cell embedding is the last
layer's output at ``<cls>`` (position 0), L2-normalised (``scgpt.tasks.embed_data``).

Key layout of the published state dict: ``encoder.embedding``, ``encoder.enc_norm``,
``value_encoder.{linear1,linear2,norm}``, ``transformer_encoder.layers.{i}.self_attn.Wqkv``
(flash-attn; torch's layer calls it ``in_proj_weight``/``in_proj_bias``, same ``[q; k; v]``
rows), ``.self_attn.out_proj``, ``.linear1``, ``.linear2``, ``.norm1``, ``.norm2``,
``decoder.fc`` (expression decoder) and training-only heads (``mvc_decoder``, ``cls_decoder``,
``flag_encoder``) that have no home here and are dropped (listed in ``model.metadata``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ...nn.config import TransformerConfig
from ...tokenizers import GeneVocab

__all__ = [
    "config_from_scgpt",
    "convert_scgpt",
    "is_scgpt_folder",
    "load_scgpt_folder",
    "state_dict_from_scgpt",
    "vocab_from_scgpt",
]

CONVERTER_VERSION = 1
FILES = ("best_model.pt", "args.json", "vocab.json")
_SPECIAL = re.compile(r"^<[^<>=]+>$")

_TOP = {
    "encoder.embedding.weight": "embeddings.token.weight",
    "encoder.enc_norm.weight": "embeddings.token_norm.weight",
    "encoder.enc_norm.bias": "embeddings.token_norm.bias",
    **{
        f"value_encoder.{m}.{p}": f"embeddings.value.{m}.{p}"
        for m in ("linear1", "linear2", "norm")
        for p in ("weight", "bias")
    },
    **{
        f"decoder.fc.{i}.{p}": f"heads.value.fc.{i}.{p}"
        for i in (0, 2, 4)
        for p in ("weight", "bias")
    },
}
_LAYER = {
    "self_attn.Wqkv.weight": "attention.qkv.weight",
    "self_attn.Wqkv.bias": "attention.qkv.bias",
    "self_attn.in_proj_weight": "attention.qkv.weight",
    "self_attn.in_proj_bias": "attention.qkv.bias",
    "self_attn.out_proj.weight": "attention.out.weight",
    "self_attn.out_proj.bias": "attention.out.bias",
    "linear1.weight": "ffn.fc1.weight",
    "linear1.bias": "ffn.fc1.bias",
    "linear2.weight": "ffn.fc2.weight",
    "linear2.bias": "ffn.fc2.bias",
    "norm1.weight": "attention_norm.weight",
    "norm1.bias": "attention_norm.bias",
    "norm2.weight": "ffn_norm.weight",
    "norm2.bias": "ffn_norm.bias",
}
# heads used only in training; the encoder's output does not depend on them
_DROPPABLE = re.compile(
    r"^(mvc_decoder|cls_decoder|flag_encoder|grad_reverse_discriminator|sim)\.|^decoder\.zero_logit\."
)
# parts that change the encoder's output and that this model does not implement
_UNSUPPORTED = re.compile(r"^(batch_encoder|dsbn|bn)\.")


def is_scgpt_folder(path: str | os.PathLike) -> bool:
    """A folder with scGPT's ``best_model.pt``, ``args.json`` and ``vocab.json``."""
    p = Path(path)
    return p.is_dir() and all((p / f).exists() for f in FILES)


def vocab_from_scgpt(vocab: Mapping[str, int]) -> GeneVocab:
    """The vocabulary of scGPT's ``vocab.json`` (``{token: id}``; gene symbols and specials).

    Ids are kept; gaps, if any, are filled with ``<unused…>`` special tokens.
    """
    by_id: dict[int, str] = {}
    for tok, i in vocab.items():
        if int(i) in by_id:
            raise ValueError(f"vocab.json gives id {i} to both {by_id[int(i)]!r} and {tok!r}")
        by_id[int(i)] = str(tok)
    size = max(by_id) + 1
    tokens = [by_id.get(i, f"<unused{i}>") for i in range(size)]
    specials = [t for t in tokens if _SPECIAL.match(t)]
    if "<pad>" not in specials:
        raise ValueError("vocab.json has no '<pad>' token")
    return GeneVocab(tokens, specials=specials)


def config_from_scgpt(args: Mapping, vocab_size: int, pad_token_id: int) -> TransformerConfig:
    """The :class:`~sctransformer.nn.TransformerConfig` of scGPT's ``args.json``.

    Raises
    ------
    ValueError
        For settings whose forward this model does not implement (pre-norm without final norm,
        category/scaling value input).
    """
    style = args.get("input_emb_style", "continuous")
    if style != "continuous":
        raise ValueError(f"scGPT input_emb_style={style!r} is not supported (only 'continuous')")
    if args.get("pre_norm", False):
        raise ValueError("scGPT pre_norm=True checkpoints are not supported (only post-LayerNorm)")
    dropout = float(args.get("dropout", 0.2))
    return TransformerConfig(
        vocab_size=vocab_size,
        hidden_size=int(args["embsize"]),
        num_layers=int(args["nlayers"]),
        num_heads=int(args["nheads"]),
        ffn_size=int(args["d_hid"]),
        activation="relu",
        dropout=dropout,
        attention_dropout=dropout,
        norm="post",
        layer_norm_eps=1e-5,  # torch.nn.LayerNorm's default, used by every scGPT norm
        max_positions=0,
        value_input="continuous",
        value_clamp=512.0,
        pad_token_id=pad_token_id,
        token_embedding_norm=True,
        embedding_norm=False,
        heads=["value"],
        extra={"converted_from": "scgpt"},
    )


def state_dict_from_scgpt(
    state_dict: Mapping[str, torch.Tensor], config: TransformerConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename scGPT tensors to this package's layout.

    Returns
    -------
    The new state dict and the sorted list of source keys dropped (training-only heads).

    Raises
    ------
    ValueError
        Missing keys, keys that change the encoder and have no home here, unknown keys or
        shapes that disagree with ``config``.
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unsupported: list[str] = []
    unknown: list[str] = []
    layer_re = re.compile(r"^transformer_encoder\.layers\.(\d+)\.(.+)$")
    for key, value in sd.items():
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        m = layer_re.match(key)
        if m and m.group(2) in _LAYER and int(m.group(1)) < config.num_layers:
            out[f"layers.{m.group(1)}.{_LAYER[m.group(2)]}"] = value
        elif _DROPPABLE.match(key):
            dropped.append(key)
        elif _UNSUPPORTED.match(key):
            unsupported.append(key)
        else:
            unknown.append(key)
    if unsupported:
        raise ValueError(
            f"this scGPT checkpoint uses parts that change its encoder and are not implemented "
            f"here: {sorted(unsupported)[:6]} (batch labels / domain-specific batch norm)"
        )
    if unknown:
        raise ValueError(f"scGPT state dict has keys this model cannot hold: {sorted(unknown)[:8]}")
    if not any(k.startswith("heads.value.") for k in out):
        config.heads = [h for h in config.heads if h != "value"]
    expected = {
        "embeddings.token.weight",
        "embeddings.token_norm.weight",
        "embeddings.value.linear1.weight",
    } | {f"layers.{i}.attention.qkv.weight" for i in range(config.num_layers)}
    missing = sorted(expected - set(out))
    if missing:
        raise ValueError(f"scGPT state dict lacks tensors for {missing[:6]}")
    d = config.hidden_size
    for key, shape in {
        "embeddings.token.weight": (config.vocab_size, d),
        "layers.0.attention.qkv.weight": (3 * d, d),
        "layers.0.ffn.fc1.weight": (config.ffn_size, d),
    }.items():
        if tuple(out[key].shape) != shape:
            raise ValueError(
                f"{key} has shape {tuple(out[key].shape)}; args.json/vocab.json imply {shape}"
            )
    return out, sorted(dropped)


def _tokenize_params(args: Mapping) -> dict:
    return {
        "method": "adaptive_bin",
        "n_bins": int(args.get("n_bins", 51)),
        "max_length": int(args.get("max_seq_len", 1200)),
        "add_cls": True,
        "add_eos": False,
        "pad_value": float(args.get("pad_value", -2)),
        # scGPT's data collator samples genes at random when a cell has too many
        "select": "random",
        "normalize": True,
    }


def convert_scgpt(
    state_dict: Mapping[str, torch.Tensor],
    args: Mapping,
    vocab: Mapping[str, int] | GeneVocab,
    *,
    name: str | None = None,
):
    """Build a :class:`~sctransformer.nn.CellTransformer` from scGPT's three files' contents.

    Parameters
    ----------
    state_dict
        The tensors of ``best_model.pt``.
    args
        ``args.json`` as a dict (``embsize``, ``nlayers``, ``nheads``, ``d_hid``, ``n_bins``,
        ``pad_token``, ``pad_value``, ``max_seq_len``, ``input_emb_style``).
    vocab
        ``vocab.json`` as ``{token: id}``, or a :class:`GeneVocab`.
    name
        Recorded in ``model.metadata["name"]``.

    Returns
    -------
    The model in eval mode with ``.vocab``, ``.tokenize_params`` (scGPT's adaptive bins) and
    ``.metadata`` (dropped keys, embedding defaults) set.
    """
    from ...nn.model import CellTransformer

    gv = vocab if isinstance(vocab, GeneVocab) else vocab_from_scgpt(vocab)
    pad = str(args.get("pad_token", "<pad>"))
    if pad not in gv:
        raise ValueError(f"pad token {pad!r} of args.json is not in vocab.json")
    config = config_from_scgpt(args, len(gv), gv[pad])
    sd, dropped = state_dict_from_scgpt(state_dict, config)
    model = CellTransformer(config)
    model.load_state_dict(sd, strict=True)
    model.vocab = gv
    model.tokenize_params = _tokenize_params(args)
    model.metadata = {
        "name": name or "scgpt",
        "source": "scGPT (TransformerModel)",
        "converter": "scgpt",
        "converter_version": CONVERTER_VERSION,
        "embedding": {
            "pooling": "cls",
            "layer": -1,
            "exclude_special_tokens": False,
            "normalize": True,
        },
        "pooling": "cls",  # read by sct.tl.embed_cells as its defaults
        "layer": -1,
        "dropped_keys": dropped,
    }
    return model.eval()


def load_scgpt_folder(path: str | os.PathLike, *, name: str | None = None):
    """Load a folder with scGPT's ``best_model.pt``, ``args.json`` and ``vocab.json``.

    The weights are read with ``torch.load(weights_only=True)``: no code in the file runs.
    """
    path = Path(path)
    missing = [f for f in FILES if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"{path} lacks scGPT files {missing} (expected {list(FILES)})")
    state = torch.load(path / "best_model.pt", map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model_state_dict" in state:
        state = state["model_state_dict"]
    args = json.loads((path / "args.json").read_text())
    vocab = json.loads((path / "vocab.json").read_text())
    model = convert_scgpt(state, args, vocab, name=name or path.name)
    model.metadata["source"] = str(path)
    return model
