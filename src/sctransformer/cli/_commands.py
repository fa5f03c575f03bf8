"""The subcommands: read, call one library function, record the run, write atomically.

The library is imported inside each command, never at module level.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._io import CliError, Staged, check_exists, model_argument, read_input

#: Gene-matching keywords passed only to functions whose signature has them.
GENE_MATCH = ("gene_key", "min_gene_fraction", "min_genes")


def _sct():
    import sctransformer as sct

    return sct


def _version() -> str:
    from .._version import __version__

    return __version__


@contextlib.contextmanager
def settings_restored():
    """Package settings and torch threads as they were before the run (for in-process use)."""
    from .._settings import settings

    saved = (settings.verbosity, settings.progress_bars, settings.n_jobs)
    torch_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    try:
        yield
    finally:
        settings.verbosity, settings.progress_bars, settings.n_jobs = saved
        if torch_threads is not None:
            sys.modules["torch"].set_num_threads(torch_threads)


def _apply_settings(args, *, torch: bool) -> None:
    from .._settings import settings

    if args.quiet:
        settings.verbosity, settings.progress_bars = 0, False
    elif not sys.stderr.isatty():
        settings.progress_bars = False  # logs of pipelines and Galaxy: messages, not bars
    if args.threads:
        settings.n_jobs = args.threads
        if torch:
            import torch as _torch

            _torch.set_num_threads(args.threads)


def _call(func, *args, **kw):
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


def _plain(value):
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
    options = {k: _plain(v) for k, v in sorted(vars(args).items()) if k != "command"}
    return {
        "argv": ["sctransformer", *argv],
        "options": options,
        "version": _version(),
    }


def _store_record(adata, args, argv) -> None:
    runs = adata.uns.get("sct_cli")
    runs = dict(runs) if isinstance(runs, dict) else {}
    runs[args.command] = record(args, argv)
    adata.uns["sct_cli"] = runs


@contextlib.contextmanager
def _counts_from(layer: str | None, *adatas):
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


def _read(args):
    return read_input(args.input, args.input_format)


def _write_h5ad(adata, args, argv, out: Staged) -> None:
    _store_record(adata, args, argv)
    adata.write_h5ad(out.file(args.output))


def _embedding_table(x, index, prefix: str):
    import numpy as np
    import pandas as pd

    x = np.asarray(x)
    return pd.DataFrame(x, index=index, columns=[f"{prefix}{i}" for i in range(x.shape[1])])


def _tsv(df, out: Staged, path: str, *, index: bool) -> None:
    df.to_csv(out.file(path), sep="\t", index=index)


def _layers_arg(values):
    """``--layers`` values: one int, a list of ints, or "all"."""
    if "all" in values:
        return "all"
    return values[0] if len(values) == 1 else list(values)


def _heads_arg(values, *, words):
    if len(values) == 1 and values[0] in words:
        return values[0]
    try:
        return [int(v) for v in values]
    except ValueError:
        raise CliError(
            f"--heads takes {' or '.join(words)} or 0-based head indices, got {values}"
        ) from None


# --- commands ----------------------------------------------------------------------------------

GENE_OPTIONS = " ".join(GENE_MATCH)
#: The runtime and key options that _parser._model_options declares (with precision, chunks).
MODEL_RUN = "batch_size chunk_size precision device tokens_key key_added"


def _options(args, names: str) -> dict:
    """``{name: args.name}`` for space-separated option names: keywords of the same name."""
    return {name: getattr(args, name) for name in names.split()}


def _unset_none(value):
    """``--normalize none``: the function's None."""
    return None if value == "none" else value


def _attention_keywords(args, *, heads: tuple[str, ...]) -> dict:
    """``--layers``, ``--heads`` and ``--normalize`` of the attention subcommands."""
    return {
        "layers": _layers_arg(args.layers),
        "heads": _heads_arg(args.heads, words=heads),
        "normalize": _unset_none(args.normalize),
    }


def _embedding_export(option: str, slot: str, names: str):
    """Write ``adata.<slot>[key_added]`` (rows named by ``adata.<names>``) to ``--<option>``."""

    def export(adata, args, out: Staged, result) -> None:
        if getattr(args, option):
            x = getattr(adata, slot)[args.key_added]
            table = _embedding_table(x, getattr(adata, names), "dim")
            _tsv(table, out, getattr(args, option), index=True)

    return export


