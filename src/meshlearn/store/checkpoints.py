"""Checkpoint files of a run: ``checkpoints/round-00000012.safetensors``.

Each file is a `meshlearn.wire.save_tensors` file whose meta holds ``round``, ``sha256`` (a digest of
every tensor's name, dtype, shape and bytes) and the caller's scalar meta. Writes are atomic, so a crash
mid-write never damages the previous checkpoint; only the newest ``keep`` are kept.

Loading verifies a checkpoint: readable, named round = stored round, digest matches (files written before
digests existed have none and are only read), floating tensors finite. :func:`find_checkpoint` walks from
the newest file down and reports every one it had to skip and why, so the caller can announce the fallback.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from meshlearn.errors import StoreError, UsageError
from meshlearn.wire.files import load_tensors, save_tensors

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "find_checkpoint",
           "list_checkpoints", "checkpoint_name", "tensor_digest", "DIGEST_KEY"]

Checkpoint = tuple[int, dict[str, np.ndarray], dict[str, Any]]

DIGEST_KEY = "sha256"
_NAME = re.compile(r"^round-(\d+)\.safetensors$")


def checkpoint_name(round: int) -> str:
    return f"round-{round:08d}.safetensors"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(round, path)`` of every checkpoint-named file, oldest first (validity not checked)."""
    if not directory.is_dir():
        return []
    found = ((_NAME.match(p.name), p) for p in directory.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def tensor_digest(tensors: dict[str, np.ndarray]) -> str:
    """sha256 over every tensor (sorted by name): name, little-endian dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        digest.update(f"{name}\0{arr.dtype.str}\0{arr.shape}\0".encode())
        digest.update(memoryview(arr).cast("B") if arr.size else b"")
    return digest.hexdigest()


def save_checkpoint(
    directory: Path, round: int, tensors: dict[str, np.ndarray], meta: dict[str, Any], keep: int = 3
) -> Path:
    """Write the checkpoint of ``round`` atomically, then delete all but the newest ``keep``."""
    if not isinstance(round, int) or isinstance(round, bool) or round < 0:
        raise UsageError(f"checkpoint round must be an int >= 0, got {round!r}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {directory}: {exc.strerror or exc}; is the run directory writable?") from None
    arrays = {str(k): np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    stored = {**meta, "round": round, DIGEST_KEY: tensor_digest(arrays)}
    path = save_tensors(directory / checkpoint_name(round), arrays, stored)
    _prune(directory, keep)
    return path


def _prune(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints and temp files left by a crash."""
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    for stale in directory.glob(".round-*.safetensors.*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> Checkpoint:
    """``(round, tensors, meta)`` from one verified file; ``StoreError`` saying why if it is damaged."""
    tensors, meta = load_tensors(path)
    round, digest = meta.pop("round", None), meta.pop(DIGEST_KEY, None)
    if not isinstance(round, int):
        raise StoreError(f"checkpoint {path} is not a meshlearn checkpoint (no round in its metadata)")
    if digest is not None and digest != tensor_digest(tensors):
        raise StoreError(f"checkpoint {path} fails its sha256 check: its tensors were changed or damaged on disk")
    bad = next((name for name, arr in tensors.items() if _non_finite(arr)), None)
    if bad is not None:
        raise StoreError(f"checkpoint {path} holds NaN or infinite values in {bad!r}: the model diverged "
                         "(try a lower fl.lr) or the file was damaged")
    return round, tensors, meta


def _non_finite(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "fc" and not bool(np.isfinite(arr).all())


def find_checkpoint(directory: Path) -> tuple[Checkpoint | None, list[tuple[int, str]]]:
    """The newest checkpoint that verifies, and ``(round, why)`` of each newer file it skipped (newest first)."""
    skipped: list[tuple[int, str]] = []
    for round, path in reversed(list_checkpoints(directory)):
        try:
            found = load_checkpoint(path)
        except StoreError as exc:
            skipped.append((round, str(exc)))
            continue
        if found[0] == round:
            return found, skipped
        skipped.append((round, f"checkpoint {path} says it holds round {found[0]}, not {round}"))
    return None, skipped


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that verifies, skipping damaged files; None if there is none."""
    return find_checkpoint(directory)[0]
