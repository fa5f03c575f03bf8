"""Reading inputs (h5ad, 10x .h5, 10x mtx folders) and writing outputs atomically."""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path


class CliError(Exception):
    """An error the user can fix; printed as one line, exit status 1."""


def check_exists(path: str | os.PathLike, what: str = "") -> Path:
    p = Path(path)
    if not p.exists():
        raise CliError(f"no such file: {p}" + (f" ({what})" if what else ""))
    return p


def _hdf5_kind(path: Path) -> str:
    import h5py

    if not h5py.is_hdf5(path):
        raise CliError(
            f"{path} is not an HDF5 file; give an .h5ad file, a 10x Genomics .h5 file or a "
            "10x mtx folder"
        )
    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            if "obs" in keys and "var" in keys:
                return "h5ad"
            if "matrix" in keys or any(
                isinstance(f[k], h5py.Group) and "barcodes" in f[k] for k in keys
            ):
                return "10x-h5"
    except OSError as e:
        raise CliError(
            f"cannot read {path}: {e}; the file is damaged or incomplete (write it again)"
        ) from e
    raise CliError(
        f"{path} is an HDF5 file but neither an h5ad (no obs/var) nor a 10x .h5 (no matrix "
        "group); convert it with scanpy or anndata first"
    )


def read_input(path: str | os.PathLike, fmt: str = "auto"):
    """An AnnData from an h5ad file, a 10x .h5 file or a 10x mtx folder."""
    p = check_exists(path)
    if fmt == "auto":
        fmt = "10x-mtx" if p.is_dir() else _hdf5_kind(p)
    try:
        if fmt == "10x-mtx":
            import scanpy as sc

            if not any((p / n).exists() for n in ("matrix.mtx", "matrix.mtx.gz")):
                raise CliError(
                    f"{p} is a folder without matrix.mtx(.gz); give a 10x mtx folder, an .h5ad "
                    "or a 10x .h5 file"
                )
            adata = sc.read_10x_mtx(p)
            adata.var_names_make_unique()
            return adata
        if fmt == "10x-h5":
            import scanpy as sc

            adata = sc.read_10x_h5(p)
            adata.var_names_make_unique()
            return adata
        import anndata as ad

        return ad.read_h5ad(p)
    except CliError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise CliError(
            f"cannot read {p} as {fmt} ({type(e).__name__}: {e}); check --input-format"
        ) from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def model_argument(value: str | None, stack: contextlib.ExitStack):
    """A registry name or folder as it is; a .tar of a model folder unpacked to a temporary one."""
    if value is None:
        return None
    p = Path(value)
    if p.is_file():
        if not tarfile.is_tarfile(p):
            raise CliError(
                f"--model {value} is a file but not a .tar of a model folder; give a registry "
                "name, a model folder or a .tar written by `sctransformer pretrain --archive`"
            )
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sct-model-")))
        with tarfile.open(p) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            for m in members:
                name = Path(m.name)
                if name.is_absolute() or ".." in name.parts:
                    raise CliError(f"--model {value}: unsafe path {m.name!r} in the archive")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(folder, members=members, filter="data")
            else:  # Python < 3.11.4: the members were checked above
                tar.extractall(folder, members=members)
        inner = [d for d in folder.iterdir() if d.is_dir()]
        if not (folder / "config.json").exists() and len(inner) == 1:
            return str(inner[0])
        return str(folder)
    return value


class Staged:
    """Outputs written to temporary files and folders, renamed into place only when all are.

    Use as a context manager: every temporary is removed when the block raises, and on success
    each output replaces its destination by a rename, in the order staged (stage the main output
    last), so a killed run
    leaves either no output or the previous one.
    """

    def __init__(self) -> None:
        self._items: list[tuple[Path, Path, bool]] = []

    def _folder_of(self, dest: Path) -> Path:
        folder = dest.parent if str(dest.parent) else Path(".")
        if not folder.is_dir():
            raise CliError(f"no such folder: {folder} (the output's folder must exist)")
        return folder

    def file(self, dest: str | os.PathLike) -> Path:
        dest = Path(dest)
        fd, tmp = tempfile.mkstemp(
            dir=self._folder_of(dest), prefix=f".{dest.name}.", suffix=".partial"
        )
        os.close(fd)
        self._items.append((Path(tmp), dest, False))
        return Path(tmp)

    def folder(self, dest: str | os.PathLike) -> Path:
        """A path (not yet created) where a folder for ``dest`` is to be written."""
        dest = Path(dest)
        holder = Path(
            tempfile.mkdtemp(dir=self._folder_of(dest), prefix=f".{dest.name}.", suffix=".partial")
        )
        self._items.append((holder, dest, True))
        return holder / "out"

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            for tmp, _, is_dir in self._items:
                if is_dir:
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()

    def _commit(self) -> None:
        mode = 0o666 & ~_umask()
        for tmp, _, is_dir in self._items:
            if not is_dir:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, mode)
            elif not (tmp / "out").exists():
                raise CliError(f"internal error: nothing was written to {tmp / 'out'}")
        for tmp, dest, is_dir in self._items:  # in the order staged: the main output last
            if is_dir:
                if dest.is_dir():
                    os.replace(dest, tmp / "previous")
                elif dest.exists():
                    dest.unlink()
                os.replace(tmp / "out", dest)
            else:
                os.replace(tmp, dest)
