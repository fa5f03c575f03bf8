"""``GeneVocab``: ids, specials, conditions, aliases, medians and JSON persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sctransformer.tokenizers import DEFAULT_SPECIALS, GeneVocab, condition_token


@pytest.fixture
def vocab() -> GeneVocab:
    return GeneVocab.from_genes(
        ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"],
        conditions={"batch": ["b1", "b2"]},
        gene_medians={"ENSG00000000001": 1.5, "ENSG00000000003": 0.25},
        aliases={"CD3E": "ENSG00000000001", "CD19": "ENSG00000000002", "X": "NOT_A_TOKEN"},
    )


def test_layout_specials_first(vocab):
    assert vocab.tokens[:4] == list(DEFAULT_SPECIALS)
    assert vocab.pad_id == 0 and vocab.mask_id == 1 and vocab.cls_id == 2 and vocab.eos_id == 3
    assert vocab.tokens[4:6] == ["<batch=b1>", "<batch=b2>"]
    assert vocab.genes == ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003"]
    assert vocab.n_genes == 3 and len(vocab) == 9
    assert vocab.is_gene.tolist() == [False] * 6 + [True] * 3
    assert vocab.condition_id("batch", "b2") == 5
    assert condition_token("batch", "b2") == "<batch=b2>"
    assert "ENSG00000000002" in vocab and vocab["ENSG00000000002"] == 7
    assert vocab.id_to_token([2, 8]) == ["<cls>", "ENSG00000000003"]


def test_encode_genes_direct_alias_version(vocab):
    names = [
        "ENSG00000000003",
        "CD3E",
        "ENSG00000000002.14",
        "CD4",
        "<pad>",  # a special token is never a gene
        "<batch=b1>",
        "X",  # alias to an unknown token was dropped
        "ENSG00000000009.1",
    ]
    np.testing.assert_array_equal(vocab.encode_genes(names), [8, 6, 7, -1, -1, -1, -1, -1])
    assert vocab.encode_genes([]).dtype == np.int64
    assert "X" not in vocab.aliases


def test_medians_for(vocab):
    out = vocab.medians_for(np.array([6, 7, 8, -1]))
    np.testing.assert_array_equal(out[[0, 2]], [1.5, 0.25])
    assert np.isnan(out[1]) and np.isnan(out[3])


def test_json_round_trip(vocab, tmp_path):
    again = GeneVocab.from_json(vocab.to_json())
    assert again == vocab
    assert again.tokens == vocab.tokens
    assert again.conditions == vocab.conditions
    assert again.gene_medians == vocab.gene_medians
    assert again.aliases == vocab.aliases
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert GeneVocab.load(path) == vocab
    assert json.loads(path.read_text())["tokens"] == vocab.tokens
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temporary left behind


def test_custom_specials_round_trip(tmp_path):
    v1 = GeneVocab.from_genes(["A", "B"], specials=["<pad>", "<mask>"])
    assert v1.pad_id == 0 and v1.mask_id == 1 and v1["A"] == 2
    with pytest.raises(ValueError, match=r"no <cls> token.*specials"):
        _ = v1.cls_id
    again = GeneVocab.from_json(v1.to_json())
    assert again == v1 and again.specials == ("<pad>", "<mask>")


def test_with_conditions_keeps_ids(vocab):
    more = vocab.with_conditions("batch", ["b2", "b3"])
    assert more.tokens[: len(vocab)] == vocab.tokens
    assert more.tokens[len(vocab) :] == ["<batch=b3>"]
    assert more.conditions["batch"] == ["b1", "b2", "b3"]
    assert more.n_genes == vocab.n_genes
    assert more.encode_genes(["CD19"]).tolist() == [7]
    species = more.with_conditions("species", ["human"])
    assert species.condition_id("species", "human") == len(more)


def test_unknown_condition_message(vocab):
    with pytest.raises(ValueError, match=r"batch 'b9' has no token.*known batch values"):
        vocab.condition_id("batch", "b9")


def test_duplicates_rejected():
    with pytest.raises(ValueError, match="duplicate gene names"):
        GeneVocab.from_genes(["A", "B", "A"])
    with pytest.raises(ValueError, match="appears twice"):
        GeneVocab(["<pad>", "A", "A"])
    with pytest.raises(ValueError, match="condition tokens of 'batch' missing"):
        GeneVocab(["<pad>", "A"], conditions={"batch": ["x"]})
    with pytest.raises(ValueError, match="no 'tokens'"):
        GeneVocab.from_dict({"genes": ["A"]})


def test_unknown_token_lookup(vocab):
    with pytest.raises(KeyError, match="not in the vocabulary"):
        vocab["CD4"]


def test_merge_plan_of_vocabulary_ids():
    """Ids merge by first appearance; -1 (not in the vocabulary) and None stay alone."""
    from sctransformer.tokenizers import _merge

    ids = np.array([5, -1, 7, 5, -1, 7, 9])
    merge = _merge.plan(ids)
    assert merge.column.tolist() == [0, 1, 2, 0, 3, 2, 4]
    assert merge.first.tolist() == [0, 1, 2, 4, 6]
    keyed = _merge.plan([5, None, 7, 5, None, 7, 9])
    assert keyed.column.tolist() == merge.column.tolist()
    assert _merge.plan(np.array([3, -1, -1, 4])) is None
    assert _merge.plan(["A", "B", None, None]) is None
