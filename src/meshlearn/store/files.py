"""Small file helpers shared by the store: atomic writes (from meshlearn._atomic) and UTC timestamps."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from meshlearn._atomic import atomic_write, fsync_dir

__all__ = ["atomic_write", "atomic_write_text", "write_json", "read_json", "utc_now", "fsync_dir"]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Atomically write pretty JSON (non-JSON values are written with ``str``)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
