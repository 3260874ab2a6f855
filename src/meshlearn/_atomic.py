"""Atomic file replacement, the one implementation every writer of run files and tensor files uses.

`atomic_write(path, write)` calls `write(tmp)` on a temporary file beside `path`
(`.<name>.<random>.tmp`), fsyncs it, renames it over `path` and fsyncs the directory: readers
see the old file or the complete new one, never a torn one, even across a crash.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort; not possible on every OS)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    tmp = Path(name)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; run files are meant to be shared
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
