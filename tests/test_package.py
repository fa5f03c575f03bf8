"""The package's public surface and its import cost."""

import subprocess
import sys

import sctransformer as sct


def test_public_modules():
    for name in ("pp", "tl", "pl", "models", "datasets", "settings", "__version__"):
        assert hasattr(sct, name), name
    assert sct.__version__.count(".") == 2


def test_import_does_not_load_torch():
    code = "import sys, sctransformer; print('torch' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout


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
