"""`meshlearn runs compare`: two stored runs side by side."""

import subprocess
import sys


def meshlearn(*args, env=None):
    return subprocess.run([sys.executable, "-m", "meshlearn", *map(str, args)], capture_output=True, text=True,
                          env=env)


def test_compare_prints_each_run_with_accuracy_bytes_and_time_to_accuracy(tmp_path):
    common = ["--set", "data.clients=5", "--set", "faults.crashes=[]", "--set", "fl.epochs=1", "-q",
              "--runs-dir", tmp_path]
    assert meshlearn("run", "quickstart", "--set", "fl.rounds=2", "--set", "name=avg", *common).returncode == 0
    assert meshlearn("run", "quickstart", "--set", "fl.rounds=3", "--set", "name=prox",
                     "--set", "fl.algorithm=fedprox", *common).returncode == 0
    out = meshlearn("runs", "compare", "avg", "prox", "--target", "0.5", "--runs-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("fedavg" in line and "│ 2 " in line for line in lines)
    assert any("fedprox" in line and "│ 3 " in line for line in lines)
    assert "s to 50%" in out.stdout


def test_compare_rejects_a_bad_target_and_unknown_runs(tmp_path):
    bad = meshlearn("runs", "compare", "x", "--target", "7", "--runs-dir", tmp_path)
    assert bad.returncode == 2 and "--target" in bad.stderr and "Traceback" not in bad.stderr
    missing = meshlearn("runs", "compare", "nothing", "--runs-dir", tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
