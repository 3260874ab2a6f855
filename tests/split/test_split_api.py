"""meshlearn.split's public API is explicit, and importing it does not load torch."""

import subprocess
import sys

import meshlearn.split as split


def test_every_exported_name_resolves():
    for name in split.__all__:
        assert getattr(split, name) is not None


def test_import_is_light():
    code = "import sys, meshlearn.split; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
