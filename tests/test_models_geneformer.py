"""Geneformer folders load through sct.models.load and match transformers and Geneformer's tokenizer."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from anndata import AnnData

import sctransformer as sct
from _nn_utils import randomize_

transformers = pytest.importorskip("transformers")

from sctransformer.nn.model import pool  # noqa: E402

# Geneformer V1's shape (hidden 256, 6 layers, 4 heads, FFN 512, relu, 2,048 positions,
# eps 1e-12) with a small vocabulary; a small V2-shaped model with <cls>/<eos>.
V1 = dict(
    hidden_size=256,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=512,
    hidden_act="relu",
    max_position_embeddings=2048,
    layer_norm_eps=1e-12,
    type_vocab_size=2,
    pad_token_id=0,
)
V2_SMALL = dict(
    V1, hidden_size=96, num_hidden_layers=3, num_attention_heads=6, intermediate_size=192
)
V2_SMALL["max_position_embeddings"] = 4096


def geneformer_dicts(n_genes: int, *, v2: bool, seed: int = 0):
    """Token, median and name→id dictionaries shaped like Geneformer's."""
    rng = np.random.default_rng(seed)
    specials = ["<pad>", "<mask>"] + (["<cls>", "<eos>"] if v2 else [])
    ids = [f"ENSG{j:011d}" for j in range(n_genes)]
    tokens = {t: i for i, t in enumerate(specials + ids)}
    # the last vocabulary gene has no median: Geneformer's tokenizer never uses it
    medians = {
        g: float(m) for g, m in zip(ids[:-1], rng.uniform(0.2, 5.0, n_genes - 1), strict=True)
    }
    names = {f"SYM{j}": g for j, g in enumerate(ids)}
    return tokens, medians, names


def write_geneformer_folder(path, cfg: dict, *, n_genes: int, v2: bool, seed: int = 3):
    """A BertForMaskedLM folder (safetensors) with pickled dictionaries beside it."""
    tokens, medians, names = geneformer_dicts(n_genes, v2=v2)
    config = transformers.BertConfig(
        vocab_size=len(tokens), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **cfg
    )
    bert = randomize_(transformers.BertForMaskedLM(config), seed=seed).eval()
    bert.save_pretrained(path)
    suffix = "gc104M" if v2 else "gc30M"
    for stem, d in (
        ("token_dictionary", tokens),
        ("gene_median_dictionary", medians),
        ("gene_name_id_dict", names),
    ):
        with open(path / f"{stem}_{suffix}.pkl", "wb") as f:
            pickle.dump(d, f)
    return bert, tokens, medians, names


@pytest.fixture(scope="module")
def v1_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("Geneformer-V1")
    bert, *_ = write_geneformer_folder(path, V1, n_genes=300, v2=False)
    return path, bert


@pytest.fixture(scope="module")
def v2_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("Geneformer-V2")
    bert, *_ = write_geneformer_folder(path, V2_SMALL, n_genes=300, v2=True)
    return path, bert


