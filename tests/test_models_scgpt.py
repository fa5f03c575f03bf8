"""scGPT checkpoints in the published layout load and match scGPT's forward, written plainly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData
from torch import nn

import sctransformer as sct

D, HEADS, FFN, LAYERS = 32, 4, 48, 3
GENES = [f"G{j}" for j in range(60)]


def scgpt_vocab() -> dict[str, int]:
    # genes first, specials at the end, as in the whole-human vocab.json
    tokens = [*GENES, "<pad>", "<cls>", "<eoc>"]
    return {t: i for i, t in enumerate(tokens)}


def scgpt_args() -> dict:
    return {
        "embsize": D,
        "nlayers": LAYERS,
        "nheads": HEADS,
        "d_hid": FFN,
        "dropout": 0.2,
        "n_bins": 51,
        "input_emb_style": "continuous",
        "max_seq_len": 1200,
        "pad_token": "<pad>",
        "pad_value": -2,
        "fast_transformer": True,
    }


def scgpt_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the key names of scGPT's best_model.pt (flash-attn ``Wqkv``)."""
    g = torch.Generator().manual_seed(seed)
    n = len(scgpt_vocab())

    def r(*shape, scale=0.3):
        return scale * torch.randn(*shape, generator=g)

    def norm(prefix):
        return {f"{prefix}.weight": 1 + r(D, scale=0.2), f"{prefix}.bias": r(D, scale=0.2)}

    sd = {"encoder.embedding.weight": r(n, D), **norm("encoder.enc_norm")}
    sd |= {
        "value_encoder.linear1.weight": r(D, 1),
        "value_encoder.linear1.bias": r(D),
        "value_encoder.linear2.weight": r(D, D),
        "value_encoder.linear2.bias": r(D),
        **norm("value_encoder.norm"),
    }
    for i in range(LAYERS):
        p = f"transformer_encoder.layers.{i}."
        sd |= {
            p + "self_attn.Wqkv.weight": r(3 * D, D),
            p + "self_attn.Wqkv.bias": r(3 * D),
            p + "self_attn.out_proj.weight": r(D, D),
            p + "self_attn.out_proj.bias": r(D),
            p + "linear1.weight": r(FFN, D),
            p + "linear1.bias": r(FFN),
            p + "linear2.weight": r(D, FFN),
            p + "linear2.bias": r(D),
            **norm(p + "norm1"),
            **norm(p + "norm2"),
        }
    for j in (0, 2, 4):
        sd[f"decoder.fc.{j}.weight"] = r(1 if j == 4 else D, D)
        sd[f"decoder.fc.{j}.bias"] = r(1 if j == 4 else D)
    # training-only heads: no home here, dropped and reported
    sd["mvc_decoder.gene2query.weight"] = r(D, D)
    sd["mvc_decoder.W.weight"] = r(D, D)
    sd["flag_encoder.weight"] = r(2, D)
    return sd


def write_scgpt_folder(path, seed: int = 0):
    path.mkdir(parents=True, exist_ok=True)
    sd = scgpt_state_dict(seed)
    torch.save(sd, path / "best_model.pt")
    (path / "args.json").write_text(json.dumps(scgpt_args()))
    (path / "vocab.json").write_text(json.dumps(scgpt_vocab()))
    return sd


