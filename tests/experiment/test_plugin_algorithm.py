"""A plugin algorithm from another package: found through its entry point, configured, run, listed.

The plugin is examples/custom_algorithm.py (the guide's "Adding an algorithm" walkthrough), installed
here the way pip would: a module plus a dist-info folder declaring the entry point, on PYTHONPATH.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_algorithm.py"


@pytest.fixture
def plugin_env(tmp_path):
    site = tmp_path / "site"
    dist = site / "meshlearn_fedmedian-0.1.dist-info"
    dist.mkdir(parents=True)
    shutil.copy(EXAMPLE, site / "meshlearn_fedmedian.py")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: meshlearn-fedmedian\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[meshlearn.algorithms]\nfedmedian = meshlearn_fedmedian:SPEC\n")
    env = {k: v for k, v in os.environ.items() if k != "MESHLEARN_RUNS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def meshlearn(env, *args):
    return subprocess.run([sys.executable, "-m", "meshlearn", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def test_an_entry_point_algorithm_is_configured_run_and_listed(plugin_env, tmp_path):
    shown = meshlearn(plugin_env, "config", "show")
    assert shown.returncode == 0 and "[fedmedian]" in shown.stdout and "min_updates = 3" in shown.stdout
    run = meshlearn(plugin_env, "run", "quickstart", "--set", "fl.algorithm=fedmedian", "--set", "fl.rounds=2",
                    "--set", "data.clients=5", "--set", "faults.crashes=[]", "-q", "--runs-dir", tmp_path / "runs")
    assert run.returncode == 0, run.stderr
    assert "fedmedian" in run.stdout and "completed" in run.stdout
    listed = meshlearn(plugin_env, "runs", "list", "--runs-dir", tmp_path / "runs")
    assert "fedmedian" in listed.stdout


def test_without_the_plugin_the_name_is_refused_listing_the_valid_ones(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MESHLEARN_RUNS"}
    run = meshlearn(env, "run", "quickstart", "--set", "fl.algorithm=fedmedian", "--runs-dir", tmp_path / "runs")
    assert run.returncode == 2 and "unknown algorithm 'fedmedian'" in run.stderr and "fedavg" in run.stderr
    assert not (tmp_path / "runs").exists()


def test_the_walkthrough_example_runs_as_a_script():
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fedmedian: completed" in out.stdout
