"""Who owns a running run: the process recorded in its ``run.json``, and whether that process still lives.

A run is marked ``running`` with an ``owner`` record::

    {"pid": 4242, "host": "lab-3", "boot": "<kernel boot id>", "ticks": 123456, "since": "2026-...Z"}

``ticks`` is the process start time in clock ticks since boot (Linux ``/proc/<pid>/stat``), so a pid reused
by another process after a reboot or a wrap-around is not mistaken for the owner. On the owner's host a
run whose owner is gone has **died** (SIGKILL, power loss, a crash while recording its end); on another
host nobody can tell, so such a run keeps its recorded status. Standard library only: ``runs list`` must
start fast.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path
from typing import Any, Literal

__all__ = ["current_owner", "owner_state", "last_activity", "OwnerState"]

OwnerState = Literal["alive", "dead", "unknown"]
_PROC = Path("/proc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _boot_id() -> str | None:
    return _read(_PROC / "sys/kernel/random/boot_id")


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state letter, start ticks)`` of ``pid`` from /proc, or None where /proc cannot tell."""
    text = _read(_PROC / str(pid) / "stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": comm may hold spaces and parentheses
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def current_owner() -> dict[str, Any]:
    """The owner record of this process."""
    pid, stat = os.getpid(), _stat(os.getpid())
    return {"pid": pid, "host": socket.gethostname(), "boot": _boot_id(), "ticks": stat[1] if stat else None,
            "since": dt.datetime.now(dt.timezone.utc).isoformat()}


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    return True


def owner_state(owner: Any) -> OwnerState:
    """Whether the process in ``owner`` (an owner record) still runs: alive, dead, or unknown (other host)."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) or owner["pid"] <= 0:
        return "unknown"
    if owner.get("host") != socket.gethostname():
        return "unknown"
    boot = _boot_id()
    if owner.get("boot") and boot and owner["boot"] != boot:
        return "dead"  # the machine rebooted since
    if not _pid_exists(owner["pid"]):
        return "dead"
    stat = _stat(owner["pid"])
    if stat is None:
        return "alive"
    state, ticks = stat
    if state in ("Z", "X") or (isinstance(owner.get("ticks"), int) and ticks != owner["ticks"]):
        return "dead"  # a zombie, or the pid now belongs to another process
    return "alive"


def last_activity(run_dir: Path) -> str:
    """When the run last wrote anything (its files' newest mtime, UTC ISO): when a died run was last alive."""
    names = ("run.json", "metrics.sqlite", "metrics.sqlite-wal", "run.log", "checkpoints")
    times = []
    for name in names:
        try:
            times.append((run_dir / name).stat().st_mtime)
        except OSError:
            continue
    when = max(times) if times else 0.0
    return dt.datetime.fromtimestamp(when, dt.timezone.utc).isoformat()
