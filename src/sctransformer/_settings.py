"""Package-wide settings, in the spirit of ``scanpy.settings``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_VERBOSITY_NAMES = {"error": 0, "warning": 1, "info": 2, "hint": 3, "debug": 4}


class SctSettings:
    """Settings of sctransformer.

    Attributes
    ----------
    verbosity
        0 error, 1 warning, 2 info, 3 hint, 4 debug (names are accepted too).
    progress_bars
        Show tqdm progress bars on loops over cells and epochs.
    cachedir
        Where downloaded weights live. Defaults to ``$SCTRANSFORMER_CACHE_DIR`` or
        ``~/.cache/sctransformer``.
    device
        Default torch device; ``"auto"`` picks CUDA when available, else CPU.
    offline
        Never download; a missing file fails at once with its URL and hash.
        Defaults to ``$SCTRANSFORMER_OFFLINE``.
    n_jobs
        Threads for tokenization; ``None`` uses every available core.
    """

    def __init__(self) -> None:
        self._verbosity = 1
        self.progress_bars = True
        self._cachedir = Path(
            os.environ.get("SCTRANSFORMER_CACHE_DIR", Path.home() / ".cache" / "sctransformer")
        )
        self.device = "auto"
        self.offline = os.environ.get("SCTRANSFORMER_OFFLINE", "").lower() in {"1", "true", "yes"}
        self.n_jobs: int | None = None

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        if isinstance(value, str):
            if value not in _VERBOSITY_NAMES:
                raise ValueError(
                    f"verbosity {value!r} unknown; use one of {list(_VERBOSITY_NAMES)}"
                )
            value = _VERBOSITY_NAMES[value]
        self._verbosity = int(value)

    @property
    def cachedir(self) -> Path:
        return self._cachedir

    @cachedir.setter
    def cachedir(self, value: str | os.PathLike) -> None:
        self._cachedir = Path(value)

    _FIELDS = ("verbosity", "progress_bars", "cachedir", "device", "offline", "n_jobs")

    @contextmanager
    def override(self, **settings) -> Iterator[SctSettings]:
        """Set settings for the duration of a ``with`` block, then restore them.

        The previous values come back even when the block raises.

        Parameters
        ----------
        **settings
            Settings to change, by name: ``verbosity``, ``progress_bars``, ``cachedir``,
            ``device``, ``offline``, ``n_jobs``.

        Yields
        ------
        The settings object itself.

        Examples
        --------
        >>> import sctransformer as sct
        >>> with sct.settings.override(verbosity=0, progress_bars=False):
        ...     pass  # quiet here
        """
        unknown = sorted(set(settings) - set(self._FIELDS))
        if unknown:
            raise AttributeError(
                f"unknown setting(s) {unknown}; sct.settings has {list(self._FIELDS)}"
            )
        saved = {name: getattr(self, name) for name in settings}
        try:
            for name, value in settings.items():
                setattr(self, name, value)
            yield self
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def effective_n_jobs(self) -> int:
        if self.n_jobs is not None:
            return max(1, int(self.n_jobs))
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # macOS
            return max(1, os.cpu_count() or 1)

    def __repr__(self) -> str:
        return (
            f"SctSettings(verbosity={self.verbosity}, progress_bars={self.progress_bars}, "
            f"cachedir={str(self.cachedir)!r}, device={self.device!r}, offline={self.offline})"
        )


settings = SctSettings()


def resolve_device(device):
    """A torch device from ``"auto"`` (settings, then CUDA when available), a name or a device."""
    import torch

    if isinstance(device, torch.device):
        return device
    device = settings.device if device == "auto" else device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu'")
    return torch.device(device)
