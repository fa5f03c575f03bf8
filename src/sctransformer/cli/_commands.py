"""The subcommands: each one's library function and options (:data:`COMMANDS`), and the
subcommands that are not one :class:`~._step.Step` (``pretrain``, ``models``, ``demo``).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from ._io import CliError, Staged, check_exists, model_argument, read_input
from ._step import (
    Step,
    counts_from,
    import_sct,
    option_values,
    read_data,
    record,
    write_tsv,
)


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


def _embedding_table(x, index, prefix: str):
    import numpy as np
    import pandas as pd

    x = np.asarray(x)
    return pd.DataFrame(x, index=index, columns=[f"{prefix}{i}" for i in range(x.shape[1])])


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

#: The runtime and key options that _options.model_options declares (with precision, chunks).
MODEL_RUN = "batch_size chunk_size precision device tokens_key key_added"


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
            write_tsv(table, out, getattr(args, option), index=True)

    return export


def _uns_export(option: str, part: str, *, default=None):
    """Write ``adata.uns[key_added][part]`` to ``--<option>`` (else to ``default(args)``)."""

    def export(adata, args, out: Staged, result) -> None:
        path = getattr(args, option) or (default(args) if default else None)
        if path:
            write_tsv(adata.uns[args.key_added][part], out, path, index=False)

    return export


def _save_annotator(adata, args, out: Staged, annotator) -> None:
    if args.save_annotator:
        annotator.save(out.folder(args.save_annotator))


def _export_labels(adata, args, out: Staged, result) -> None:
    if args.export_labels:
        k = args.key_added
        cols = [c for c in (k, f"{k}_score") if c in adata.obs]
        write_tsv(adata.obs[cols], out, args.export_labels, index=True)


def cmd_pretrain(args, argv):
    sct = import_sct()
    adata = read_data(args)
    with contextlib.ExitStack() as stack, Staged() as out, counts_from(args.counts_layer, adata):
        model_in = model_argument(args.model, stack)
        if args.max_length and f"{args.tokens_key}_tokens" not in adata.obsm:
            sct.pp.tokenize(
                adata,
                vocab=sct.models.load(model_in) if model_in else None,
                key_added=args.tokens_key,
                **option_values(args, "method max_length batch_key seed"),
            )
        model = sct.tl.pretrain(
            adata,
            model=model_in,
            **option_values(
                args,
                "objective method tokens_key batch_key epochs max_steps batch_size lr "
                "weight_decay warmup_steps clip mask_prob precision device seed checkpoint_dir "
                "checkpoint_every resume_from",
            ),
        )
        if args.export_history:
            write_tsv(adata.uns["sct_pretrain"]["history"], out, args.export_history, index=False)
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


def _registered(name: str):
    from ..models._published import REGISTRY

    if name not in REGISTRY:
        raise CliError(
            f"{name!r} is not a registered model; `sctransformer models list` shows the names "
            f"({', '.join(sorted(REGISTRY))})"
        )
    return REGISTRY[name]


def cmd_models(args, argv):
    sct = import_sct()
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
