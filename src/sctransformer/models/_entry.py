"""What a named model is: its files (revision-pinned URL, sha256, size) and its card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .._settings import settings

_BUNDLED = Path(__file__).parent / "weights"


class RemoteFile(NamedTuple):
    """One published file: revision-pinned URL, sha256 and size in bytes (``None``: unknown)."""

    url: str
    sha256: str
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ModelEntry:
    """One named model: where it comes from, its size and how to cite it.

    ``files`` maps a role (``"weights"``, ``"token_dictionary"``, ``"args"``, …) to a
    :class:`RemoteFile`; ``kind`` names the converter (``"geneformer"`` or ``"scgpt"``);
    ``config`` holds the publisher's configuration facts the converter needs.
    """

    name: str
    description: str
    source: str
    license: str
    citation: str
    size_bytes: int
    files: dict = field(default_factory=dict)  # role -> RemoteFile
    bundled: str | None = None  # folder name under models/weights
    kind: str | None = None
    config: dict = field(default_factory=dict)

    def location(self) -> Path | None:
        return _BUNDLED / self.bundled if self.bundled else None

    def cache_folder(self) -> Path:
        """``<sct.settings.cachedir>/<name>``: downloads in ``download/``, ours in ``converted/``."""
        return Path(settings.cachedir) / self.name
