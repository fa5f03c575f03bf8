"""Distributed training equals single-process training on the same global batches.

Two CPU processes (gloo) launched by ``torch.distributed.run`` each compute half of every
global batch; after N steps their parameters must equal those of one process that computes the
whole batch. This holds only if masks are drawn over the global batch, the loss is normalised by
the global number of predicted positions and gradients are averaged, not summed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from safetensors.torch import load_file  # noqa: E402

SCRIPT = Path(__file__).with_name("_ddp_train.py")


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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("objective", "method", "cells"),
    [
        ("mlm", "rank", 36),
        # 33 cells in batches of 8: one global batch holds a single cell, so one process
        # computes nothing in that step and must still take part in the gradient exchange
        ("generative", "bin", 33),
    ],
)
def test_ddp_two_processes_equal_single_process(tmp_path, objective, method, cells):
    args = ["--objective", objective, "--method", method, "--cells", str(cells), "--steps", "6"]
    port = _free_port()
    ddp_cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        str(SCRIPT),
        str(tmp_path / "ddp"),
        *args,
    ]
    single_cmd = [sys.executable, str(SCRIPT), str(tmp_path / "single"), *args]
    procs = {
        name: subprocess.Popen(
            cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, cmd in (("ddp", ddp_cmd), ("single", single_cmd))
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=1800)  # a guard against a hang, not a limit
        assert proc.returncode == 0, f"{name} run failed:\n{out[-4000:]}"

    single = load_file(str(tmp_path / "single" / "params.safetensors"))
    ddp = load_file(str(tmp_path / "ddp" / "params.safetensors"))
    assert single.keys() == ddp.keys()
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], atol=1e-5, rtol=1e-5, msg=key)

    h_single = json.loads((tmp_path / "single" / "history.json").read_text())
    h_ddp = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert h_ddp["n_predicted"] == h_single["n_predicted"]
    assert len(h_ddp["loss"]) == 6
    for a, b in zip(h_ddp["loss"], h_single["loss"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    # the run must have moved the parameters, or equality would prove nothing
    assert h_single["loss"][-1] < h_single["loss"][0]
