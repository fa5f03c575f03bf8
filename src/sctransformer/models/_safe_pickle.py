"""Read pickled dictionaries without running code.

Some publishers ship their gene dictionaries as Python pickles. A pickle is a program: an
ordinary ``pickle.load`` calls whatever functions the file names, so a tampered file could run
anything. :func:`load_pickle` uses an unpickler that only builds plain data — ``dict``,
``list``, ``tuple``, ``set``, ``frozenset``, ``str``, ``bytes``, ``int``, ``float``, ``bool``,
``None`` and numpy scalars — and refuses every other global before calling it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

__all__ = ["UnsafePickleError", "load_pickle", "loads_pickle"]

# numeric and string dtypes that a numpy scalar may carry (no object or structured dtypes)
_SAFE_DTYPE_KINDS = set("biufcSU")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something other than plain data; nothing it named was called."""


def _numpy_dtype(*args):
    import numpy as np

    dt = np.dtype(*args)
    if dt.kind not in _SAFE_DTYPE_KINDS or dt.fields is not None:
        raise UnsafePickleError(
            f"refusing a numpy scalar of dtype {dt!r}: only numeric and string scalars are allowed"
        )
    return dt


def _numpy_scalar(dtype, *args):
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.kind not in _SAFE_DTYPE_KINDS:
        raise UnsafePickleError(f"refusing a numpy scalar of dtype {dtype!r}")
    if args and not isinstance(args[0], bytes):
        raise UnsafePickleError("refusing a numpy scalar that is not built from raw bytes")
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar

    return scalar(dtype, *args)


def _latin1_bytes(text, encoding="latin1"):
    # protocols 0-2 store bytes as ``_codecs.encode(text, "latin1")``
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refusing _codecs.encode with anything but (str, 'latin1')")
    return text.encode("latin1")


# (module, name) -> the callable handed to the unpickler; nothing else is ever looked up
_ALLOWED = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # protocols 0-2 name Python 2's module
            module = "builtins"
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source} asks to load {module}.{name}, which is not plain data; refused "
                "without running it. Only dict/list/tuple/set/str/bytes/int/float/bool/None and "
                "numpy scalars are accepted. The file may be corrupted or malicious: download "
                "it again from its publisher and check its sha256"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source} uses persistent ids; refused")


def loads_pickle(data: bytes, *, source: str = "pickle data"):
    """Unpickle ``data`` allowing only plain data (see the module docstring).

    Parameters
    ----------
    data
        The pickled bytes.
    source
        How to name the data in error messages.

    Returns
    -------
    The unpickled object.

    Raises
    ------
    UnsafePickleError
        If the pickle names any other class or function; it is refused before being called.
    """
    return _RestrictedUnpickler(io.BytesIO(data), source).load()


def load_pickle(path: str | os.PathLike):
    """Unpickle the file at ``path`` allowing only plain data (see :func:`loads_pickle`).

    Parameters
    ----------
    path
        A pickle file, e.g. Geneformer's ``token_dictionary_gc104M.pkl``.

    Returns
    -------
    The unpickled object.
    """
    path = Path(path)
    with open(path, "rb") as f:
        return _RestrictedUnpickler(f, str(path)).load()
