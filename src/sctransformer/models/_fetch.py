"""Download published files with pooch, pinned by sha256, or fail at once when offline."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

from .. import logging as logg
from .._settings import settings
from ._io import sha256_file

__all__ = ["ChecksumError", "DownloadError", "OfflineError", "fetch"]


class OfflineError(FileNotFoundError):
    """A file is needed, downloads are off (``sct.settings.offline``) and it is not in place."""


class ChecksumError(ValueError):
    """A file's sha256 differs from the pinned one: truncated, corrupted or tampered with."""


class DownloadError(OSError):
    """The server could not deliver a file (HTTP error, no connection)."""


def _place_hint(url: str, sha256: str, dest: Path) -> str:
    return (
        f"download {url}\n  (sha256 {sha256})\n  and put it at {dest}\n"
        f"  e.g. `curl -L -o {dest} {url}` on a machine with network access"
    )


def _download(url: str, output_file, pooch_instance, check_only: bool = False):
    """Pooch downloader over requests that closes its connection on every path (also errors)."""
    import requests

    with requests.Session() as session:
        if check_only:
            with session.head(url, timeout=30, allow_redirects=True) as r:
                return r.status_code == 200
        with session.get(url, timeout=30, stream=True) as r:
            r.raise_for_status()
            total = int(r.headers.get("content-length", 0)) or None
            bar = logg.progress(total=total, desc=url.rsplit("/", 1)[-1], unit="B")
            opened = not hasattr(output_file, "write")
            out = open(output_file, "w+b") if opened else output_file
            try:
                for chunk in r.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
                if opened:
                    out.close()
    return None


@contextmanager
def _quiet_pooch():
    import pooch

    log = pooch.get_logger()
    level = log.level
    if settings.verbosity < logg.INFO:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def fetch(
    url: str,
    sha256: str,
    dest: str | os.PathLike,
    *,
    offline: bool | None = None,
) -> Path:
    """Return ``dest`` holding the file at ``url`` whose sha256 is ``sha256``.

    A file already at ``dest`` is reused when its hash matches. Otherwise it is downloaded with
    pooch (``known_hash``), which refuses a download whose hash differs.

    Parameters
    ----------
    url
        Where the publisher serves the file (pin a revision, never a moving branch).
    sha256
        Expected hex digest.
    dest
        Local path of the file.
    offline
        Never download; ``None`` uses ``sct.settings.offline`` (``SCTRANSFORMER_OFFLINE``).

    Returns
    -------
    ``dest`` as a :class:`~pathlib.Path`.

    Raises
    ------
    OfflineError
        Offline and the file is missing; the message gives the URL, the sha256 and the path.
    ChecksumError
        The file (present or downloaded) has another sha256.
    DownloadError
        The server answered with an error or could not be reached.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    offline = settings.offline if offline is None else offline
    if dest.exists():
        digest = sha256_file(dest)
        if digest == sha256:
            return dest
        if offline:
            raise ChecksumError(
                f"{dest} has sha256 {digest}, but {sha256} is expected: the file is truncated, "
                f"corrupted or was modified, and is refused. Delete it, then\n"
                + _place_hint(url, sha256, dest)
            )
        logg.warning(f"{dest} has the wrong sha256 ({digest}); downloading it again")
    elif offline:
        raise OfflineError(
            f"{dest.name} is not in the cache and downloads are off "
            "(sct.settings.offline / SCTRANSFORMER_OFFLINE). To use it offline,\n"
            + _place_hint(url, sha256, dest)
        )
    import pooch
    import requests

    dest.parent.mkdir(parents=True, exist_ok=True)
    start = logg.info(f"downloading {url}")
    try:
        with _quiet_pooch():
            path = pooch.retrieve(
                url,
                known_hash=f"sha256:{sha256}",
                fname=dest.name,
                path=dest.parent,
                downloader=_download,
            )
    except ValueError as e:
        if "hash" not in str(e).lower():
            raise
        raise ChecksumError(
            f"the file downloaded from {url} does not have the pinned sha256 {sha256} "
            f"(truncated download or changed file on the server); it was refused and "
            f"nothing was kept. Pooch said: {e}"
        ) from None
    except requests.exceptions.RequestException as e:
        raise DownloadError(
            f"could not download {url}: {e}. Try again later, or\n" + _place_hint(url, sha256, dest)
        ) from None
    logg.info("    finished", time=start, deep=f"saved {path}")
    return Path(path)
