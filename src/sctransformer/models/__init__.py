"""Model registry and the checkpoint format (torch is imported only when a model loads)."""

from ._entry import ModelEntry, RemoteFile
from ._fetch import ChecksumError, DownloadError, OfflineError
from ._io import save
from ._model import Model
from ._registry import available, files, load, resolve
from ._safe_pickle import UnsafePickleError, load_pickle

__all__ = [
    "ChecksumError",
    "DownloadError",
    "Model",
    "ModelEntry",
    "OfflineError",
    "RemoteFile",
    "UnsafePickleError",
    "available",
    "files",
    "load",
    "load_pickle",
    "resolve",
    "save",
]
