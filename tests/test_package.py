"""The package's public surface and its import cost."""

import subprocess
import sys

import sctransformer as sct


def test_public_modules():
    for name in ("pp", "tl", "pl", "models", "datasets", "settings", "__version__"):
        assert hasattr(sct, name), name
    assert sct.__version__.count(".") == 2


def test_import_does_not_load_torch():
    code = (
        "import sys, sctransformer; "
        "print([m in sys.modules for m in ('torch', 'matplotlib.pyplot', 'numba')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[False, False, False]", out.stdout


def test_progress_bar_is_quiet_in_log_files():
    # stderr is a pipe here, as in a pipeline's log: a 1.2 s loop gives its first and last
    # line, not one every 0.1 s
    code = (
        "import time; from sctransformer import logging as logg\n"
        "for _ in logg.progress(range(12), desc='step'): time.sleep(0.1)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    frames = [f for f in out.stderr.replace("\r", "\n").splitlines() if f.startswith("step")]
    assert 1 <= len(frames) <= 3, frames
    assert "12/12" in frames[-1]


def test_settings_validate_verbosity():
    old = sct.settings.verbosity
    sct.settings.verbosity = "info"
    assert sct.settings.verbosity == 2
    sct.settings.verbosity = old
    try:
        sct.settings.verbosity = "loud"
    except ValueError as e:
        assert "verbosity" in str(e)
    else:
        raise AssertionError("an unknown verbosity name must raise")


def test_every_subpackage_is_reachable_from_the_top():
    import subprocess
    import sys

    code = (
        "import sctransformer as sct; "
        "sct.nn.TransformerConfig; sct.nn.CellTransformer; sct.tokenizers.GeneVocab; sct.tl.embed_cells"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=900)