def _batch(lengths, vocab_size, *, v2: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    first = 4 if v2 else 2
    tokens = torch.randint(first, vocab_size, (len(lengths), max(lengths)), generator=gen)
    for i, n in enumerate(lengths):
        if v2:
            tokens[i, 0], tokens[i, n - 1] = 2, 3
        tokens[i, n:] = 0
    return tokens


def _reference_embedding(hidden_states, pad, *, mode, v2):
    """Geneformer's extractor: second-to-last layer; mean over genes or the <cls> state."""
    h = hidden_states[-2]
    if mode == "cls":
        return h[:, 0]
    genes = pad.clone()
    if v2:  # <cls> and <eos> are not genes
        genes[:, 0] = False
        genes[torch.arange(len(pad)), pad.sum(1) - 1] = False
    w = genes[..., None].float()
    return (h * w).sum(1) / w.sum(1)


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_parity_with_transformers(which, v1_folder, v2_folder):
    folder, bert = v1_folder if which == "v1" else v2_folder
    v2 = which == "v2"
    model = sct.models.load(folder)
    assert model.metadata["embedding"]["pooling"] == ("cls" if v2 else "mean")
    assert model.metadata["embedding"]["layer"] == -2
    tokens = _batch([37, 20, 6], bert.config.vocab_size, v2=v2)
    pad = tokens != 0
    with torch.no_grad():
        ref = bert(input_ids=tokens, attention_mask=pad.long(), output_hidden_states=True)
        out = model(tokens, padding_mask=pad, output_hidden_states=True)
        logits = model.heads["mlm"](out.last_hidden_state)
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        assert (mine[pad] - theirs[pad]).abs().max() < 1e-4
    assert (logits[pad] - ref.logits[pad]).abs().max() < 1e-4
    genes = pad & torch.from_numpy(model.vocab.is_gene)[tokens]
    layer = model.metadata["embedding"]["layer"]
    for mode in ("mean", "cls"):
        if mode == "cls" and not v2:
            continue
        mine = pool(out.hidden_states[layer], genes if mode == "mean" else pad, mode)
        theirs = _reference_embedding(ref.hidden_states, pad, mode=mode, v2=v2)
        assert (mine - theirs).abs().max() < 1e-4
    packed = model.encode(tokens, padding_mask=pad)
    assert (packed.hidden - ref.hidden_states[-1][pad]).abs().max() < 1e-4


def test_vocab_and_tokenize_params(v1_folder, v2_folder):
    m1 = sct.models.load(v1_folder[0])
    assert m1.vocab.pad_id == 0 and m1.vocab.mask_id == 1
    assert "<cls>" not in m1.vocab.specials
    assert m1.tokenize_params == {
        "method": "rank",
        "target_sum": 10_000.0,
        "normalize": True,
        "max_length": 2048,
        "add_cls": False,
        "add_eos": False,
        "total_key": "n_counts",  # Geneformer's tokenizer divides by obs["n_counts"]
    }
    m2 = sct.models.load(v2_folder[0])
    assert (m2.vocab.cls_id, m2.vocab.eos_id) == (2, 3)
    assert m2.tokenize_params["max_length"] == 4096
    assert m2.tokenize_params["add_cls"] and m2.tokenize_params["add_eos"]
    # symbols map to Ensembl IDs through the name -> id dictionary
    assert m2.vocab.encode_genes(["SYM5", "ENSG00000000005", "nope"]).tolist() == [9, 9, -1]
    assert m2.vocab.gene_medians["ENSG00000000005"] > 0
    assert m1.config.extra["variant"] == "V1" and m2.config.extra["variant"] == "V2"


def test_pytorch_model_bin_and_explicit_dictionaries(tmp_path, v1_folder):
    folder, bert = v1_folder
    other = tmp_path / "bin"
    other.mkdir()
    (other / "config.json").write_text((folder / "config.json").read_text())
    torch.save(bert.state_dict(), other / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="token_dictionary="):
        sct.models.load(other)
    model = sct.models.load(
        other,
        token_dictionary=folder / "token_dictionary_gc30M.pkl",
        gene_median_dictionary=folder / "gene_median_dictionary_gc30M.pkl",
    )
    ref = sct.models.load(folder)
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_wrong_dictionary_version_is_refused(tmp_path, v1_folder):
    folder, _ = v1_folder
    tokens, *_ = geneformer_dicts(50, v2=True)
    with pytest.raises(ValueError, match="another Geneformer version"):
        sct.models.load(folder, token_dictionary=tokens)


# --- tokenization parity -----------------------------------------------------------------


def geneformer_reference(counts, var_names, tokens, medians, names, *, v2, max_len):
    """Geneformer's tokenizer written out plainly, one cell at a time.

    counts / total counts of the cell (all genes) x 10,000 / gene median; nonzero genes of the
    dictionaries ranked descending (ties: first in var order); V1 keeps ``max_len`` genes, V2
    ``max_len - 2`` between <cls> and <eos>.
    """
    ens = [names.get(g, g) for g in var_names]
    usable = np.array([e in tokens and e in medians for e in ens])
    out = []
    for row in counts.astype(np.float64):
        total = row.sum()
        norm = row / total * 10_000
        genes = np.flatnonzero(usable & (row > 0))
        score = np.array([norm[j] / medians[ens[j]] for j in genes])
        ranked = genes[np.argsort(-score, kind="stable")]
        ids = [tokens[ens[j]] for j in ranked]
        if v2:
            ids = [tokens["<cls>"], *ids[: max_len - 2], tokens["<eos>"]]
        else:
            ids = ids[:max_len]
        out.append(ids)
    return out


def _tokenize_case(tmp_path, *, v2, n_genes, n_cells, density):
    cfg = dict(
        V1,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=4096 if v2 else 2048,
    )
    _, tokens, medians, names = write_geneformer_folder(tmp_path, cfg, n_genes=n_genes, v2=v2)
    model = sct.models.load(tmp_path)
    rng = np.random.default_rng(1)
    n_var = n_genes + 40  # 40 genes Geneformer does not know still count towards the total
    counts = rng.integers(1, 30, size=(n_cells, n_var)).astype(np.float32)
    counts *= rng.random((n_cells, n_var)) < density
    counts[0, :] = 0
    counts[0, [3, 9]] = [5, 7]  # a nearly empty cell
    var_names = [f"SYM{j}" for j in range(n_genes)] + [f"OTHER{j}" for j in range(40)]
    # half the genes by symbol, half by Ensembl ID, shuffled
    var_names = [names[v] if (j % 2 and v in names) else v for j, v in enumerate(var_names)]
    order = rng.permutation(n_var)
    counts, var_names = counts[:, order], [var_names[j] for j in order]
    adata = AnnData(sp.csr_matrix(counts), var=pd.DataFrame(index=var_names))
    sct.pp.tokenize(adata, vocab=model)
    ref = geneformer_reference(
        counts, var_names, tokens, medians, names, v2=v2, max_len=4096 if v2 else 2048
    )
    got = adata.obsm["sct_tokens"]
    n_tok = adata.obs["sct_n_tokens"].to_numpy()
    for i, ids in enumerate(ref):
        assert n_tok[i] == len(ids)
        assert got[i, : n_tok[i]].tolist() == ids, f"cell {i}"
        assert (got[i, n_tok[i] :] == 0).all()
    return ref


def test_rank_tokenization_matches_geneformer_v1(tmp_path):
    ref = _tokenize_case(tmp_path, v2=False, n_genes=2300, n_cells=12, density=0.97)
    assert max(len(r) for r in ref) == 2048  # cropping happened


def test_rank_tokenization_matches_geneformer_v2(tmp_path):
    ref = _tokenize_case(tmp_path, v2=True, n_genes=4300, n_cells=6, density=0.98)
    assert max(len(r) for r in ref) == 4096  # <cls> + 4,094 genes + <eos>
    assert min(len(r) for r in ref) == 4  # the nearly empty cell: <cls> g g <eos>
