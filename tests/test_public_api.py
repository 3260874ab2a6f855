"""The public API is explicit: __all__ lists exactly the public names, and importing is light."""

import subprocess
import sys
from types import ModuleType

import meshlearn


def test_all_matches_public_names():
    public = sorted(n for n in dir(meshlearn) if not n.startswith("_")
                    and not isinstance(getattr(meshlearn, n), ModuleType))
    assert sorted(meshlearn.__all__) == public


def test_every_exported_name_resolves():
    for name in meshlearn.__all__:
        assert getattr(meshlearn, name) is not None


def test_import_does_not_load_torch():
    code = "import sys, meshlearn; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
