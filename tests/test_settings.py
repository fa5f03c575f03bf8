"""sct.settings.override: temporary settings, restored on exit and on error."""

from __future__ import annotations

from pathlib import Path

import pytest

import sctransformer as sct


@pytest.fixture(autouse=True)
def _restore():
    s = sct.settings
    saved = (s.verbosity, s.progress_bars, s.cachedir, s.device, s.offline, s.n_jobs)
    yield
    s.verbosity, s.progress_bars, s.cachedir, s.device, s.offline, s.n_jobs = saved


def test_override_sets_then_restores(tmp_path):
    s = sct.settings
    s.verbosity, s.progress_bars, s.n_jobs = 2, True, None
    with s.override(verbosity="error", progress_bars=False, n_jobs=1, cachedir=tmp_path) as got:
        assert got is s
        assert (s.verbosity, s.progress_bars, s.n_jobs) == (0, False, 1)
        assert s.cachedir == tmp_path and s.effective_n_jobs() == 1
    assert (s.verbosity, s.progress_bars, s.n_jobs) == (2, True, None)
    assert s.cachedir != tmp_path


def test_override_restores_on_error():
    s = sct.settings
    s.device, s.offline = "auto", False
    with pytest.raises(RuntimeError, match="boom"), s.override(device="cpu", offline=True):
        assert (s.device, s.offline) == ("cpu", True)
        raise RuntimeError("boom")
    assert (s.device, s.offline) == ("auto", False)


def test_override_nests():
    s = sct.settings
    s.verbosity = 1
    with s.override(verbosity=3):
        with s.override(verbosity=0):
            assert s.verbosity == 0
        assert s.verbosity == 3
    assert s.verbosity == 1


def test_override_rejects_unknown_and_bad_values_leaving_settings_as_they_were():
    s = sct.settings
    s.verbosity, s.progress_bars = 1, True
    with pytest.raises(AttributeError, match=r"unknown setting.*verbose"), s.override(verbose=0):
        pass
    # a bad value fails on entry; what was set before it is put back
    with pytest.raises(ValueError, match="verbosity 'loud' unknown"):
        with s.override(progress_bars=False, verbosity="loud"):
            pass
    assert (s.verbosity, s.progress_bars) == (1, True)
    assert isinstance(s.cachedir, Path)


def test_override_silences_progress_bars_of_a_real_call(capsys):
    from conftest import nb_counts

    adata = nb_counts(20, 15, seed=1)
    with sct.settings.override(verbosity="info", progress_bars=True):
        sct.pp.tokenize(adata, method="rank", max_length=8)
    loud = capsys.readouterr().err
    adata = nb_counts(20, 15, seed=1)
    with sct.settings.override(verbosity="error", progress_bars=False):
        sct.pp.tokenize(adata, method="rank", max_length=8)
    assert capsys.readouterr().err == ""
    assert loud  # the info-level log line went to stderr when not silenced
