"""Message envelope: :class:`Message` <-> bytes. The one encoding both runtimes use.

Layout::

    u32 big-endian header length | UTF-8 JSON header | blob 0 | blob 1 | ...

The header is ``{"kind": str, "meta": {...}, "tensors": [descriptor + "offset" + "length"]}``
written with compact separators and sorted keys; tensors keep the message's insertion order and
their blobs follow back to back (offsets relative to the first blob). Encoding is a pure
function of the message and the codec, so the same message always gives the same bytes and
the simulator can count ``len()`` of exactly what a socket would carry.

Decoding is strict: blobs must tile the body exactly (no gaps, overlaps or trailing bytes),
JSON objects may not repeat keys, and sizes are checked against ``max_bytes`` (the encoded
message) and ``max_decoded_bytes`` (all decoded tensors together) before anything is
decompressed. Every violation is a :class:`~meshlearn.errors.ProtocolError`.
"""

from __future__ import annotations

import json
from typing import Any

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.wire.message import Message
from meshlearn.wire.tensors import TensorCodec, TensorSpec, decode_blob, encode_tensor, parse_descriptor

__all__ = [
    "encode_message",
    "decode_message",
    "DEFAULT_CODEC",
    "MAX_HEADER_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DECODED_BYTES",
]

DEFAULT_CODEC = TensorCodec()
LENGTH_PREFIX = 4
MAX_HEADER_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_DECODED_BYTES = 1024 * 1024 * 1024
_HEADER_KEYS = frozenset(["kind", "meta", "tensors"])
_PLACEMENT_KEYS = ("offset", "length")


def encode_message(msg: Message, codec: TensorCodec = DEFAULT_CODEC) -> bytes:
    """Encode ``msg`` deterministically; tensors go through ``codec``."""
    if not isinstance(msg, Message):
        raise UsageError(f"encode_message needs a Message, got {type(msg).__name__}")
    descriptors, blobs, offset = [], [], 0
    for name, arr in msg.tensors.items():
        desc, blob = encode_tensor(name, arr, codec)
        desc.update(offset=offset, length=len(blob))
        descriptors.append(desc)
        blobs.append(blob)
        offset += len(blob)
    header = _dump_header({"kind": msg.kind, "meta": msg.meta, "tensors": descriptors})
    return b"".join([len(header).to_bytes(LENGTH_PREFIX, "big"), header, *blobs])


def _dump_header(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    header = text.encode("utf-8")
    if len(header) > MAX_HEADER_BYTES:
        raise UsageError(
            f"message header is {len(header)} bytes (limit {MAX_HEADER_BYTES}); "
            "move bulky meta into tensors"
        )
    return header


def decode_message(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Message:
    """Decode bytes from a peer. Tensors are fresh writable arrays that share no memory with
    ``data``. Raises ProtocolError for anything malformed or over the limits."""
    view = _as_view(data)
    if len(view) > max_bytes:
        raise ProtocolError(f"message of {len(view)} bytes exceeds the limit {max_bytes}")
    header, body = _split(view)
    kind, meta, entries = _check_header(_load_header(header))
    placed = _place(entries, len(body), max_decoded_bytes)
    tensors = {spec.name: decode_blob(spec, body[start:end]) for spec, start, end in placed}
    try:
        return Message(kind, meta, tensors)
    except UsageError as exc:
        raise ProtocolError(f"invalid message: {exc}") from None


def _as_view(data: object) -> memoryview:
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise UsageError(f"decode_message needs bytes, got {type(data).__name__}") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _split(view: memoryview) -> tuple[memoryview, memoryview]:
    if len(view) < LENGTH_PREFIX:
        raise ProtocolError(f"message of {len(view)} bytes is shorter than its length prefix")
    size = int.from_bytes(view[:LENGTH_PREFIX], "big")
    if size > MAX_HEADER_BYTES:
        raise ProtocolError(f"message header of {size} bytes exceeds the limit {MAX_HEADER_BYTES}")
    end = LENGTH_PREFIX + size
    if end > len(view):
        raise ProtocolError(f"message header claims {size} bytes but only {len(view) - LENGTH_PREFIX} follow")
    return view[LENGTH_PREFIX:end], view[end:]


def _load_header(header: memoryview) -> object:
    try:
        return json.loads(bytes(header).decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int limit
        raise ProtocolError(f"message header is not valid UTF-8 JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ProtocolError("message header repeats a key in a JSON object")
    return obj


def _check_header(obj: object) -> tuple[str, dict[str, Any], list[Any]]:
    if not isinstance(obj, dict) or obj.keys() != _HEADER_KEYS:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ProtocolError(f"message header must have exactly keys kind, meta, tensors; got {keys}")
    if not isinstance(obj["kind"], str) or not isinstance(obj["meta"], dict):
        raise ProtocolError("message header: kind must be a string and meta an object")
    if not isinstance(obj["tensors"], list):
        raise ProtocolError("message header: tensors must be a list")
    return obj["kind"], obj["meta"], obj["tensors"]


def _place(entries: list[Any], body_len: int, budget: int) -> list[tuple[TensorSpec, int, int]]:
    """Validate every descriptor and its blob range before decoding any of them."""
    placed: list[tuple[TensorSpec, int, int]] = []
    names: set[str] = set()
    cursor = decoded = 0
    for entry in entries:
        spec, offset, length = _parse_entry(entry, budget)
        _check_range(spec.name, offset, length, cursor, body_len)
        decoded += spec.nbytes
        if spec.name in names or decoded > budget:
            why = "is repeated" if spec.name in names else f"exceeds {budget} decoded bytes"
            raise ProtocolError(f"tensor {spec.name!r} {why}")
        names.add(spec.name)
        placed.append((spec, offset, offset + length))
        cursor += length
    if cursor != body_len:
        raise ProtocolError(f"message has {body_len - cursor} trailing bytes after its tensors")
    return placed


def _check_range(name: str, offset: int, length: int, cursor: int, body_len: int) -> None:
    if offset != cursor:
        raise ProtocolError(
            f"tensor {name!r} starts at byte {offset} but the previous blob ends at {cursor} "
            "(blobs must follow each other without gaps or overlaps)"
        )
    if length > body_len - cursor:
        raise ProtocolError(
            f"tensor {name!r} needs bytes [{offset}, {offset + length}) but the body has only "
            f"{body_len} bytes (truncated message?)"
        )


def _parse_entry(entry: object, budget: int) -> tuple[TensorSpec, int, int]:
    if not isinstance(entry, dict) or not all(k in entry for k in _PLACEMENT_KEYS):
        raise ProtocolError("tensor entry must be an object with offset and length")
    offset, length = entry["offset"], entry["length"]
    for value in (offset, length):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProtocolError(f"tensor offset/length must be non-negative integers, got {value!r}")
    descriptor = {k: v for k, v in entry.items() if k not in _PLACEMENT_KEYS}
    return parse_descriptor(descriptor, budget), offset, length
