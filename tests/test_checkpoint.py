"""The checkpoint folder: exact round trip, integrity check, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sctransformer as sct
from _nn_utils import randomize_
from _train_utils import tokenized_pbmc, untrained_model
from sctransformer.models._io import FILES


@pytest.fixture(scope="module")
def model():
    adata = tokenized_pbmc(max_length=32)[:20].copy()
    m = untrained_model(adata, heads=["mlm", "ntp"], num_classes=3)
    m.metadata = {"name": "roundtrip", "objective": "mlm", "note": [1, 2]}
    return m


def test_round_trip_is_exact(model, tmp_path):
    path = sct.models.save(model, tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES)
    loaded = sct.models.load(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert loaded.config == model.config
    assert loaded.vocab == model.vocab
    assert loaded.vocab.to_json() == model.vocab.to_json()
    assert loaded.tokenize_params == model.tokenize_params
    assert loaded.metadata["name"] == "roundtrip" and loaded.metadata["note"] == [1, 2]
    assert loaded.metadata["package_version"] == sct.__version__
    assert not loaded.training
    # the masked-token decoder is still the token embedding, not a copy
    head = loaded.heads["mlm"]
    assert head._tied[0].weight is loaded.embeddings.token.weight
    with torch.no_grad():
        loaded.embeddings.token.weight[5, 0] += 1.0
    x = torch.randn(2, loaded.config.hidden_size)
    ref = torch.nn.functional.linear(
        head.norm(head.activation(head.dense(x))), loaded.embeddings.token.weight, head.bias
    )
    torch.testing.assert_close(head(x), ref)
    # and the outputs agree
    tokens = torch.as_tensor(np.arange(3, 19))[None]
    model.eval()
    torch.testing.assert_close(
        sct.models.load(path)(tokens).last_hidden_state, model(tokens).last_hidden_state
    )


def test_weights_hash_recorded(model, tmp_path):
    from sctransformer.models._io import sha256_file

    path = sct.models.save(model, tmp_path / "ckpt")
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["weights_sha256"] == sha256_file(path / "model.safetensors")
    assert meta["tokenize_params"]["method"] == "rank"


def test_tampered_weights_are_refused(model, tmp_path):
    from safetensors.torch import load_file, save_file

    path = sct.models.save(model, tmp_path / "ckpt")
    recorded = json.loads((path / "metadata.json").read_text())["weights_sha256"]
    state = load_file(str(path / "model.safetensors"))
    key = next(iter(state))
    state[key] = state[key] + 1e-3
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValueError, match=recorded) as err:
        sct.models.load(path)
    assert "sha256" in str(err.value) and "model.safetensors" in str(err.value)


def test_missing_files_are_named(model, tmp_path):
    from sctransformer.models._model import load_checkpoint

    path = sct.models.save(model, tmp_path / "ckpt")
    (path / "vocab.json").unlink()
    (path / "metadata.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"vocab\.json") as err:
        load_checkpoint(path)
    assert (
        "metadata.json" in str(err.value)
        and "config.json" not in str(err.value).split("missing")[1].split("]")[0]
    )


def test_save_replaces_atomically_and_needs_vocab(model, tmp_path):
    path = tmp_path / "ckpt"
    sct.models.save(model, path)
    other = untrained_model(tokenized_pbmc(max_length=32)[:5].copy(), seed=9)
    other.metadata = {"name": "other"}
    randomize_(other, 9, scale=0.3)
    sct.models.save(other, path)
    assert sct.models.load(path).metadata["name"] == "other"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left
    bare = sct.nn.CellTransformer(model.config)
    with pytest.raises(ValueError, match="vocab"):
        sct.models.save(bare, tmp_path / "bare")
    assert not (tmp_path / "bare").exists()
