"""Named models: the bundled demonstration model and published models fetched with pooch."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import _io

_BUNDLED = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ModelEntry:
    """One named model: where it comes from, its size and how to cite it."""

    name: str
    description: str
    source: str
    license: str
    citation: str
    size_bytes: int
    files: dict = field(default_factory=dict)  # relative path -> (url, sha256)
    bundled: str | None = None  # folder name under models/weights

    def location(self) -> Path | None:
        return _BUNDLED / self.bundled if self.bundled else None


REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    REGISTRY[entry.name] = entry


register(
    ModelEntry(
        name="sct-tiny-pbmc",
        description=(
            "demonstration model: 2-layer, 64-dim rank-input encoder pretrained (MLM) for a few "
            "minutes on the 700 bundled pbmc68k cells; not a foundation model"
        ),
        source="shipped inside the package (scripts/train_tiny.py)",
        license="BSD-3-Clause",
        citation="sctransformer; data: scanpy.datasets.pbmc68k_reduced (10x Genomics PBMC 68k)",
        size_bytes=0,
        bundled="sct-tiny-pbmc",
    )
)


def available() -> pd.DataFrame:
    """Every named model with its size, source, licence and citation."""
    rows = []
    for e in REGISTRY.values():
        size = e.size_bytes
        if e.bundled and e.location().exists():
            size = sum(f.stat().st_size for f in e.location().iterdir())
        rows.append(
            {
                "name": e.name,
                "description": e.description,
                "size_mb": round(size / 1e6, 2),
                "source": e.source,
                "license": e.license,
                "citation": e.citation,
            }
        )
    return pd.DataFrame(rows).set_index("name")


def load(name_or_path: str | os.PathLike):
    """Load a model by registry name or from a checkpoint folder.

    Parameters
    ----------
    name_or_path
        A name from :func:`available` or a folder in this package's checkpoint format.

    Returns
    -------
    :class:`~sctransformer.nn.CellTransformer` in eval mode with ``.vocab``,
    ``.tokenize_params`` and ``.metadata`` set.
    """
    key = str(name_or_path)
    if key in REGISTRY:
        entry = REGISTRY[key]
        if entry.bundled:
            return _io.load_checkpoint(entry.location())
        raise NotImplementedError(f"{key!r} has no loader yet")
    path = Path(name_or_path)
    if path.exists():
        return _io.load_checkpoint(path)
    raise ValueError(
        f"{key!r} is neither a registered model ({sorted(REGISTRY)}) nor an existing folder; "
        "see sct.models.available()"
    )


def resolve(model):
    """A model object from a model, a registry name or a checkpoint path."""
    if isinstance(model, str | os.PathLike):
        return load(model)
    if not hasattr(model, "config") or not hasattr(model, "vocab"):
        raise ValueError(
            f"expected a CellTransformer, a model name or a checkpoint path, got "
            f"{type(model).__name__}; see sct.models.available()"
        )
    if model.vocab is None:
        raise ValueError("the model has no vocabulary (model.vocab); load or train it with one")
    return model
