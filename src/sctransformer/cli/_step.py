"""How a data subcommand runs: read INPUT, call one library function with the options of the
same name, record the run and write its outputs atomically (:class:`Step`).

The library is imported inside each call, never at module level.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ._io import CliError, Staged, model_argument, read_input

#: Gene-matching keywords passed only to functions whose signature has them.
GENE_MATCH = ("gene_key", "min_gene_fraction", "min_genes")
GENE_OPTIONS = " ".join(GENE_MATCH)


def import_sct():
    import sctransformer as sct

    return sct


def package_version() -> str:
    from .._version import __version__

    return __version__


def call(func, *args, **kw):
    """``func(*args, **kw)``; gene-match keywords go only where ``func`` takes them."""
    params = inspect.signature(func).parameters
    for k in GENE_MATCH:
        if k not in kw:
            continue
        if kw[k] is None:
            del kw[k]  # the function's own default
        elif k not in params:
            del kw[k]
            parts = func.__module__.split(".")
            where = f"sct.{parts[1]}." if parts[0] == "sctransformer" and len(parts) > 1 else ""
            warnings.warn(
                f"--{k.replace('_', '-')} is ignored: this version of "
                f"{where}{func.__name__} has no {k} option",
                UserWarning,
                stacklevel=2,
            )
    return func(*args, **kw)


def plain(value):
    """A value anndata writes to uns and JSON accepts: never None."""
    if value is None:
        return ""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def record(args, argv: list[str]) -> dict:
    """The run's parameters: argv, every resolved option and the package version."""
    options = {k: plain(v) for k, v in sorted(vars(args).items()) if k != "command"}
    return {
        "argv": ["sctransformer", *argv],
        "options": options,
        "version": package_version(),
    }


def store_record(adata, args, argv) -> None:
    runs = adata.uns.get("sct_cli")
    runs = dict(runs) if isinstance(runs, dict) else {}
    runs[args.command] = record(args, argv)
    adata.uns["sct_cli"] = runs


@contextlib.contextmanager
def counts_from(layer: str | None, *adatas):
    """Make ``layers[layer]`` the matrix the library reads (X), and put X back afterwards."""
    if not layer:
        yield
        return
    saved = []
    for a in adatas:
        if a is None:
            continue
        if layer not in a.layers:
            raise CliError(
                f"--counts-layer {layer!r}: no such layer (layers: {sorted(a.layers) or 'none'})"
            )
        saved.append((a, a.X))
        a.X = a.layers[layer]
    try:
        yield
    finally:
        for a, x in saved:
            a.X = x


def read_data(args):
    return read_input(args.input, args.input_format)


def write_h5ad(adata, args, argv, out: Staged) -> None:
    store_record(adata, args, argv)
    adata.write_h5ad(out.file(args.output))


def write_tsv(df, out: Staged, path: str, *, index: bool) -> None:
    df.to_csv(out.file(path), sep="\t", index=index)


def option_values(args, names: str) -> dict:
    """``{name: args.name}`` for space-separated option names: keywords of the same name."""
    return {name: getattr(args, name) for name in names.split()}


def save_figure(fig, args, argv, out: Staged) -> None:
    import matplotlib.pyplot as plt

    text = json.dumps(record(args, argv), sort_keys=True)
    key = {"png": "Description", "svg": "Description", "pdf": "Subject"}[args.format]
    meta = {
        key: text,
        "Software" if args.format == "png" else "Creator": f"sctransformer {package_version()}",
    }
    try:
        fig.savefig(
            out.file(args.output),
            format=args.format,
            dpi=args.dpi,
            bbox_inches="tight",
            metadata=meta,
        )
    finally:
        plt.close(fig)


def use_agg():
    import matplotlib

    matplotlib.use("Agg")


@dataclass(frozen=True)
class Step:
    """A data subcommand: read INPUT, call one library function, write its outputs atomically.

    ``options`` (space-separated) go to the function as keywords of the same name; the
    gene-match options follow where ``gene_match`` (and reach the function only if it takes
    them, see :func:`call`). ``model`` says how ``--model`` goes in: ``"positional"`` (after
    adata), ``"model"`` or ``"vocab"`` (a keyword; ``vocab`` loads it first) or ``None`` (the
    subcommand has no model). ``keywords(args)`` adds keywords computed from options;
    ``exports`` write extra outputs, staged in order before the main one, which is the figure
    the function returns (``figure``) or the h5ad.
    """

    func: str  # below ``sct``: "tl.embed_cells"
    options: str
    model: str | None = "positional"
    gene_match: bool = True
    counts_layer: bool = True
    keywords: Callable[..., dict] | None = None
    exports: tuple[Callable[..., None], ...] = ()
    figure: bool = False
    reference: bool = False

    def __call__(self, args, argv) -> None:
        if self.figure:
            use_agg()
        sct = import_sct()
        if self.reference and args.reference and not args.labels_key:
            raise CliError("--reference needs --labels-key (the obs column of its labels)")
        adata = read_data(args)
        ref = read_input(args.reference) if self.reference and args.reference else None
        package, name = self.func.split(".")
        func = getattr(getattr(sct, package), name)
        with contextlib.ExitStack() as stack, Staged() as out:
            model = model_argument(args.model, stack) if self.model else None
            with counts_from(args.counts_layer if self.counts_layer else None, adata, ref):
                kw = option_values(args, self.options)
                if self.model == "model":
                    kw["model"] = model
                elif self.model == "vocab":
                    kw["vocab"] = sct.models.load(model) if model else None
                if self.reference:
                    kw["reference"] = ref
                if self.keywords:
                    kw.update(self.keywords(args))
                if self.figure:
                    kw.update(show=False)
                positional = (model,) if self.model == "positional" else ()
                if self.gene_match:
                    result = call(
                        func, adata, *positional, **kw, **option_values(args, GENE_OPTIONS)
                    )
                else:
                    result = func(adata, *positional, **kw)
            for export in self.exports:
                export(adata, args, out, result)
            if self.figure:  # show=False returns the Axes (one panel) or the Figure
                save_figure(getattr(result, "figure", result), args, argv, out)
            else:
                write_h5ad(adata, args, argv, out)
