"""Atomic file replacement, the one implementation every writer of run files and tensor files uses.

`atomic_write(path, write)` calls `write(tmp)` on a temporary file beside `path`
(`.<name>.<random>.tmp`), fsyncs it, renames it over `path` and fsyncs the directory: readers
see the old file or the complete new one, never a torn one, even across a crash. The file gets the
mode ``open()`` would give it (0666 less the process umask).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "fsync_dir", "process_umask"]


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


def process_umask() -> int:
    """The process umask, read without changing it where the OS shows it (Linux), else by a set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None], *, mode: int = 0o666) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename over ``path``.

    The file ends with ``mode & ~umask``, what ``open()`` would give it: 0644 under the usual umask
    022, private under 077 (run directories may hold models their owner wants kept to themselves).
    Pass ``mode=0o600`` for a file that must be private whatever the umask.
    """
    path = Path(path)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    tmp = Path(name)
    os.chmod(tmp, mode & ~process_umask() & 0o7777)  # mkstemp makes 0600 whatever the umask
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
