"""Fine-tuning's settings, importable without torch (the front doors build them)."""

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
