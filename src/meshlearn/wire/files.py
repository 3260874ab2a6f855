"""Tensor files and checkpoints in safetensors format (never pickle).

:func:`save_tensors` writes atomically: the bytes go to a temporary file in the same directory,
are fsync'ed, then ``os.replace`` swaps it in, so a crash leaves either the old file or the new
one, never a torn one. Small JSON metadata (round, seed, model name, ...) is stored as one
JSON string under the safetensors metadata key ``"meshlearn"``.

``load_tensors(path, names)`` reads only the named tensors (a swarm server loading its own blocks
from a whole-model file). Files written by other tools load too (their meta is ``{}``). Missing, unreadable or corrupt
files raise :class:`~meshlearn.errors.StoreError` naming the path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from meshlearn._atomic import atomic_write
from meshlearn.errors import StoreError, UsageError

__all__ = ["save_tensors", "load_tensors", "META_KEY", "MetaValue"]

META_KEY = "meshlearn"
MetaValue = Union[str, int, float, bool, None, list, dict]  # any JSON value


def save_tensors(
    path: str | os.PathLike[str],
    tensors: dict[str, np.ndarray],
    meta: dict[str, MetaValue] | None = None,
) -> Path:
    """Atomically write ``tensors`` (and scalar ``meta``) to ``path``; returns the path."""
    path = Path(path)
    data = _serialize(tensors, meta or {})
    if not path.parent.is_dir():
        raise StoreError(f"cannot write {path}: directory {path.parent} does not exist; create it first")
    try:
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc}") from exc
    return path


def load_tensors(
    path: str | os.PathLike[str], names: Iterable[str] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, MetaValue]]:
    """Read a safetensors file; returns ``(tensors, meta)``.

    ``names`` reads only those tensors (the others are never loaded; ``()`` reads just the meta);
    a name the file lacks raises StoreError.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            tensors = {name: f.get_tensor(name) for name in _wanted(path, f.keys(), names)}
            raw_meta = (f.metadata() or {}).get(META_KEY)
    except FileNotFoundError:
        raise StoreError(f"tensor file {path} does not exist; check the path or the run directory") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise StoreError(f"tensor file {path} is not a readable safetensors file: {exc}") from None
    return tensors, _parse_meta(path, raw_meta)


def _wanted(path: Path, present: Iterable[str], names: Iterable[str] | None) -> list[str]:
    present = list(present)
    if names is None:
        return present
    names = list(names)
    missing = sorted(set(names) - set(present))
    if missing:
        raise StoreError(f"tensor file {path} has no tensor(s) {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}; was it written for another model?")
    return names


def _serialize(tensors: dict[str, np.ndarray], meta: dict[str, MetaValue]) -> bytes:
    _check_tensors(tensors)
    _check_meta(meta)
    arrays = {name: _little_endian(arr) for name, arr in tensors.items()}
    header_meta = {META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))}
    try:
        return safetensors.numpy.save(arrays, metadata=header_meta)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot save tensors as safetensors: {exc}") from None


def _little_endian(arr: np.ndarray) -> np.ndarray:
    return np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")  # keeps 0-d shapes


def _check_tensors(tensors: object) -> None:
    if not isinstance(tensors, dict):
        raise UsageError(f"tensors must be a dict of name -> numpy array, got {type(tensors).__name__}")
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name:
            raise UsageError(f"tensor name {name!r} must be a non-empty str")
        if not isinstance(arr, np.ndarray):
            raise UsageError(
                f"tensor {name!r} is a {type(arr).__name__}; pass numpy arrays "
                "(torch users: meshlearn.learn.state_to_numpy)"
            )


def _check_meta(meta: object) -> None:
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise UsageError(f"meta must be a dict with str keys, got {meta!r:.80}")
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"meta must be JSON-serialisable (numpy scalars: use .item()): {exc}") from None


def _parse_meta(path: Path, raw: str | None) -> dict[str, MetaValue]:
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"tensor file {path} has corrupt {META_KEY!r} metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise StoreError(f"tensor file {path} has {META_KEY!r} metadata that is not a JSON object")
    return meta
