"""Converted BERT weights reproduce transformers.BertModel / BertForMaskedLM exactly."""

from __future__ import annotations

import pytest
import torch

from _nn_utils import padded_batch, randomize_

transformers = pytest.importorskip("transformers")

from sctransformer.models.converters.bert import config_from_bert, state_dict_from_bert  # noqa: E402
from sctransformer.nn import CellTransformer  # noqa: E402

# Geneformer V1 shape (6 layers, 256 wide, 4 heads, relu, post-LN) and V2 shape (12 layers,
# 512 wide, 8 heads, 4096 positions), both scaled down for speed.
V1_SMALL = dict(
    vocab_size=300,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_act="relu",
    max_position_embeddings=128,
    layer_norm_eps=1e-12,
    pad_token_id=0,
)
V2_SMALL = dict(
    V1_SMALL,
    hidden_size=96,
    num_hidden_layers=3,
    num_attention_heads=8,
    intermediate_size=192,
    max_position_embeddings=4096,
)


def _bert(cls, cfg, attn):
    config = transformers.BertConfig(
        **cfg, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation=attn
    )
    return randomize_(cls(config), seed=3).eval()


def _ours(bert, with_mlm_head):
    config = config_from_bert(bert.config.to_dict(), with_mlm_head=with_mlm_head)
    model = CellTransformer(config).eval()
    model.load_state_dict(state_dict_from_bert(bert.state_dict(), config))
    return model


@pytest.mark.parametrize("cfg", [V1_SMALL, V2_SMALL], ids=["v1", "v2"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_hidden_states_match_bertmodel(cfg, attn):
    bert = _bert(transformers.BertModel, cfg, attn)
    ours = _ours(bert, with_mlm_head=False)
    tokens, _ = padded_batch([40, 23, 7], vocab_size=cfg["vocab_size"])
    pad = tokens != 0
    with torch.no_grad():
        ref = bert(input_ids=tokens, attention_mask=pad.long(), output_hidden_states=True)
        out = ours(tokens, padding_mask=pad, output_hidden_states=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == cfg["num_hidden_layers"] + 1
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert (mine[pad] - theirs[pad]).abs().max() < 1e-4
    assert (out.last_hidden_state[pad] - ref.last_hidden_state[pad]).abs().max() < 1e-4
    packed = ours.encode(tokens, padding_mask=pad)
    assert (packed.hidden - ref.last_hidden_state[pad]).abs().max() < 1e-4


@pytest.mark.parametrize("cfg", [V1_SMALL, V2_SMALL], ids=["v1", "v2"])
def test_mlm_logits_match_bertformaskedlm(cfg):
    bert = _bert(transformers.BertForMaskedLM, cfg, "eager")
    ours = _ours(bert, with_mlm_head=True)
    tokens, _ = padded_batch([30, 12], vocab_size=cfg["vocab_size"], seed=5)
    pad = tokens != 0
    with torch.no_grad():
        ref = bert(input_ids=tokens, attention_mask=pad.long(), output_hidden_states=True)
        out = ours(tokens, padding_mask=pad, output_hidden_states=True)
        logits = ours.heads["mlm"](out.last_hidden_state)
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert (mine[pad] - theirs[pad]).abs().max() < 1e-4
    assert (logits[pad] - ref.logits[pad]).abs().max() < 1e-4


def test_converter_rejects_unknown_and_missing_keys():
    bert = _bert(transformers.BertModel, V1_SMALL, "eager")
    config = config_from_bert(bert.config.to_dict(), with_mlm_head=False)
    sd = dict(bert.state_dict())
    sd["encoder.layer.9.output.dense.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="cannot hold"):
        state_dict_from_bert(sd, config)
    sd = dict(bert.state_dict())
    del sd["encoder.layer.1.intermediate.dense.bias"]
    with pytest.raises(ValueError, match="lacks"):
        state_dict_from_bert(sd, config)
    with pytest.raises(ValueError, match="hidden_act"):
        config_from_bert({**bert.config.to_dict(), "hidden_act": "swish"})


def test_converter_rejects_untied_decoder():
    bert = _bert(transformers.BertForMaskedLM, V1_SMALL, "eager")
    config = config_from_bert(bert.config.to_dict())
    sd = dict(bert.state_dict())
    sd["cls.predictions.decoder.weight"] = sd["cls.predictions.decoder.weight"] + 1.0
    with pytest.raises(ValueError, match="tied"):
        state_dict_from_bert(sd, config)
