"""Resumable training checkpoints: the model folder plus optimiser, scheduler and history.

A ``step-N`` folder holds ``model/`` in the project's one checkpoint format
(:func:`sctransformer.models.save`), ``trainer_state.pt`` (optimiser, scheduler, step) and
``history.json`` (the losses so far).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def start_step_of(path) -> int:
    """The step a ``step-N`` checkpoint folder resumes from (0 when it cannot be read)."""
    try:
        trainer = torch.load(Path(path) / "trainer_state.pt", weights_only=True)
    except (OSError, RuntimeError):
        return 0
    return int(trainer.get("step", 0))


def save_state(
    path: Path, model, optimizer_state: dict, sched, step: int, history: list[dict]
) -> None:
    """A resumable checkpoint: the model folder plus optimiser and scheduler state.

    ``optimizer_state``: :func:`~sctransformer.train.distributed.full_optimizer_state` (whole
    tensors, also when the run shards them).
    """
    from ..models._io import save

    save(model, path / "model")
    torch.save(
        {"optimizer": optimizer_state, "scheduler": sched.state_dict(), "step": step},
        path / "trainer_state.pt",
    )
    (path / "history.json").write_text(json.dumps(history))


def _checked(path) -> Path:
    path = Path(path)
    if not (path / "trainer_state.pt").exists():
        raise FileNotFoundError(
            f"{path} is not a training checkpoint (no trainer_state.pt); pass a "
            "checkpoint_dir/step-N folder written during pretraining"
        )
    return path


def load_weights(path, model) -> None:
    """Load a ``step-N`` folder's model weights into ``model`` (before it is wrapped)."""
    from safetensors.torch import load_file

    state = load_file(str(_checked(path) / "model" / "model.safetensors"))
    model.load_state_dict(state, strict=False)


def load_trainer(path, opt, sched) -> tuple[int, list[dict]]:
    """Restore ``opt`` and ``sched`` from a ``step-N`` folder; return its step and history."""
    from .distributed import shard_optimizer_state

    path = _checked(path)
    trainer = torch.load(path / "trainer_state.pt", weights_only=True)
    opt.load_state_dict(trainer["optimizer"])
    shard_optimizer_state(opt)
    sched.load_state_dict(trainer["scheduler"])
    history = json.loads((path / "history.json").read_text())
    return int(trainer["step"]), history
