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


def save_state(path: Path, model, opt, sched, step: int, history: list[dict]) -> None:
    """A resumable checkpoint: the model folder plus optimiser and scheduler state."""
    from ..models._io import save

    save(model, path / "model")
    torch.save(
        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step},
        path / "trainer_state.pt",
    )
    (path / "history.json").write_text(json.dumps(history))


def load_state(path, model, opt, sched) -> tuple[int, list[dict]]:
    """Restore ``model``, ``opt`` and ``sched`` from a ``step-N`` folder; its step and history."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "trainer_state.pt").exists():
        raise FileNotFoundError(
            f"{path} is not a training checkpoint (no trainer_state.pt); pass a "
            "checkpoint_dir/step-N folder written during pretraining"
        )
    state = load_file(str(path / "model" / "model.safetensors"))
    model.load_state_dict(state, strict=False)
    trainer = torch.load(path / "trainer_state.pt", weights_only=True)
    opt.load_state_dict(trainer["optimizer"])
    sched.load_state_dict(trainer["scheduler"])
    history = json.loads((path / "history.json").read_text())
    return int(trainer["step"]), history
