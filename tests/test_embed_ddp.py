"""embed_cells, embed_genes and attention_grn under torchrun: two CPU ranks (gloo) give the
one-process result.

Each rank reads a contiguous slice; rank 0 gathers the slices in order (or adds the ranks'
sums). The cells' count is odd and the chunks small, so slices, chunks and batches all end
unevenly.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

SCRIPT = Path(__file__).with_name("_ddp_embed.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", PYTHONWARNINGS="ignore")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run_both(tmp_path, args):
    ddp_cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(SCRIPT), str(tmp_path / "ddp"), *args,
    ]  # fmt: skip
    single_cmd = [sys.executable, str(SCRIPT), str(tmp_path / "single"), *args]
    procs = {
        name: subprocess.Popen(
            cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, cmd in (("ddp", ddp_cmd), ("single", single_cmd))
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name} run failed:\n{out[-4000:]}"


@pytest.mark.slow
@pytest.mark.parametrize(("pooling", "stored"), [("cls", False), ("mean", True)])
def test_two_ranks_equal_one_process(tmp_path, pooling, stored):
    args = ["--cells", "37", "--pooling", pooling] + (["--stored"] if stored else [])
    _run_both(tmp_path, args)
    single = np.load(tmp_path / "single" / "emb.npy")
    ddp = np.load(tmp_path / "ddp" / "emb.npy")
    assert single.shape == ddp.shape == (37, 32)
    assert np.abs(single).max() > 0.1  # a real embedding, not zeros
    np.testing.assert_allclose(ddp, single, atol=1e-5, rtol=1e-5)
    rank0 = json.loads((tmp_path / "ddp" / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "ddp" / "rank1.json").read_text())
    assert rank0 == {"X_sct": True, "uns": ["sct_embed"], "world_size": 2}
    assert rank1 == {"X_sct": False, "uns": [], "world_size": 1}  # rank 1 writes nothing


@pytest.mark.slow
def test_soma_query_sharded_over_two_ranks_equals_one_process(tmp_path):
    soma_io = pytest.importorskip("tiledbsoma.io")
    from _ddp_train import generated

    uri = str(tmp_path / "exp")
    soma_io.from_anndata(uri, generated(37), measurement_name="RNA")
    _run_both(tmp_path, ["--cells", "37", "--soma", uri])
    single = np.load(tmp_path / "single" / "emb.npy")
    ddp = np.load(tmp_path / "ddp" / "emb.npy")
    assert single.shape == ddp.shape == (37, 32) and np.abs(single).max() > 0.1
    np.testing.assert_allclose(ddp, single, atol=1e-5, rtol=1e-5)
    ids = np.load(tmp_path / "ddp" / "joinids.npy")
    np.testing.assert_array_equal(ids, np.arange(37))  # every cell once, in joinid order
    assert json.loads((tmp_path / "ddp" / "rank1.json").read_text()) == {"result": False}


@pytest.mark.slow
def test_embed_genes_over_two_ranks_equals_one_process(tmp_path):
    _run_both(tmp_path, ["--cells", "37", "--genes", "--stored"])
    single = np.load(tmp_path / "single" / "emb.npy")
    ddp = np.load(tmp_path / "ddp" / "emb.npy")
    assert single.shape == ddp.shape and single.shape[0] == 4  # all cells + 3 groups
    assert np.abs(single).max() > 0.1
    np.testing.assert_allclose(ddp, single, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(
        np.load(tmp_path / "ddp" / "n_cells.npy"), np.load(tmp_path / "single" / "n_cells.npy")
    )
    assert json.loads((tmp_path / "ddp" / "rank1.json").read_text()) == {"result": False}


def _same_network(ddp: dict, single: dict) -> None:
    """The two runs wrote the same keys, networks, edges and comparison (float tolerance)."""
    for key in ("sct_grn", "sct_grn_n_cells"):
        np.testing.assert_allclose(ddp["varp"][key].toarray(), single["varp"][key].toarray(),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
    assert list(ddp["uns"]) == list(single["uns"])
    for g, mat in single["uns"]["groups"].items():
        np.testing.assert_allclose(ddp["uns"]["groups"][g].toarray(), mat.toarray(), atol=1e-5)
    by = {"edges": ["group", "source", "target"], "compare": ["source", "target"]}
    for key, cols in by.items():  # rows in weight order: near-equal weights may swap places
        a, b = (
            t[key].sort_values(cols).reset_index(drop=True) for t in (ddp["uns"], single["uns"])
        )
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-5, rtol=1e-5)
    params = dict(ddp["uns"]["params"])
    assert params.pop("world_size") == 2
    assert params == single["uns"]["params"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["attention", "embedding", "deletion", "attention_grad"])
def test_attention_grn_over_two_ranks_equals_one_process(tmp_path, method):
    _run_both(tmp_path, ["--cells", "37", "--grn", method])
    single = pickle.loads((tmp_path / "single" / "grn.pkl").read_bytes())
    ddp = pickle.loads((tmp_path / "ddp" / "grn.pkl").read_bytes())
    assert single["varp"]["sct_grn"].nnz > 0 and len(single["uns"]["compare"]) > 0
    _same_network(ddp, single)
    if method == "attention":  # the attention each gene receives, per layer and head
        scores = (t["uns"]["head_scores"]["scores"] for t in (ddp, single))
        np.testing.assert_allclose(*scores, atol=1e-5, rtol=1e-5)
    rank0 = json.loads((tmp_path / "ddp" / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "ddp" / "rank1.json").read_text())
    assert rank0 == {"result": True, "varp": ["sct_grn", "sct_grn_n_cells"], "uns": ["sct_grn"]}
    assert rank1 == {"result": False, "varp": [], "uns": []}  # rank 1 writes nothing
