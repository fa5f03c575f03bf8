"""The settings of pretraining and fine-tuning, importable without torch (the front doors
build them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FinetuneOptions:
    """What :func:`sctransformer.train.finetune.finetune_classifier` takes besides the data,
    the model and how it runs; the defaults are :func:`sctransformer.tl.annotate`'s.

    ``encoder_lr=None`` trains the encoder at a tenth of ``lr``.
    """

    freeze: bool = False
    epochs: int = 10
    lr: float = 1e-3
    encoder_lr: float | None = None
    weight_decay: float = 0.01
    class_weight: bool = True
    validation_fraction: float = 0.1
    patience: int = 3

    def resolved(self) -> dict:
        """The settings as keywords, ``encoder_lr`` filled in."""
        out = asdict(self)
        if out["encoder_lr"] is None:
            out["encoder_lr"] = self.lr / 10
        return out


@dataclass
class TrainConfig:
    """Optimisation settings of :func:`sctransformer.train.loop.train`."""

    objective: str = "mlm"
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int | None = None  # default: 5% of the steps
    lr_schedule: str = "cosine"  # after warm-up: "cosine" decay to zero, or "constant"
    clip: float = 1.0
    mask_prob: float = 0.15
    seed: int = 0
    precision: str = "auto"
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    # cells per forward/backward pass; None: as many of the longest cells as fit in memory
    micro_batch_size: int | None = None
    # bytes the run may use; None: what is available when training starts
    memory_limit: int | None = None
    # under torchrun: "ddp" (every process holds the model) or "fsdp" (each holds a shard)
    distributed: str = "ddp"

    def __post_init__(self) -> None:
        from .objectives import OBJECTIVES

        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}; use one of {list(OBJECTIVES)}")
        if self.batch_size < 1 or self.epochs < 1 or self.lr <= 0:
            raise ValueError("batch_size and epochs must be positive, and lr > 0")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; use 'cosine' or 'constant'")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError("checkpoint_every needs checkpoint_dir")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(
                f"micro_batch_size must be positive (or None to fit memory), got "
                f"{self.micro_batch_size}"
            )
        if self.memory_limit is not None and self.memory_limit < 1:
            raise ValueError("memory_limit must be a positive number of bytes or None")
        if self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"distributed={self.distributed!r}; use 'ddp' or 'fsdp'")


def config_dict(cfg: TrainConfig) -> dict:
    """The settings as a dict that ``uns`` can hold (no ``None``)."""
    d = asdict(cfg)
    for key in ("max_steps", "warmup_steps"):
        d[key] = -1 if d[key] is None else d[key]
    d["checkpoint_dir"] = d["checkpoint_dir"] or ""
    for key in ("micro_batch_size", "memory_limit"):
        d[key] = 0 if d[key] is None else d[key]
    return d
