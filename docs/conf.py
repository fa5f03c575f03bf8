"""Sphinx configuration: MyST markdown and notebooks, autosummary API, numpy docstrings.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.

Two pages are completed from the code at build time, so they cannot drift from it:
``api.md`` lists every public function and class of each subpackage (its ``__all__``), and
``results.md`` collects the Returns section of every ``pp``/``tl`` function (the keys each
writes).
"""

from __future__ import annotations

import inspect
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

import sctransformer  # noqa: E402

project = "sctransformer"
author = "sctransformer developers"
copyright = "sctransformer developers"
release = sctransformer.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# notebooks carry their outputs; the docs build never runs them (CI runs them with nbmake)
nb_execution_mode = "off"
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# the stubs are written below from each subpackage's __all__ (autosummary's own scan reads the
# files on disk, before the API page is completed from the code)
autosummary_generate = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

html_theme = "sphinx_book_theme"
html_title = "sctransformer"
html_theme_options = {"show_toc_level": 2}

# ---------------------------------------------------------------- tutorials from tutorials/
TUTORIALS = ROOT / "tutorials"
TUTORIALS_COPY = HERE / "tutorials"


def _copy_tutorials() -> None:
    """Mirror ``tutorials/*.ipynb`` into ``docs/tutorials/`` (Sphinx reads only its source dir)."""
    TUTORIALS_COPY.mkdir(exist_ok=True)
    wanted = {p.name for p in TUTORIALS.glob("*.ipynb")}
    for old in TUTORIALS_COPY.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for src in sorted(TUTORIALS.glob("*.ipynb")):
        dst = TUTORIALS_COPY / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)


_copy_tutorials()

# ---------------------------------------------------------------- pages completed from code
API_MODULES = {
    "sctransformer.pp": "Preprocessing: tokenization",
    "sctransformer.tl": "Tools: pretraining, embeddings, annotation, networks, benchmarks",
    "sctransformer.pl": "Plots",
    "sctransformer.models": "Models: registry, loading, saving",
    "sctransformer.datasets": "Bundled data",
    "sctransformer.tokenizers": "Tokenizers (no AnnData)",
    "sctransformer.nn": "Neural network (torch only, no AnnData)",
}


def _public(modname: str) -> list[str]:
    import importlib

    mod = importlib.import_module(modname)
    names = []
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            names.append(name)
    return names


STUBS = HERE / "generated"


def _write_stubs() -> None:
    """One page per public object: ``generated/<module>.<name>.rst``."""
    import importlib

    if STUBS.exists():
        shutil.rmtree(STUBS)
    STUBS.mkdir()
    targets = [(m, n) for m in API_MODULES for n in _public(m)]
    targets.append(("sctransformer._settings", "SctSettings"))
    for modname, name in targets:
        obj = getattr(importlib.import_module(modname), name)
        full = f"{modname}.{name}"
        if inspect.isclass(obj):
            body = f".. autoclass:: {name}\n   :members:\n   :show-inheritance:\n"
        else:
            body = f".. autofunction:: {name}\n"
        text = f"{full}\n{'=' * len(full)}\n\n.. currentmodule:: {modname}\n\n{body}"
        (STUBS / f"{full}.rst").write_text(text)


def _api_listing() -> str:
    blocks = []
    for modname, title in API_MODULES.items():
        names = _public(modname)
        short = modname.replace("sctransformer", "sct")
        blocks.append(f"## `{short}`: {title}\n")
        rst = [
            ".. currentmodule:: " + modname,
            "",
            ".. autosummary::",
            "   :toctree: generated",
            "",
        ]
        rst += [f"   {n}" for n in names]
        blocks.append("```{eval-rst}\n" + "\n".join(rst) + "\n```\n")
    blocks.append("## `sct.settings`\n")
    blocks.append(
        "```{eval-rst}\n.. currentmodule:: sctransformer._settings\n\n"
        ".. autosummary::\n   :toctree: generated\n\n   SctSettings\n```\n"
    )
    return "\n".join(blocks)


def _returns_section(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    try:
        start = next(
            i for i, line in enumerate(lines[:-1]) if line == "Returns" and lines[i + 1] == "-" * 7
        )
    except StopIteration:
        return ""
    body = []
    for line in lines[start + 2 :]:
        if body and line and set(line) == {"-"}:  # the next section's underline
            body.pop()
            break
        body.append(line)
    return "\n".join(body).strip()


def _results_listing() -> str:
    blocks = []
    for modname in ("sctransformer.pp", "sctransformer.tl"):
        for name in _public(modname):
            import importlib

            obj = getattr(importlib.import_module(modname), name)
            if not inspect.isfunction(obj):
                continue
            text = _returns_section(obj)
            if not text:
                continue
            short = modname.replace("sctransformer", "sct")
            blocks.append(f"### `{short}.{name}`\n")
            blocks.append(
                f"```{{eval-rst}}\n.. currentmodule:: {modname}\n\n"
                f"From :func:`{name}`'s docstring:\n\n{text}\n```\n"
            )
    return "\n".join(blocks)


GENERATED = {
    "api": ("<!-- api-listing -->", _api_listing),
    "results": ("<!-- results-listing -->", _results_listing),
}


_write_stubs()


def _fill(app, docname, source):
    if docname in GENERATED:
        marker, make = GENERATED[docname]
        source[0] = source[0].replace(marker, make())


def setup(app):
    app.connect("source-read", _fill)
