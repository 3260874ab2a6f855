"""Fixtures for damaged-store tests: Python code run in a child process that sees a directory read-only.

Tests run as root, and root ignores file permissions, so a chmod'ed directory is no test. Instead the
child gets a private mount namespace (``unshare -rm``) in which the directory is bind-mounted read-only:
a real read-only filesystem (EROFS) for that process only, gone when it exits. Without ``unshare`` a
non-root user falls back to ``chmod -R a-w``; root without ``unshare`` skips with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

_REMOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def _unshare_works(probe: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    check = [sys.executable, "-c", f"import pathlib; pathlib.Path({str(probe / 'x')!r}).touch()"]
    try:
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", _REMOUNT, str(probe), *check], capture_output=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode != 0 and b"Read-only file system" in proc.stderr  # mounted, and writes refused


@pytest.fixture(scope="session")
def _readonly_mode(tmp_path_factory) -> str:
    if _unshare_works(tmp_path_factory.mktemp("ro-probe")):
        return "mount"
    if os.geteuid() != 0:
        return "chmod"
    pytest.skip("a read-only directory needs `unshare -rm` + mount here: root ignores chmod")


def _chmod(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def readonly_python(_readonly_mode):
    """``call(directory, code)``: run ``code`` in a child Python that sees ``directory`` read-only.

    The code's last stdout line must be JSON; returns it parsed (stderr in ``["stderr"]`` if a dict)."""
    def call(directory: Path, code: str, timeout: float = 60) -> object:
        argv = [sys.executable, "-c", code]
        if _readonly_mode == "mount":
            argv = ["unshare", "-rm", "sh", "-c", _REMOUNT, str(directory), *argv]
        else:
            _chmod(directory, writable=False)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        finally:
            if _readonly_mode == "chmod":
                _chmod(directory, writable=True)
        assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if isinstance(result, dict):
            result["stderr"] = proc.stderr
        return result
    return call
