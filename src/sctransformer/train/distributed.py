"""The process group of a ``torchrun`` launch, as training uses it: DDP or FSDP.

Under ``distributed="ddp"`` every process holds the whole model and gradients are averaged;
under ``"fsdp"`` (FSDP2, :func:`torch.distributed.fsdp.fully_shard`) each process holds a
shard of every parameter, gradient and optimiser moment, gathered layer by layer when used,
for models that do not fit one device. Both give the update of one process on the global batch.
"""

from __future__ import annotations

import contextlib
import os

import torch


def process_group():
    """``torch.distributed`` when a process group is running, else ``None``."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def init_distributed_from_env() -> bool:
    """Start the process group when launched by ``torchrun`` (gloo on CPU, nccl on GPU)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def require_process_group(kind: str) -> None:
    """Refuse ``distributed="fsdp"`` outside a multi-process launch, naming the fix."""
    if kind == "fsdp" and process_group() is None and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise ValueError(
            "distributed='fsdp' shards the model over processes: launch with torchrun "
            "(e.g. torchrun --nproc_per_node 2 script.py), or use distributed='ddp' for one "
            "process"
        )


def shard(step, device: torch.device):
    """``step`` (a :class:`~sctransformer.train.step.Step`) with its model sharded over the ranks.

    FSDP2's :func:`torch.distributed.fsdp.fully_shard` on every encoder layer, then on the
    whole step (embeddings and heads, which the objective calls after the encoder), so each
    layer's parameters are gathered only while it runs.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (process_group().get_world_size(),))
    for layer in step.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(step, mesh=mesh)
    return step.train()


def full_tensor(value):
    """A DTensor's whole value on the CPU (a collective: every rank calls it); else ``value``."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        return value.full_tensor().detach().cpu()
    return value


def copy_into(model, sharded) -> None:
    """Gather ``sharded``'s parameters and buffers into the unsharded ``model`` (every rank)."""
    state = {k: full_tensor(v) for k, v in sharded.state_dict().items()}
    with torch.no_grad():
        model.load_state_dict(state)


def like_parameter(value, param):
    """``value`` (a whole tensor) as a shard laid out like the DTensor ``param``."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(param, DTensor) or not torch.is_tensor(value) or value.ndim == 0:
        return value
    return distribute_tensor(
        value.to(param.device_mesh.device_type), param.device_mesh, param.placements,
        src_data_rank=None,
    )  # fmt: skip


def full_optimizer_state(opt) -> dict:
    """``opt.state_dict()`` with every sharded moment gathered whole (a collective under FSDP).

    The same layout as an unsharded optimizer's, so a checkpoint does not depend on how it was
    trained.
    """
    state = opt.state_dict()
    state["state"] = {
        i: {k: full_tensor(v) for k, v in moments.items()} for i, moments in state["state"].items()
    }
    return state


def shard_optimizer_state(opt) -> None:
    """After ``opt.load_state_dict`` of whole tensors: lay each moment out like its parameter."""
    for group in opt.param_groups:
        for p in group["params"]:
            moments = opt.state.get(p, {})
            for k, v in moments.items():
                moments[k] = like_parameter(v, p)


@contextlib.contextmanager
def gradient_sync(runner, enabled: bool):
    """Exchange gradients after this backward pass, or keep them local until one that does."""
    if enabled:
        yield
    elif hasattr(runner, "no_sync"):  # DistributedDataParallel
        with runner.no_sync():
            yield
    elif hasattr(runner, "set_requires_gradient_sync"):  # FSDP2
        runner.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            runner.set_requires_gradient_sync(True)
    else:
        yield
