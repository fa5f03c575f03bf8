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


def _launch(out: Path, args: list[str], nproc: int) -> subprocess.Popen:
    """The helper script in one process, or under torch.distributed.run with ``nproc``."""
    launcher = []
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
        launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    return subprocess.Popen(
        [sys.executable, *launcher, str(SCRIPT), str(out), *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(procs: dict) -> None:
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=1800)  # a guard against a hang, not a limit
        assert proc.returncode == 0, f"{name} run failed:\n{out[-4000:]}"


def _assert_same_params(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5, msg=key)


def _assert_same_run(tmp_path, name: str, reference: str = "single") -> None:
    _assert_same_params(
        load_file(str(tmp_path / name / "params.safetensors")),
        load_file(str(tmp_path / reference / "params.safetensors")),
    )
    h_ref = json.loads((tmp_path / reference / "history.json").read_text())
    h_got = json.loads((tmp_path / name / "history.json").read_text())
    assert h_got["n_predicted"] == h_ref["n_predicted"]
    assert len(h_got["loss"]) == 6
    for a, b in zip(h_got["loss"], h_ref["loss"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    # the run must have moved the parameters, or equality would prove nothing
    assert h_ref["loss"][-1] < h_ref["loss"][0]


CASES = pytest.mark.parametrize(
    ("objective", "method", "cells"),
    [
        ("mlm", "rank", 36),
        # 33 cells in batches of 8: one global batch holds a single cell, so one process
        # computes nothing in that step and must still take part in the gradient exchange
        ("generative", "bin", 33),
    ],
)


def _args(objective, method, cells) -> list[str]:
    return ["--objective", objective, "--method", method, "--cells", str(cells), "--steps", "6"]


@pytest.mark.slow
@CASES
def test_ddp_two_processes_equal_single_process(tmp_path, objective, method, cells):
    args = _args(objective, method, cells)
    _wait(
        {"ddp": _launch(tmp_path / "ddp", args, 2), "single": _launch(tmp_path / "single", args, 1)}
    )
    _assert_same_run(tmp_path, "ddp")


@pytest.mark.slow
@CASES
def test_fsdp_two_processes_equal_single_process_and_checkpoint_alike(
    tmp_path, objective, method, cells
):
    """FSDP shards the model over two ranks; its result and its checkpoints (gathered whole on
    rank 0, in the one checkpoint format) equal one process's."""
    args = [*_args(objective, method, cells), "--checkpoint-every", "3"]
    fsdp_args = [*args, "--distributed", "fsdp"]
    _wait(
        {
            "fsdp": _launch(tmp_path / "fsdp", fsdp_args, 2),
            "single": _launch(tmp_path / "single", args, 1),
        }
    )
    _assert_same_run(tmp_path, "fsdp")
    for step in ("step-3", "step-6"):
        got, want = (tmp_path / run / "ckpt" / step for run in ("fsdp", "single"))
        assert sorted(p.name for p in (got / "model").iterdir()) == sorted(
            p.name for p in (want / "model").iterdir()
        )
        _assert_same_params(
            load_file(str(got / "model" / "model.safetensors")),
            load_file(str(want / "model" / "model.safetensors")),
        )
        t_got, t_want = (torch.load(d / "trainer_state.pt", weights_only=True) for d in (got, want))
        assert t_got["step"] == t_want["step"] and t_got["scheduler"] == t_want["scheduler"]
        assert t_got["optimizer"]["param_groups"] == t_want["optimizer"]["param_groups"]
        for i, moments in t_want["optimizer"]["state"].items():
            for k, v in moments.items():
                torch.testing.assert_close(
                    t_got["optimizer"]["state"][i][k], v, atol=1e-7, rtol=1e-4
                )
    if objective == "mlm":  # resuming under FSDP from its own checkpoint continues the run
        resume = [*fsdp_args, "--resume-from", str(tmp_path / "fsdp" / "ckpt" / "step-3")]
        _wait({"resumed": _launch(tmp_path / "resumed", resume, 2)})
        _assert_same_run(tmp_path, "resumed", reference="fsdp")


def test_fsdp_without_a_process_group_names_torchrun(monkeypatch):
    import sctransformer as sct
    from sctransformer.train.loop import TrainConfig

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    from _ddp_train import generated

    adata = generated(8)
    with pytest.raises(ValueError, match="torchrun"):
        sct.tl.pretrain(adata, distributed="fsdp", max_steps=1)
    assert "sct_tokens" not in adata.obsm  # refused before any work
    with pytest.raises(ValueError, match="'ddp' or 'fsdp'"):
        TrainConfig(distributed="deepspeed")
