"""Convert ``transformers`` BERT checkpoints (e.g. Geneformer) to :class:`CellTransformer` weights.

Geneformer V1 and V2 are ``BertForMaskedLM`` models: post-LayerNorm, ReLU, ``layer_norm_eps``
1e-12, learned absolute positions. The mapping only renames and concatenates tensors; no
numerical change except folding the single token-type embedding into the positions.
"""

from __future__ import annotations

import re

import torch

from sctransformer.nn.config import TransformerConfig

__all__ = ["config_from_bert", "state_dict_from_bert"]

_ACTIVATIONS = {"relu": "relu", "gelu": "gelu"}

# per-layer BERT module → our module (weights and biases follow)
_LAYER_MAP = {
    "attention.output.dense": "attention.out",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "ffn.fc1",
    "output.dense": "ffn.fc2",
    "output.LayerNorm": "ffn_norm",
}
_TOP_MAP = {
    "embeddings.word_embeddings": "embeddings.token",
    "embeddings.LayerNorm": "embeddings.norm",
    "cls.predictions.transform.dense": "heads.mlm.dense",
    "cls.predictions.transform.LayerNorm": "heads.mlm.norm",
}
# present in BERT checkpoints, not needed here (pooler; decoder weight is tied to the embedding)
_IGNORED = re.compile(
    r"^(pooler\.|embeddings\.position_ids$|cls\.predictions\.decoder\.|cls\.seq_relationship)"
)


def config_from_bert(hf_config: dict, *, with_mlm_head: bool = True) -> TransformerConfig:
    """Build a :class:`~sctransformer.nn.TransformerConfig` from a BERT ``config.json`` dict.

    Parameters
    ----------
    hf_config
        The dictionary of a ``transformers`` ``BertConfig`` (``config.to_dict()`` or the parsed
        ``config.json``).
    with_mlm_head
        Build the masked-token head (``BertForMaskedLM`` checkpoints have one, ``BertModel``
        checkpoints do not).

    Returns
    -------
    The equivalent configuration.

    Raises
    ------
    ValueError
        For BERT variants this model does not implement (activation, relative positions).
    """
    act = hf_config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={act!r} is not supported; supported: {list(_ACTIVATIONS)}")
    pos_type = hf_config.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
        raise ValueError(f"position_embedding_type={pos_type!r} is not supported (only 'absolute')")
    return TransformerConfig(
        vocab_size=hf_config["vocab_size"],
        hidden_size=hf_config["hidden_size"],
        num_layers=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        ffn_size=hf_config["intermediate_size"],
        activation=_ACTIVATIONS[act],
        dropout=hf_config.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf_config.get("attention_probs_dropout_prob", 0.1),
        norm="post",
        layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
        max_positions=hf_config["max_position_embeddings"],
        value_input="none",
        pad_token_id=hf_config.get("pad_token_id") or 0,
        token_embedding_norm=False,
        embedding_norm=True,
        heads=["mlm"] if with_mlm_head else [],
        extra={"converted_from": "bert", "model_type": hf_config.get("model_type", "bert")},
    )


def state_dict_from_bert(
    bert_state_dict: dict[str, torch.Tensor], config: TransformerConfig
) -> dict[str, torch.Tensor]:
    """Rename a ``BertModel`` / ``BertForMaskedLM`` state dict to this package's layout.

    Keys may carry the ``bert.`` prefix (``BertForMaskedLM``) or not (``BertModel``). Query, key
    and value projections are concatenated into the fused ``qkv`` projection. BERT adds
    token-type embedding row 0 to every token; it is folded into the position embeddings.

    Parameters
    ----------
    bert_state_dict
        The BERT tensors.
    config
        The target configuration (e.g. from :func:`config_from_bert`).

    Returns
    -------
    A state dict for ``CellTransformer(config).load_state_dict``.

    Raises
    ------
    ValueError
        If keys are missing, unknown, or shapes disagree with ``config``.
    """
    sd = {k.removeprefix("bert."): v for k, v in bert_state_dict.items()}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(f"BERT state dict lacks {key!r}")
        used.add(key)
        return sd[key]

    for src, dst in _TOP_MAP.items():
        if src.startswith("cls.") and "mlm" not in config.heads:
            continue
        for p in ("weight", "bias"):
            if src == "embeddings.word_embeddings" and p == "bias":
                continue
            out[f"{dst}.{p}"] = take(f"{src}.{p}")
    if "mlm" in config.heads:
        out["heads.mlm.bias"] = take("cls.predictions.bias")
        decoder = sd.get("cls.predictions.decoder.weight")
        if decoder is not None and not torch.equal(decoder, out["embeddings.token.weight"]):
            raise ValueError(
                "cls.predictions.decoder.weight differs from the word embeddings; only "
                "checkpoints with tied input and output embeddings (as BERT and Geneformer) "
                "are supported"
            )
    positions = take("embeddings.position_embeddings.weight")
    if "embeddings.token_type_embeddings.weight" in sd:
        positions = positions + take("embeddings.token_type_embeddings.weight")[0]
    out["embeddings.position.weight"] = positions
    for i in range(config.num_layers):
        src = f"encoder.layer.{i}."
        dst = f"layers.{i}."
        for p in ("weight", "bias"):
            out[f"{dst}attention.qkv.{p}"] = torch.cat(
                [take(f"{src}attention.self.{name}.{p}") for name in ("query", "key", "value")]
            )
            for s, d in _LAYER_MAP.items():
                out[f"{dst}{d}.{p}"] = take(f"{src}{s}.{p}")
    leftover = sorted(k for k in set(sd) - used if not _IGNORED.match(k))
    if leftover:
        raise ValueError(
            f"BERT state dict has keys this configuration cannot hold: {leftover[:8]}"
            + (" ..." if len(leftover) > 8 else "")
        )
    _check_shapes(out, config)
    return out


def _check_shapes(sd: dict[str, torch.Tensor], config: TransformerConfig) -> None:
    d = config.hidden_size
    expected = {
        "embeddings.token.weight": (config.vocab_size, d),
        "embeddings.position.weight": (config.max_positions, d),
        "layers.0.attention.qkv.weight": (3 * d, d),
        "layers.0.ffn.fc1.weight": (config.ffn_size, d),
    }
    for key, shape in expected.items():
        if key in sd and tuple(sd[key].shape) != shape:
            raise ValueError(
                f"{key} has shape {tuple(sd[key].shape)}, the configuration expects {shape}"
            )
