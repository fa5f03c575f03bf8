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


def cmd_tokenize(args, argv):
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out:
        model = model_argument(args.model, stack)
        vocab = sct.models.load(model) if model else None
        sct.pp.tokenize(
            adata,
            method=args.method,
            vocab=vocab,
            layer=args.layer,
            gene_key=args.gene_key,
            max_length=args.max_length,
            target_sum=args.target_sum,
            normalize=args.normalize,
            n_bins=args.n_bins,
            bin_width=args.bin_width,
            select=args.select,
            include_zeros=args.include_zeros,
            add_cls=args.add_cls,
            add_eos=args.add_eos,
            pad_value=args.pad_value,
            gene_medians=args.gene_medians,
            batch_key=args.batch_key,
            seed=args.seed,
            min_gene_fraction=args.min_gene_fraction,
            chunk_size=args.chunk_size,
            key_added=args.key_added,
        )
        _write_h5ad(adata, args, argv, out)


def cmd_pretrain(args, argv):
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out, _counts_from(args.counts_layer, adata):
        model_in = model_argument(args.model, stack)
        if args.max_length and f"{args.tokens_key}_tokens" not in adata.obsm:
            sct.pp.tokenize(
                adata,
                method=args.method,
                vocab=sct.models.load(model_in) if model_in else None,
                max_length=args.max_length,
                batch_key=args.batch_key,
                seed=args.seed,
                key_added=args.tokens_key,
            )
        model = sct.tl.pretrain(
            adata,
            model=model_in,
            objective=args.objective,
            method=args.method,
            tokens_key=args.tokens_key,
            batch_key=args.batch_key,
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            clip=args.clip,
            mask_prob=args.mask_prob,
            precision=args.precision,
            device=args.device,
            seed=args.seed,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            resume_from=args.resume_from,
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


def _model_task(args, stack):
    return model_argument(args.model, stack)


def cmd_embed(args, argv):
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out:
        model = _model_task(args, stack)
        with _counts_from(args.counts_layer, adata):
            _call(
                sct.tl.embed_cells,
                adata,
                model,
                pooling=args.pooling,
                layer=args.layer,
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                precision=args.precision,
                device=args.device,
                tokens_key=args.tokens_key,
                key_added=args.key_added,
                gene_key=args.gene_key,
                min_gene_fraction=args.min_gene_fraction,
                min_genes=args.min_genes,
            )
        if args.export_embedding:
            table = _embedding_table(adata.obsm[args.key_added], adata.obs_names, "dim")
            _tsv(table, out, args.export_embedding, index=True)
        _write_h5ad(adata, args, argv, out)


def cmd_embed_genes(args, argv):
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out:
        model = _model_task(args, stack)
        with _counts_from(args.counts_layer, adata):
            _call(
                sct.tl.embed_genes,
                adata,
                model,
                groupby=args.groupby,
                layer=args.layer,
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                precision=args.precision,
                device=args.device,
                tokens_key=args.tokens_key,
                key_added=args.key_added,
                gene_key=args.gene_key,
                min_gene_fraction=args.min_gene_fraction,
                min_genes=args.min_genes,
            )
        if args.export_embedding:
            table = _embedding_table(adata.varm[args.key_added], adata.var_names, "dim")
            _tsv(table, out, args.export_embedding, index=True)
        _write_h5ad(adata, args, argv, out)


def cmd_annotate(args, argv):
    sct = _sct()
    if args.reference and not args.labels_key:
        raise CliError("--reference needs --labels-key (the obs column of its labels)")
    adata = _read(args)
    ref = read_input(args.reference) if args.reference else None
    with contextlib.ExitStack() as stack, Staged() as out:
        model = _model_task(args, stack)
        with _counts_from(args.counts_layer, adata, ref):
            annotator = _call(
                sct.tl.annotate,
                adata,
                model,
                reference=ref,
                labels_key=args.labels_key,
                method=args.method,
                freeze=args.freeze,
                batch_key=args.batch_key,
                pooling=args.pooling,
                layer=args.layer,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                encoder_lr=args.encoder_lr,
                weight_decay=args.weight_decay,
                class_weight=args.class_weight,
                validation_fraction=args.validation_fraction,
                patience=args.patience,
                n_neighbors=args.n_neighbors,
                unknown_threshold=args.unknown_threshold,
                precision=args.precision,
                device=args.device,
                seed=args.seed,
                key_added=args.key_added,
                gene_key=args.gene_key,
                min_gene_fraction=args.min_gene_fraction,
                min_genes=args.min_genes,
            )
        if args.save_annotator:
            annotator.save(out.folder(args.save_annotator))
        if args.export_labels:
            k = args.key_added
            cols = [c for c in (k, f"{k}_score") if c in adata.obs]
            _tsv(adata.obs[cols], out, args.export_labels, index=True)
        _write_h5ad(adata, args, argv, out)


def cmd_grn(args, argv):
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out:
        model = _model_task(args, stack)
        with _counts_from(args.counts_layer, adata):
            _call(
                sct.tl.attention_grn,
                adata,
                model,
                groupby=args.groupby,
                layers=_layers_arg(args.layers),
                heads=_heads_arg(args.heads, words=("mean", "all")),
                genes=args.genes,
                normalize=None if args.normalize == "none" else args.normalize,
                symmetrize=args.symmetrize,
                top_k=args.top_k or None,
                threshold=args.threshold,
                min_cells=args.min_cells,
                n_top_genes=args.n_top_genes,
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                device=args.device,
                tokens_key=args.tokens_key,
                key_added=args.key_added,
                gene_key=args.gene_key,
                min_gene_fraction=args.min_gene_fraction,
                min_genes=args.min_genes,
            )
        if args.export_edges:
            _tsv(adata.uns[args.key_added]["edges"], out, args.export_edges, index=False)
        _write_h5ad(adata, args, argv, out)


def cmd_perturb(args, argv):
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out:
        model = _model_task(args, stack)
        with _counts_from(args.counts_layer, adata):
            _call(
                sct.tl.in_silico_perturb,
                adata,
                model,
                genes=args.genes,
                mode=args.mode,
                groupby=args.groupby,
                target=args.target,
                gene_shifts=args.gene_shifts,
                pooling=args.pooling,
                layer=args.layer,
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                precision=args.precision,
                device=args.device,
                tokens_key=args.tokens_key,
                key_added=args.key_added,
                gene_key=args.gene_key,
                min_gene_fraction=args.min_gene_fraction,
                min_genes=args.min_genes,
            )
        if args.export_table:
            _tsv(adata.uns[args.key_added]["table"], out, args.export_table, index=False)
        _write_h5ad(adata, args, argv, out)


def cmd_benchmark(args, argv):
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out:
        model = _model_task(args, stack)
        _call(
            sct.tl.benchmark,
            adata,
            labels_key=args.labels_key,
            split_key=args.split_key,
            test_groups=args.test_groups,
            test_size=args.test_size,
            methods=args.methods,
            model=model,
            layer=args.layer,
            n_top_genes=args.n_top_genes,
            n_pcs=args.n_pcs,
            cv=args.cv,
            batch_key=args.batch_key,
            annotate_kwds=args.annotate_kwds,
            batch_size=args.batch_size,
            precision=args.precision,
            device=args.device,
            seed=args.seed,
            key_added=args.key_added,
            gene_key=args.gene_key,
            min_gene_fraction=args.min_gene_fraction,
            min_genes=args.min_genes,
        )
        table = args.table or str(Path(args.output).with_suffix(".tsv"))
        _tsv(adata.uns[args.key_added]["table"], out, table, index=False)
        _write_h5ad(adata, args, argv, out)


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


def cmd_plot_heads(args, argv):
    _agg()
    sct = _sct()
    adata = _read(args)
    with contextlib.ExitStack() as stack, Staged() as out:
        model = _model_task(args, stack)
        with _counts_from(args.counts_layer, adata):
            fig = sct.pl.attention_heads(
                adata,
                model,
                genes=args.genes,
                cells=args.cells,
                layers=_layers_arg(args.layers),
                heads=_heads_arg(args.heads, words=("all",)),
                normalize=None if args.normalize == "none" else args.normalize,
                key=args.key,
                batch_size=args.batch_size,
                device=args.device,
                tokens_key=args.tokens_key,
                cmap=args.cmap,
                vmin=args.vmin,
                vmax=args.vmax,
                panel_size=args.panel_size,
                show=False,
                return_fig=True,
            )
        _save_figure(fig, args, argv, out)


def cmd_plot_grn(args, argv):
    _agg()
    sct = _sct()
    adata = _read(args)
    with Staged() as out:
        fig = sct.pl.grn(
            adata,
            group=args.group,
            top=args.top,
            key=args.key,
            layout=args.layout,
            seed=args.seed,
            node_size=args.node_size,
            show=False,
            return_fig=True,
        )
        _save_figure(fig, args, argv, out)


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
    "tokenize": (cmd_tokenize, False),
    "pretrain": (cmd_pretrain, True),
    "embed": (cmd_embed, True),
    "embed-genes": (cmd_embed_genes, True),
    "annotate": (cmd_annotate, True),
    "grn": (cmd_grn, True),
    "perturb": (cmd_perturb, True),
    "benchmark": (cmd_benchmark, True),
    "plot-heads": (cmd_plot_heads, True),
    "plot-grn": (cmd_plot_grn, False),
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
