"""Shared numpydoc parameter texts and :func:`doc_params`, which puts them into docstrings.

A docstring line holding only ``{name}`` is replaced, at import time, by the fragment passed
as ``name=`` to :func:`doc_params`, indented like the placeholder; ``help(fn)`` and the API
reference therefore show the full text.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

doc_show_save = """\
show
    Show the figure. ``None``: show it unless ``save`` is given.
save
    Write the figure to this path, the format taken from the extension (``.png``, ``.pdf``,
    ``.svg``); written to a temporary file in the same folder, then renamed.
return_fig
    Deprecated: use ``show=False``. Returns the Figure, with a ``FutureWarning``."""

doc_show_save_ax = (
    """\
ax
    Draw into this Axes.
"""
    + doc_show_save
)

doc_gene_match = """\
gene_key
    A ``var`` column with the names to match against the vocabulary (e.g. Ensembl IDs);
    default: the column the model was tokenized with when present, else ``var_names``.
min_gene_fraction, min_genes
    Refuse data where fewer than this fraction of genes, or fewer than ``min_genes``
    genes, are in the model's vocabulary."""

_PLACEHOLDER = re.compile(r"^([ \t]*)\{(\w+)\}[ \t]*$", re.MULTILINE)


def doc_params(**fragments: str) -> Callable[[F], F]:
    """Decorator replacing each ``{name}`` line of the docstring by ``fragments[name]``.

    Raises :class:`KeyError` at import time for a placeholder without a fragment, so a typo
    cannot reach the rendered documentation.
    """

    def decorate(fn: F) -> F:
        doc = fn.__doc__
        if doc is not None:

            def fill(match: re.Match) -> str:
                return textwrap.indent(fragments[match.group(2)], match.group(1))

            fn.__doc__ = _PLACEHOLDER.sub(fill, doc)
        return fn

    return decorate
