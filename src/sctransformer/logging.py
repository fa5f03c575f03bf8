"""scanpy-style logging: ``start = info("computing x")`` … ``info("    finished", time=start)``."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

from ._settings import settings

ERROR, WARNING, INFO, HINT, DEBUG = range(5)


def _fmt_delta(delta: timedelta) -> str:
    secs = delta.total_seconds()
    return f"{int(secs // 3600):01d}:{int(secs % 3600 // 60):02d}:{secs % 60:05.2f}"


def _log(
    level: int, msg: str, *, time: datetime | None = None, deep: str | None = None
) -> datetime:
    now = datetime.now()
    if settings.verbosity >= level:
        if time is not None:
            msg = f"{msg} ({_fmt_delta(now - time)})"
        if deep is not None and settings.verbosity >= HINT:
            msg = f"{msg}\n    {deep}"
        print(msg, file=sys.stderr, flush=True)
    return now


def error(msg: str, **kw) -> datetime:
    """Log ``msg`` at level error; returns the time (pass it as ``time=`` to a later call)."""
    return _log(ERROR, msg, **kw)


def warning(msg: str, **kw) -> datetime:
    """Log ``msg`` at level warning (prefixed ``WARNING:``)."""
    return _log(WARNING, f"WARNING: {msg}", **kw)


def info(msg: str, **kw) -> datetime:
    """Log ``msg`` at level info; ``time=`` appends the time since then, ``deep=`` details."""
    return _log(INFO, msg, **kw)


def hint(msg: str, **kw) -> datetime:
    """Log ``msg`` at level hint."""
    return _log(HINT, msg, **kw)


def debug(msg: str, **kw) -> datetime:
    """Log ``msg`` at level debug."""
    return _log(DEBUG, msg, **kw)


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar that honours ``settings.progress_bars``.

    In a terminal or notebook it redraws as usual; written to a log file (pipelines, Galaxy)
    it adds a line at most every 30 s instead of ten per second.
    """
    from tqdm.auto import tqdm

    live = tqdm.__module__.startswith("tqdm.notebook") or sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not settings.progress_bars,
        mininterval=0.1 if live else 30.0,
    )
