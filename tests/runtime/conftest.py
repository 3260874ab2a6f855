"""The suite runs with --import-mode=importlib, so test folders are not on sys.path; put this
one there so the runtime tests can share `rt_helpers` (a name unique across the suite)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