class ReferenceScGPT(nn.Module):
    """scGPT's ``_encode`` as published, on torch's own encoder (what runs without flash-attn).

    gene encoder: Embedding -> LayerNorm; value encoder: clamp(max=512) -> Linear(1, d) -> ReLU
    -> Linear(d, d) -> LayerNorm; their sum -> post-LN ``nn.TransformerEncoder`` (ReLU FFN,
    batch_first) with a key padding mask; no positional encoding.
    """

    def __init__(self, sd, n_tokens, pad_id):
        super().__init__()
        self.embedding = nn.Embedding(n_tokens, D, padding_idx=pad_id)
        self.enc_norm = nn.LayerNorm(D)
        self.linear1, self.linear2, self.norm = nn.Linear(1, D), nn.Linear(D, D), nn.LayerNorm(D)
        layer = nn.TransformerEncoderLayer(D, HEADS, FFN, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        with torch.no_grad():
            self.embedding.weight.copy_(sd["encoder.embedding.weight"])
            for mine, key in (
                (self.enc_norm, "encoder.enc_norm"),
                (self.linear1, "value_encoder.linear1"),
                (self.linear2, "value_encoder.linear2"),
                (self.norm, "value_encoder.norm"),
            ):
                mine.weight.copy_(sd[f"{key}.weight"])
                mine.bias.copy_(sd[f"{key}.bias"])
            for i, lyr in enumerate(self.encoder.layers):
                p = f"transformer_encoder.layers.{i}."
                lyr.self_attn.in_proj_weight.copy_(sd[p + "self_attn.Wqkv.weight"])
                lyr.self_attn.in_proj_bias.copy_(sd[p + "self_attn.Wqkv.bias"])
                for mod, key in (
                    (lyr.self_attn.out_proj, "self_attn.out_proj"),
                    (lyr.linear1, "linear1"),
                    (lyr.linear2, "linear2"),
                    (lyr.norm1, "norm1"),
                    (lyr.norm2, "norm2"),
                ):
                    mod.weight.copy_(sd[p + key + ".weight"])
                    mod.bias.copy_(sd[p + key + ".bias"])

    def gene_encoder(self, tokens):
        return self.enc_norm(self.embedding(tokens))

    def value_encoder(self, values):
        x = values.float().unsqueeze(-1).clamp(max=512)
        return self.norm(self.linear2(torch.relu(self.linear1(x))))

    def forward(self, tokens, values, pad_mask):
        x = self.gene_encoder(tokens) + self.value_encoder(values)
        return self.encoder(x, src_key_padding_mask=pad_mask)


def _inputs(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [25, 14, 3]
    pad_id, cls_id = vocab["<pad>"], vocab["<cls>"]
    tokens = torch.full((3, 25), pad_id)
    values = torch.full((3, 25), -2.0)
    for i, n in enumerate(lengths):
        tokens[i, 0] = cls_id
        tokens[i, 1:n] = torch.randperm(len(GENES), generator=g)[: n - 1]
        values[i, 1:n] = torch.randint(1, 51, (n - 1,), generator=g).float()
    values[0, 1] = 900.0  # above the clamp
    return tokens, values, tokens == pad_id


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("scgpt") / "scGPT_human"
    sd = write_scgpt_folder(path)
    return path, sd


def test_encoder_matches_torch_transformer_encoder(folder):
    path, sd = folder
    model = sct.models.load(path)
    vocab = scgpt_vocab()
    ref = ReferenceScGPT(sd, len(vocab), vocab["<pad>"]).eval()
    tokens, values, pad = _inputs(vocab)
    real = ~pad
    with torch.no_grad():
        theirs = ref(tokens, values, pad)
        out = model(tokens, values, padding_mask=real, output_hidden_states=True)
        packed = model.encode(tokens, values, padding_mask=real)
        # the two encoders on their own
        emb = model.embeddings
        gene = emb.token_norm(emb.token(tokens))
        value = emb.value(values)
        assert (gene - ref.gene_encoder(tokens)).abs().max() < 1e-5
        assert (value - ref.value_encoder(values)).abs().max() < 1e-5
        assert (out.hidden_states[0] - (gene + value)).abs().max() < 1e-5
    assert (out.last_hidden_state[real] - theirs[real]).abs().max() < 1e-4
    assert (packed.hidden - theirs[real]).abs().max() < 1e-4
    # scGPT's cell embedding: last layer at <cls>, L2-normalised
    cls_ref = torch.nn.functional.normalize(theirs[:, 0], dim=1)
    cls_ours = torch.nn.functional.normalize(packed.pool("cls"), dim=1)
    assert (cls_ours - cls_ref).abs().max() < 1e-4


def test_metadata_vocab_and_dropped_keys(folder):
    model = sct.models.load(folder[0])
    assert model.metadata["dropped_keys"] == [
        "flag_encoder.weight",
        "mvc_decoder.W.weight",
        "mvc_decoder.gene2query.weight",
    ]
    assert model.metadata["embedding"] == {
        "pooling": "cls",
        "layer": -1,
        "exclude_special_tokens": False,
        "normalize": True,
    }
    assert model.tokenize_params["method"] == "adaptive_bin"
    assert model.tokenize_params["n_bins"] == 51
    assert model.tokenize_params["max_length"] == 1200
    assert model.tokenize_params["add_cls"] and model.tokenize_params["pad_value"] == -2
    assert model.vocab.pad_id == 60 and model.vocab.cls_id == 61
    assert set(model.vocab.specials) == {"<pad>", "<cls>", "<eoc>"}
    assert model.vocab.n_genes == len(GENES)
    assert model.config.max_positions == 0 and model.config.layer_norm_eps == 1e-5
    # the expression decoder (decoder.fc) has a home: the value head
    assert "value" in model.heads


def test_tokenized_cells_embed_like_scgpt(folder):
    """sct.pp.tokenize(vocab=model) gives scGPT's input: <cls> first with value -2, then bins."""
    path, sd = folder
    model = sct.models.load(path)
    vocab = scgpt_vocab()
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(20, len(GENES) + 5)).astype(np.float32)
    adata = AnnData(
        sp.csr_matrix(counts),
        var=pd.DataFrame(index=[*GENES, "U1", "U2", "U3", "U4", "U5"]),
    )
    sct.pp.tokenize(adata, vocab=model)
    tokens = torch.from_numpy(adata.obsm["sct_tokens"].astype(np.int64))
    values = torch.from_numpy(adata.obsm["sct_values"])
    assert (tokens[:, 0] == vocab["<cls>"]).all() and (values[:, 0] == -2).all()
    genes = tokens[:, 1:][tokens[:, 1:] != vocab["<pad>"]]
    assert (values[:, 1:][tokens[:, 1:] != vocab["<pad>"]] >= 1).all() and len(genes)
    pad = tokens == vocab["<pad>"]
    ref = ReferenceScGPT(sd, len(vocab), vocab["<pad>"]).eval()
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(ref(tokens, values, pad)[:, 0], dim=1)
        ours = torch.nn.functional.normalize(
            model.encode(tokens, values, padding_mask=~pad).pool("cls"), dim=1
        )
    assert (ours - theirs).abs().max() < 1e-4


def test_keys_that_change_the_encoder_are_refused(tmp_path):
    from sctransformer.models.converters.scgpt import convert_scgpt

    sd = scgpt_state_dict()
    sd["dsbn.bns.0.weight"] = torch.ones(D)
    with pytest.raises(ValueError, match="batch norm"):
        convert_scgpt(sd, scgpt_args(), scgpt_vocab())
    sd = scgpt_state_dict()
    sd["something.else"] = torch.ones(1)
    with pytest.raises(ValueError, match="cannot hold"):
        convert_scgpt(sd, scgpt_args(), scgpt_vocab())
    sd = scgpt_state_dict()
    del sd["transformer_encoder.layers.1.self_attn.Wqkv.weight"]
    with pytest.raises(ValueError, match="lacks"):
        convert_scgpt(sd, scgpt_args(), scgpt_vocab())
    with pytest.raises(ValueError, match="pre_norm"):
        convert_scgpt(scgpt_state_dict(), {**scgpt_args(), "pre_norm": True}, scgpt_vocab())


def test_torch_layout_in_proj_names_load_too():
    from sctransformer.models.converters.scgpt import convert_scgpt

    sd = scgpt_state_dict()
    renamed = {
        k.replace("self_attn.Wqkv.weight", "self_attn.in_proj_weight").replace(
            "self_attn.Wqkv.bias", "self_attn.in_proj_bias"
        ): v
        for k, v in sd.items()
    }
    a = convert_scgpt(sd, scgpt_args(), scgpt_vocab())
    b = convert_scgpt(renamed, scgpt_args(), scgpt_vocab())
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), k
