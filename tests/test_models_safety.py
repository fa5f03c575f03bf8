"""No code runs while loading: malicious pickles and checkpoints are refused, nothing executes."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

import sctransformer as sct
from sctransformer.models import UnsafePickleError, load_pickle
from sctransformer.models._safe_pickle import loads_pickle


class _Evil:
    """Unpickling this with plain ``pickle`` would run ``os.system`` and create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("evil", [_Evil, _EvalEvil])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, evil):
    marker = tmp_path / "pwned"
    path = tmp_path / "token_dictionary_gc104M.pkl"
    with open(path, "wb") as f:
        pickle.dump({"<pad>": 0, "<mask>": 1, "ENSG1": evil(marker)}, f)
    with pytest.raises(UnsafePickleError, match="not plain data") as e:
        load_pickle(path)
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_plain_data_of_every_protocol_loads():
    data = {
        "ENSG00000000003": np.float64(1.25),
        "n": np.int64(7),
        "f": np.float32(0.5),
        "s": np.str_("TSPAN6"),
        "plain": [1, 2.5, None, True, "x", b"y", (1, 2), {3}, frozenset({4})],
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert loads_pickle(pickle.dumps(data, protocol=protocol)) == data


def test_numpy_arrays_and_object_scalars_are_refused():
    with pytest.raises(UnsafePickleError):
        loads_pickle(pickle.dumps({"a": np.arange(3)}))
    with pytest.raises(UnsafePickleError):
        loads_pickle(pickle.dumps({"a": np.dtype("O")}))


def test_geneformer_folder_with_malicious_dictionary(tmp_path):
    transformers = pytest.importorskip("transformers")
    marker = tmp_path / "pwned"
    config = transformers.BertConfig(
        vocab_size=6,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        hidden_act="relu",
    )
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path)
    with open(tmp_path / "token_dictionary_gc30M.pkl", "wb") as f:
        pickle.dump({"<pad>": 0, "<mask>": 1, "ENSG1": _Evil(marker)}, f)
    with pytest.raises(UnsafePickleError):
        sct.models.load(tmp_path, token_dictionary=tmp_path / "token_dictionary_gc30M.pkl")
    assert not marker.exists()


def test_scgpt_checkpoint_with_code_is_refused(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    folder = tmp_path / "scgpt"
    folder.mkdir()
    torch.save({"encoder.embedding.weight": _Evil(marker)}, folder / "best_model.pt")
    (folder / "args.json").write_text(json.dumps({"embsize": 8}))
    (folder / "vocab.json").write_text(json.dumps({"<pad>": 0, "<cls>": 1, "G": 2}))
    with pytest.raises(pickle.UnpicklingError, match=r"[Ww]eights only"):
        sct.models.load(folder)
    assert not marker.exists()
