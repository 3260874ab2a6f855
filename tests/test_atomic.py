"""atomic_write: the file it leaves has the mode open() would give it (umask respected)."""

from __future__ import annotations

import os
import stat

import pytest

from meshlearn._atomic import atomic_write

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o077, 0o027, 0o022, 0o002])
def test_written_files_respect_the_umask_like_open_does(tmp_path, umask, mask):
    umask(mask)
    atomic_write(tmp_path / "run.json", lambda tmp: tmp.write_text("{}"))
    (tmp_path / "plain.json").write_text("{}")
    assert _mode(tmp_path / "run.json") == _mode(tmp_path / "plain.json") == 0o666 & ~mask
    assert os.umask(mask) == mask, "atomic_write must leave the umask as it found it"


def test_a_private_mode_is_narrowed_by_the_umask_never_widened(tmp_path, umask):
    umask(0o022)
    atomic_write(tmp_path / "model.safetensors", lambda tmp: tmp.write_bytes(b"x"), mode=0o600)
    assert _mode(tmp_path / "model.safetensors") == 0o600
    umask(0o077)
    atomic_write(tmp_path / "shared", lambda tmp: tmp.write_bytes(b"x"), mode=0o644)
    assert _mode(tmp_path / "shared") == 0o600
