"""Fixtures for the command-line tests.

Two ways to call the CLI, both through `meshlearn.cli.main` (so its error handling is tested):
- `cli(...)`: in-process, fast; for help, config and usage errors that never reach torch training;
- `cli_proc(...)`: `python -m meshlearn` in a subprocess; for the real entry point and for commands
  that train or load data (they set torch's global thread count, which must not leak into this process).
Both run in a temporary directory with no MESHLEARN_SECRET and MESHLEARN_RUNS pointing into it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshlearn.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


def _env(runs: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MESHLEARN_SECRET", "MESHLEARN_RUNS")}
    env.update(MESHLEARN_RUNS=str(runs), COLUMNS="200", NO_COLOR="1", PYTHONWARNINGS="ignore")
    return env


def run_proc(args: list[str], cwd: Path, runs: Path, timeout: float = 120) -> Result:
    proc = subprocess.run([sys.executable, "-m", "meshlearn", *map(str, args)], cwd=cwd, env=_env(runs),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A clean working directory; its `runs/` is the default run store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MESHLEARN_SECRET", raising=False)
    monkeypatch.setenv("MESHLEARN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


@pytest.fixture
def cli(workdir, capsys):
    """Call `meshlearn.cli.main(argv)` in-process; returns exit code, stdout and stderr."""
    def call(*args) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return call


@pytest.fixture
def cli_proc(workdir):
    """Run `python -m meshlearn ...` in a subprocess."""
    return lambda *args, timeout=120: run_proc(list(args), workdir, workdir / "runs", timeout)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory) -> tuple[Path, Result]:
    """One finished 2-round, 5-client quickstart run in a fresh run store: (runs dir, result of `run`)."""
    root = tmp_path_factory.mktemp("stored")
    runs = root / "runs"
    # the quickstart crashes client-07, which 5 clients do not have: drop the crash
    result = run_proc(["run", "quickstart", "--set", "fl.rounds=2", "--set", "data.clients=5",
                       "--set", "faults.crashes=[]", "-q", "--runs-dir", runs], root, root / "elsewhere")
    assert result.code == 0, result.err
    return runs, result


def assert_usage_error(result: Result, *needles: str) -> None:
    """Exit 2, one `error:` message on stderr naming every needle, and no traceback."""
    assert result.code == 2, (result.code, result.out, result.err)
    assert_clean_error(result, *needles)


def assert_clean_error(result: Result, *needles: str) -> None:
    assert "Traceback" not in result.err + result.out, result.err
    assert result.err.startswith("error: "), result.err
    for needle in needles:
        assert needle in result.err, (needle, result.err)


@pytest.fixture
def usage_error():
    return assert_usage_error


@pytest.fixture
def clean_error():
    return assert_clean_error
