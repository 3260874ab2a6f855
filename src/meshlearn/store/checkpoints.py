"""Checkpoint files of a run: ``checkpoints/round-00000012.safetensors``.

Each file is a `meshlearn.wire.save_tensors` file whose meta holds ``round`` plus the caller's
scalar meta. Writes are atomic, so a crash mid-write never damages the previous checkpoint; only
the newest ``keep`` are kept. Loading skips files that are truncated or unreadable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from meshlearn.errors import StoreError, UsageError
from meshlearn.wire.files import load_tensors, save_tensors

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints"]

Checkpoint = tuple[int, dict[str, np.ndarray], dict[str, Any]]

_NAME = re.compile(r"^round-(\d+)\.safetensors$")


def checkpoint_name(round: int) -> str:
    return f"round-{round:08d}.safetensors"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(round, path)`` of every checkpoint-named file, oldest first (validity not checked)."""
    if not directory.is_dir():
        return []
    found = ((_NAME.match(p.name), p) for p in directory.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def save_checkpoint(
    directory: Path, round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any], keep: int = 3
) -> Path:
    """Write the checkpoint of ``round`` atomically, then delete all but the newest ``keep``."""
    if not isinstance(round, int) or isinstance(round, bool) or round < 0:
        raise UsageError(f"checkpoint round must be an int >= 0, got {round!r}")
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {str(k): np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    path = save_tensors(directory / checkpoint_name(round), arrays, {**meta, "round": round})
    _prune(directory, keep)
    return path


def _prune(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints and temp files left by a crash."""
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    for stale in directory.glob(".round-*.safetensors.*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> Checkpoint:
    """``(round, tensors, meta)`` from one file; ``StoreError`` if it is damaged."""
    tensors, meta = load_tensors(path)
    round = meta.pop("round", None)
    if not isinstance(round, int):
        raise StoreError(f"checkpoint {path} is not a meshlearn checkpoint (no round in its metadata)")
    return round, tensors, meta


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest readable checkpoint, skipping truncated or corrupt files; None if there is none."""
    for round, path in reversed(list_checkpoints(directory)):
        try:
            found = load_checkpoint(path)
        except StoreError:
            continue
        if found[0] == round:
            return found
    return None
