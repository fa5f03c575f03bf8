"""The shared docstring fragments: filled in at import time, indented like their placeholder."""

import inspect

import pytest

import sctransformer as sct
from sctransformer._docs import doc_params, doc_show_save


def test_placeholder_replaced_with_its_indentation():
    @doc_params(frag="a\n    b")
    def f():
        """Summary.

        Parameters
        ----------
        {frag}
        x
            Last.
        """

    lines = inspect.getdoc(f).splitlines()
    assert lines[4:8] == ["a", "    b", "x", "    Last."]


def test_unknown_placeholder_fails_at_decoration():
    with pytest.raises(KeyError, match="missing"):

        @doc_params(frag="a")
        def f():
            """Summary.

            {missing}
            """


def test_public_plot_docstrings_carry_the_full_text():
    for name in ("attention_heads", "benchmark", "grn", "training_history", "perturbation"):
        doc = inspect.getdoc(getattr(sct.pl, name))
        assert "{" + "doc_" not in doc
        assert inspect.cleandoc(doc_show_save) in doc, name
