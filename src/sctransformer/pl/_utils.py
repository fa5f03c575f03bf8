"""The one plot contract every ``sct.pl`` function follows: ``show``, ``save``, ``ax``, returns.

Like scanpy's plotting functions:

- ``show=None`` shows the figure unless ``save`` is given; ``show=True`` always shows it.
- ``save="name.png"`` (``.pdf``, ``.svg``) writes the figure, the format taken from the
  extension, atomically: to a temporary file in the same folder, then renamed over the target.
- The return value is ``None`` when the figure was shown, else the Axes (single-panel plots) or
  the Figure (multi-panel plots).
- ``ax`` draws a single-panel plot into an existing Axes.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

SAVE_FORMATS = ("png", "pdf", "svg")


def check_save(save: str | os.PathLike | None) -> Path | None:
    """Validate ``save`` before any drawing; return it as a Path."""
    if save is None:
        return None
    if not isinstance(save, str | os.PathLike):
        raise TypeError(f"save must be a file path (str or Path), got {type(save).__name__}")
    path = Path(save)
    ext = path.suffix.lower().removeprefix(".")
    if ext not in SAVE_FORMATS:
        raise ValueError(
            f"save={str(save)!r}: the format comes from the extension; use one of "
            f"{['.' + f for f in SAVE_FORMATS]}"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"save={str(save)!r}: folder {str(folder)!r} does not exist; create it")
    return path


def check_return_fig(return_fig: bool | None, func: str) -> bool:
    """The deprecated ``return_fig=True``: warn and say what replaces it."""
    if not return_fig:
        return False
    warnings.warn(
        f"sct.pl.{func}(return_fig=True) is deprecated and will be removed; use show=False, "
        "which returns the Axes (single panel; its Figure is ax.figure) or the Figure",
        FutureWarning,
        stacklevel=3,
    )
    return True


def savefig_atomic(fig, path: Path, **kw) -> None:
    """Write ``fig`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    fmt = path.suffix.lower().removeprefix(".")
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{fmt}.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format=fmt, **{"bbox_inches": "tight", "dpi": 150, **kw})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finish(fig, result, *, show: bool | None, save: Path | None, return_fig: bool = False):
    """Save, show and return as the contract says.

    ``result`` is what a not-shown plot returns: the Axes of a single-panel plot, the Figure of
    a multi-panel one.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        savefig_atomic(fig, save)
    if return_fig:
        return fig
    if show is None:
        show = save is None
    if show:
        plt.show()
        return None
    return result
