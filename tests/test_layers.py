"""The package layers are declared as import-linter contracts in pyproject.toml and checked here (and so in CI).

Three checks: the contracts hold on the code; a forbidden import added to a copy of the code breaks
them (so the check can fail); and the contracts themselves are pinned, so deleting a layer or a rule
is a failing test, not a silent loosening.
"""

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT = shutil.which("lint-imports")
pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter is not installed (pip install -e '.[test]')")

LAYERS = ["meshlearn.cli", "meshlearn.testing | meshlearn.experiment", "meshlearn.swarm",
          "meshlearn.fl | meshlearn.split", "meshlearn.overlay", "meshlearn.executors", "meshlearn.learn",
          "meshlearn.models | meshlearn.data",
          "meshlearn.sim | meshlearn.runtime", "meshlearn.host | meshlearn.store",
          "meshlearn.node | meshlearn.net | meshlearn.config", "meshlearn.wire",
          "meshlearn.study | meshlearn.registry | meshlearn._atomic", "meshlearn.errors"]


def lint(cwd: Path, src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([LINT, "--config", str(cwd / "pyproject.toml")], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_import_contracts_hold():
    result = lint(ROOT, ROOT / "src")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "6 kept, 0 broken" in result.stdout


def test_a_forbidden_import_breaks_them(tmp_path):
    shutil.copytree(ROOT / "src" / "meshlearn", tmp_path / "src" / "meshlearn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    node = tmp_path / "src" / "meshlearn" / "overlay" / "swim" / "node.py"
    node.write_text(node.read_text() + "\nimport meshlearn.sim.runtime  # a protocol module reaching for the simulator\n")
    server = tmp_path / "src" / "meshlearn" / "fl" / "server.py"
    server.write_text(server.read_text() + "\nimport torch  # a node module importing torch\n")
    probe = tmp_path / "src" / "meshlearn" / "swarm" / "probe.py"
    probe.write_text("import torch\nimport meshlearn.swarm.blocks  # a swarm node reaching for the model\n")
    result = lint(tmp_path, tmp_path / "src")
    assert result.returncode == 1
    assert "meshlearn.overlay.swim.node -> meshlearn.sim.runtime" in result.stdout
    assert "meshlearn.fl.server -> torch" in result.stdout
    assert "meshlearn.swarm.probe -> torch" in result.stdout
    assert "meshlearn.swarm.probe -> meshlearn.swarm.blocks" in result.stdout


def test_the_contracts_are_pinned():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert [c["type"] for c in contracts] == ["layers"] + ["forbidden"] * 5
    assert contracts[0]["layers"] == LAYERS
    assert contracts[1]["forbidden_modules"] == ["torch"] and "meshlearn.fl" in contracts[1]["source_modules"]
    assert "meshlearn.sim" in contracts[3]["forbidden_modules"]
    assert contracts[5]["forbidden_modules"] == ["torch", "meshlearn.swarm.blocks"]
