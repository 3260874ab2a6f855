"""`Message`: the one value nodes send to each other.

A message is a ``kind`` (what it is, e.g. ``"fl.update"``), a small JSON ``meta`` dict (round
numbers, sample counts, metrics) and named numpy ``tensors`` (weights, logits, activations).
Everything is validated on construction so that a message that exists can always be encoded
by :func:`meshlearn.wire.encode_message` and decodes back to an equal message.

Rules enforced here (violations raise :class:`~meshlearn.errors.UsageError`):

* ``kind``: 1-64 characters from ``[a-z0-9_.-]``;
* ``meta``: nested ``dict`` (string keys) / ``list`` of ``str``, ``int``, ``float``, ``bool``,
  ``None``; tuples and numpy scalars are rejected so the JSON round trip is exact (NaN and
  +-inf floats pass, using Python's JSON extension);
* ``tensors``: string names, values are ``numpy.ndarray`` of a whitelisted dtype
  (:data:`meshlearn.wire.tensors.SUPPORTED_DTYPES`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.wire.tensors import SUPPORTED_DTYPES

__all__ = ["Message", "MAX_KIND_LENGTH", "MAX_META_DEPTH", "MAX_TENSOR_NAME_BYTES"]

MAX_KIND_LENGTH = 64
MAX_META_DEPTH = 32
MAX_TENSOR_NAME_BYTES = 1024
_KIND_RE = re.compile(r"[a-z0-9_.\-]{1,%d}" % MAX_KIND_LENGTH)
_TENSOR_DTYPES = frozenset(SUPPORTED_DTYPES)


@dataclass(frozen=True, eq=False)
class Message:
    """An immutable-by-convention message: ``kind``, JSON ``meta`` and numpy ``tensors``.

    The fields cannot be reassigned; the dicts themselves are not copied, so do not mutate
    them after construction. Equality compares kind, meta and tensors (dtype, shape, values;
    NaNs compare equal).
    """

    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if not isinstance(self.meta, dict):
            raise UsageError(f"meta must be a dict, got {type(self.meta).__name__}")
        _check_json(self.meta, "meta", 0)
        _check_tensors(self.tensors)

    @classmethod
    def make(
        cls, kind: str, tensors: dict[str, np.ndarray] | None = None, **meta: Any
    ) -> "Message":
        """Build a message from keyword meta: ``Message.make("fl.update", {"w": w}, round=3)``."""
        return cls(kind, dict(meta), dict(tensors or {}))

    @property
    def tensor_nbytes(self) -> int:
        """Uncompressed size of all tensors in bytes (what they occupy in memory)."""
        return sum(int(a.nbytes) for a in self.tensors.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.meta == other.meta
            and _tensors_equal(self.tensors, other.tensors)
        )

    __hash__ = None  # type: ignore[assignment]  # holds dicts: not hashable

    def __repr__(self) -> str:
        shapes = {k: f"{v.dtype}{list(v.shape)}" for k, v in self.tensors.items()}
        return f"Message(kind={self.kind!r}, meta={self.meta!r}, tensors={shapes})"


def _check_kind(kind: object) -> None:
    if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
        raise UsageError(
            f"message kind {kind!r} is invalid: use 1-{MAX_KIND_LENGTH} characters "
            "from a-z, 0-9, '_', '.', '-' (e.g. 'fl.update')"
        )


def _check_json(value: object, path: str, depth: int) -> None:
    """Raise UsageError unless ``value`` is plain JSON data (exact round trip)."""
    if depth > MAX_META_DEPTH:
        raise UsageError(f"{path}: nested deeper than {MAX_META_DEPTH} levels; flatten it")
    if value is None or isinstance(value, (bool, int, float)):
        return
    if isinstance(value, str):
        _check_text(value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(f"{path}: key {key!r} must be a str (JSON objects have str keys)")
            _check_text(key, path)
            _check_json(item, f"{path}.{key}", depth + 1)
    else:
        raise UsageError(
            f"{path}: {type(value).__name__} is not JSON data; use str/int/float/bool/None/"
            "list/dict (convert tuples with list(), numpy scalars with .item(), arrays go "
            "in tensors)"
        )


def _check_text(text: str, path: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{path}: string {text!r} is not valid UTF-8") from None


def _check_tensors(tensors: object) -> None:
    if not isinstance(tensors, dict):
        raise UsageError(f"tensors must be a dict of name -> numpy array, got {type(tensors).__name__}")
    for name, arr in tensors.items():
        if not isinstance(name, str) or not name:
            raise UsageError(f"tensor name {name!r} must be a non-empty str")
        _check_text(name, "tensor name")
        if len(name.encode("utf-8")) > MAX_TENSOR_NAME_BYTES:
            raise UsageError(f"tensor name {name[:40]!r}... exceeds {MAX_TENSOR_NAME_BYTES} bytes")
        if not isinstance(arr, np.ndarray):
            raise UsageError(
                f"tensor {name!r} is a {type(arr).__name__}; pass a numpy array "
                "(torch users: meshlearn.learn.state_to_numpy)"
            )
        if arr.dtype.name not in _TENSOR_DTYPES:
            raise UsageError(
                f"tensor {name!r} has dtype {arr.dtype}; supported: {', '.join(sorted(_TENSOR_DTYPES))}"
            )


def _tensors_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(_array_equal(a[k], b[k]) for k in a)


def _array_equal(x: np.ndarray, y: np.ndarray) -> bool:
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    return bool(np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))