def _uns_export(option: str, part: str, *, default=None):
    """Write ``adata.uns[key_added][part]`` to ``--<option>`` (else to ``default(args)``)."""

    def export(adata, args, out: Staged, result) -> None:
        path = getattr(args, option) or (default(args) if default else None)
        if path:
            _tsv(adata.uns[args.key_added][part], out, path, index=False)

    return export


def _save_annotator(adata, args, out: Staged, annotator) -> None:
    if args.save_annotator:
        annotator.save(out.folder(args.save_annotator))


def _export_labels(adata, args, out: Staged, result) -> None:
    if args.export_labels:
        k = args.key_added
        cols = [c for c in (k, f"{k}_score") if c in adata.obs]
        _tsv(adata.obs[cols], out, args.export_labels, index=True)


@dataclass(frozen=True)
class Step:
    """A data subcommand: read INPUT, call one library function, write its outputs atomically.

    ``options`` (space-separated) go to the function as keywords of the same name; the
    gene-match options follow where ``gene_match`` (and reach the function only if it takes
    them, see :func:`_call`). ``model`` says how ``--model`` goes in: ``"positional"`` (after
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
            _agg()
        sct = _sct()
        if self.reference and args.reference and not args.labels_key:
            raise CliError("--reference needs --labels-key (the obs column of its labels)")
        adata = _read(args)
        ref = read_input(args.reference) if self.reference and args.reference else None
        package, name = self.func.split(".")
        func = getattr(getattr(sct, package), name)
        with contextlib.ExitStack() as stack, Staged() as out:
            model = model_argument(args.model, stack) if self.model else None
            with _counts_from(args.counts_layer if self.counts_layer else None, adata, ref):
                kw = _options(args, self.options)
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
                    result = _call(func, adata, *positional, **kw, **_options(args, GENE_OPTIONS))
                else:
                    result = func(adata, *positional, **kw)
            for export in self.exports:
                export(adata, args, out, result)
            if self.figure:  # show=False returns the Axes (one panel) or the Figure
                _save_figure(getattr(result, "figure", result), args, argv, out)
            else:
                _write_h5ad(adata, args, argv, out)


def cmd_pretrain(args, argv):
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out, _counts_from(args.counts_layer, adata):
        model_in = model_argument(args.model, stack)
        if args.max_length and f"{args.tokens_key}_tokens" not in adata.obsm:
            sct.pp.tokenize(
                adata,
                vocab=sct.models.load(model_in) if model_in else None,
                key_added=args.tokens_key,
                **_options(args, "method max_length batch_key seed"),
            )
        model = sct.tl.pretrain(
            adata,
            model=model_in,
            **_options(
                args,
                "objective method tokens_key batch_key epochs max_steps batch_size lr "
                "weight_decay warmup_steps clip mask_prob precision device seed checkpoint_dir "
                "checkpoint_every resume_from",
            ),
        )
        if args.export_history:
            _tsv(adata.uns["sct_pretrain"]["history"], out, args.export_history, index=False)
        meta = {"sct_cli": {"pretrain": record(args, argv)}}
        if args.archive:
            import tarfile

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "model"
            sct.models.save(model, folder, metadata=meta)
            with tarfile.open(out.file(args.output), "w") as tar:
                for f in sorted(folder.iterdir()):
                    tar.add(f, arcname=f.name)
        else:
            sct.models.save(model, out.folder(args.output), metadata=meta)


def _save_figure(fig, args, argv, out: Staged) -> None:
    import matplotlib.pyplot as plt

    text = json.dumps(record(args, argv), sort_keys=True)
    key = {"png": "Description", "svg": "Description", "pdf": "Subject"}[args.format]
    meta = {
        key: text,
        "Software" if args.format == "png" else "Creator": f"sctransformer {_version()}",
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


def _agg():
    import matplotlib

    matplotlib.use("Agg")


def _registered(name: str):
    from ..models._registry import REGISTRY

    if name not in REGISTRY:
        raise CliError(
            f"{name!r} is not a registered model; `sctransformer models list` shows the names "
            f"({', '.join(sorted(REGISTRY))})"
        )
    return REGISTRY[name]


def cmd_models(args, argv):
    sct = _sct()
    action = args.models_command
    if action == "list":
        import pandas as pd

        table = sct.models.available()
        if args.tsv:
            table.to_csv(sys.stdout, sep="\t")
            return
        with pd.option_context("display.max_colwidth", 90, "display.width", 250):
            print(table[["size_mb", "cached", "description"]].to_string())
        return
    entry = _registered(args.name)
    if action == "files":
        if entry.bundled:
            print(f"{args.name} ships inside the package ({entry.location()}): nothing to place")
            return
        sct.models.files(args.name).to_csv(sys.stdout, sep="\t")
        return
    # fetch: download (sha256-checked by the registry), convert, cache; print the folder
    sct.models.load(args.name)
    folder = entry.location() if entry.bundled else entry.cache_folder() / "converted"
    if args.output:
        import shutil

        with Staged() as out:
            shutil.copytree(folder, out.folder(args.output))
        folder = Path(args.output)
    print(folder)


def cmd_demo(args, argv):
    from ..demo import run_demo

    run_demo(Path(args.out), pretrain=args.pretrain, epochs=args.epochs)


COMMANDS = {
    "tokenize": (
        Step(
            "pp.tokenize",
            "method layer gene_key max_length target_sum normalize n_bins bin_width select "
            "include_zeros add_cls add_eos pad_value gene_medians batch_key seed "
            "min_gene_fraction chunk_size key_added",
            model="vocab",
            gene_match=False,
            counts_layer=False,
        ),
        False,
    ),
    "pretrain": (cmd_pretrain, True),
    "embed": (
        Step(
            "tl.embed_cells",
            f"pooling layer {MODEL_RUN}",
            exports=(_embedding_export("export_embedding", "obsm", "obs_names"),),
        ),
        True,
    ),
    "embed-genes": (
        Step(
            "tl.embed_genes",
            f"groupby layer {MODEL_RUN}",
            exports=(_embedding_export("export_embedding", "varm", "var_names"),),
        ),
        True,
    ),
    "annotate": (
        Step(
            "tl.annotate",
            "labels_key method freeze batch_key pooling layer epochs batch_size lr encoder_lr "
            "weight_decay class_weight validation_fraction patience n_neighbors "
            "unknown_threshold precision device seed key_added",
            reference=True,
            exports=(_save_annotator, _export_labels),
        ),
        True,
    ),
    "grn": (
        Step(
            "tl.attention_grn",
            "groupby genes method symmetrize threshold min_cells n_permutations n_top_genes "
            "batch_size chunk_size device tokens_key key_added",
            keywords=lambda args: {
                **_attention_keywords(args, heads=("mean", "all")),
                "top_k": args.top_k or None,
                "compare": tuple(args.compare) if args.compare else None,
            },
            exports=(_uns_export("export_edges", "edges"),),
        ),
        True,
    ),
    "perturb": (
        Step(
            "tl.in_silico_perturb",
            f"genes mode groupby target gene_shifts pooling layer {MODEL_RUN}",
            exports=(_uns_export("export_table", "table"),),
        ),
        True,
    ),
    "benchmark": (
        Step(
            "tl.benchmark",
            "labels_key split_key test_groups test_size methods tasks n_folds seeds layer "
            "n_top_genes n_pcs cv batch_key annotate_kwds batch_size precision device seed "
            "key_added",
            model="model",
            counts_layer=False,
            keywords=lambda args: (
                {"test_adata": read_input(args.test_data)} if args.test_data else {}
            ),
            exports=(
                _uns_export(
                    "table",
                    "table",
                    default=lambda args: str(Path(args.output).with_suffix(".tsv")),
                ),
            ),
        ),
        True,
    ),
    "plot-heads": (
        Step(
            "pl.attention_heads",
            "genes cells key batch_size device tokens_key cmap vmin vmax panel_size",
            gene_match=False,
            keywords=lambda args: _attention_keywords(args, heads=("all",)),
            figure=True,
        ),
        True,
    ),
    "plot-grn": (
        Step(
            "pl.grn",
            "group top key layout seed node_size",
            model=None,
            gene_match=False,
            counts_layer=False,
            figure=True,
        ),
        False,
    ),
    "models": (cmd_models, False),
    "demo": (cmd_demo, True),
}


def run(args, argv: list[str]) -> None:
    func, uses_torch = COMMANDS[args.command]
    if getattr(args, "input", None) is not None:
        check_exists(args.input)
    if getattr(args, "reference", None):
        check_exists(args.reference, "--reference")
    _apply_settings(args, torch=uses_torch)
    func(args, argv)
