"""Checkpoint files of a run: ``checkpoints/round-00000012.safetensors``.

Each file holds the tensors plus two metadata strings, ``meshlearn.round`` and
``meshlearn.meta`` (JSON). Files are written to a temporary name and renamed,
so a crash mid-write never damages the previous checkpoint; only the newest
``keep`` are kept. Loading skips files that are truncated or unreadable.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from meshlearn.errors import StoreError, UsageError
from meshlearn.store.files import atomic_write

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints"]

Checkpoint = tuple[int, dict[str, np.ndarray], dict[str, Any]]

_NAME = re.compile(r"^round-(\d+)\.safetensors$")
_ROUND_KEY, _META_KEY = "meshlearn.round", "meshlearn.meta"


def checkpoint_name(round: int) -> str:
    return f"round-{round:08d}.safetensors"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(round, path)`` of every checkpoint-named file, oldest first (validity not checked)."""
    if not directory.is_dir():
        return []
    found = ((_NAME.match(p.name), p) for p in directory.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def _prepare(round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> tuple[dict, dict]:
    if not isinstance(round, int) or isinstance(round, bool) or round < 0:
        raise UsageError(f"checkpoint round must be an int >= 0, got {round!r}")
    try:
        meta_text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"checkpoint meta must be JSON-serialisable: {exc}") from None
    arrays = {str(k): np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    return arrays, {_ROUND_KEY: str(round), _META_KEY: meta_text}


def save_checkpoint(
    directory: Path, round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any], keep: int = 3
) -> Path:
    """Write the checkpoint of ``round`` atomically, then delete all but the newest ``keep``."""
    arrays, metadata = _prepare(round, tensors, meta)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(round)
    try:
        atomic_write(path, lambda tmp: save_file(arrays, str(tmp), metadata=metadata))
    except (TypeError, ValueError) as exc:  # e.g. an object-dtype array
        raise UsageError(f"cannot save checkpoint tensors: {exc}") from None
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
    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        return int(metadata[_ROUND_KEY]), tensors, json.loads(metadata[_META_KEY])
    except Exception as exc:  # safetensors raises its own error type for damaged files
        raise StoreError(f"checkpoint {path} is damaged or not a meshlearn checkpoint: {exc}") from None


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
