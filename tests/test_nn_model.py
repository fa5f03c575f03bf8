"""CellTransformer: packed inference, batch independence, precision, heads and config."""

from __future__ import annotations

import json

import pytest
import torch

from _nn_utils import padded_batch, randomize_, small_config
from sctransformer.nn import CellTransformer, TransformerConfig, pool
from sctransformer.nn.precision import autocast_context, resolve_precision


def _model(**kw):
    return randomize_(CellTransformer(small_config(**kw))).eval()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"norm": "pre", "activation": "gelu"},
        {
            "value_input": "continuous",
            "max_positions": 0,
            "token_embedding_norm": True,
            "embedding_norm": False,
        },
        {"value_input": "bins", "n_value_bins": 7},
    ],
    ids=["post-relu", "pre-gelu", "scgpt-like", "bins"],
)
@pytest.mark.parametrize("objective", ["mlm", "ntp", "generative"])
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_packed_path_equals_padded_path(kw, objective, backend):
    model = _model(**kw)
    tokens, lengths = padded_batch([20, 13, 4, 17])
    values = None
    if model.config.value_input == "continuous":
        values = torch.rand(tokens.shape) * 10
    elif model.config.value_input == "bins":
        values = torch.randint(0, 7, tokens.shape)
    gen = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    gen = gen if objective == "generative" else None
    with torch.no_grad():
        ref = model(tokens, values, lengths=lengths, objective=objective, gen_mask=gen)
    packed = model.encode(
        tokens, values, lengths=lengths, objective=objective, gen_mask=gen, backend=backend
    )
    pad = ref.padding_mask
    torch.testing.assert_close(packed.hidden, ref.last_hidden_state[pad], atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.to_padded()[pad], ref.last_hidden_state[pad])
    for mode in ("cls", "mean"):
        torch.testing.assert_close(
            packed.pool(mode), pool(ref.last_hidden_state, pad, mode), atol=1e-5, rtol=0
        )


def test_cell_output_independent_of_batch_composition():
    model = _model()
    tokens, lengths = padded_batch([9, 30, 25], seed=2)
    with torch.no_grad():
        alone = model(tokens[:1, :9], lengths=lengths[:1]).last_hidden_state[0]
        batched = model(tokens, lengths=lengths).last_hidden_state[0, :9]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=0)
    packed_alone = model.encode(tokens[:1, :9], lengths=lengths[:1]).hidden
    packed_batched = model.encode(tokens, lengths=lengths).hidden[:9]
    torch.testing.assert_close(packed_alone, packed_batched, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed_alone, alone, atol=1e-5, rtol=0)


def test_pool_mean_respects_mask_and_cls_takes_first():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[False, True, True], [True, False, False]])
    torch.testing.assert_close(pool(hidden, mask, "mean"), torch.tensor([[3.0, 4.0], [6.0, 7.0]]))
    torch.testing.assert_close(pool(hidden, mask, "cls"), torch.tensor([[2.0, 3.0], [6.0, 7.0]]))
    with pytest.raises(ValueError, match="pooling"):
        pool(hidden, mask, "max")


def test_outputs_and_heads_shapes():
    model = _model(heads=["mlm", "bins", "value", "ntp"], num_classes=5, n_value_bins=7)
    tokens, lengths = padded_batch([8, 5])
    with torch.no_grad():
        out = model(tokens, lengths=lengths, output_hidden_states=True, output_attentions=True)
        h = out.last_hidden_state
        assert len(out.hidden_states) == 3 and len(out.attentions) == 2
        assert out.attentions[0].shape == (2, 4, 8, 8)
        assert model.heads["mlm"](h).shape == (2, 8, 97)
        assert model.heads["bins"](h).shape == (2, 8, 7)
        assert model.heads["value"](h).shape == (2, 8)
        assert model.heads["ntp"](h).shape == (2, 8, 97)
        assert model.heads["classifier"](pool(h, out.padding_mask)).shape == (2, 5)
    # the masked-token decoder is the token embedding itself
    assert "heads.mlm.decoder.weight" not in model.state_dict()


def test_bf16_close_to_fp32():
    model = _model(num_layers=3)
    tokens, lengths = padded_batch([40, 33, 12, 25], seed=4)
    with torch.no_grad():
        ref = model(tokens, lengths=lengths)
        with autocast_context("bf16", "cpu"):
            auto = model(tokens, lengths=lengths)
    fast = model.encode(tokens, lengths=lengths, precision="bf16")
    pad = ref.padding_mask
    ref_cells = pool(ref.last_hidden_state, pad, "mean")
    for cells in (pool(auto.last_hidden_state.float(), pad, "mean"), fast.pool("mean")):
        cos = torch.nn.functional.cosine_similarity(cells, ref_cells, dim=-1)
        assert cos.min() >= 0.999, cos


def test_precision_resolution():
    assert resolve_precision("fp32", "cpu") == torch.float32
    assert resolve_precision("bf16", "cpu") == torch.bfloat16
    assert resolve_precision("auto", "cpu") in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")


def test_input_validation():
    model = _model()
    tokens, lengths = padded_batch([8, 5])
    with pytest.raises(ValueError, match="objective"):
        model(tokens, lengths=lengths, objective="clm")
    with pytest.raises(ValueError, match="gen_mask"):
        model(tokens, lengths=lengths, objective="generative")
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.ones(1, 70, dtype=torch.long))
    with pytest.raises(ValueError, match="values"):
        _model(value_input="continuous")(tokens, lengths=lengths)
    with pytest.raises(ValueError, match="no tokens"):
        model.encode(tokens, lengths=torch.tensor([8, 0]))


def test_config_json_round_trip(tmp_path):
    cfg = small_config(heads=["mlm", "value"], num_classes=3, extra={"source": "test"})
    assert TransformerConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "config.json"
    cfg.to_json(path)
    assert TransformerConfig.from_json(path) == cfg
    assert json.loads(path.read_text())["heads"] == ["mlm", "value"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("activation", "tanh"),
        ("norm", "sandwich"),
        ("num_heads", 5),
        ("dropout", 1.5),
        ("max_positions", -1),
        ("heads", ["mlm", "contrastive"]),
        ("vocab_size", 0),
        ("pad_token_id", 1000),
        ("attention_backend", "flash"),
    ],
)
def test_invalid_config_names_the_field(field, value):
    kw = small_config().to_dict() | {field: value}
    with pytest.raises(ValueError, match=field.split("_")[0]):
        TransformerConfig(**kw)
