"""Packetizer: split a byte message into MTU-sized packets and put it back together.

Each packet carries ``payload = mtu - header_bytes`` bytes of the message (the last one fewer); an
empty message still takes one packet. On reassembly, lost packets (``None``) are zero-filled and a
bool mask (True = arrived) says which parts of the message are real. ``apply_loss_mask`` does the
same on a whole buffer in one numpy pass, for large tensors sent over lossy datagram links.
"""

from __future__ import annotations

import numpy as np

from meshlearn.errors import UsageError

__all__ = ["DEFAULT_HEADER_BYTES", "payload_size", "packet_count", "packet_sizes", "packetize",
           "reassemble", "apply_loss_mask"]

DEFAULT_HEADER_BYTES = 28  # IPv4 (20) + UDP (8)


def payload_size(mtu: int, header_bytes: int = DEFAULT_HEADER_BYTES) -> int:
    """Message bytes carried by one packet."""
    if header_bytes < 0:
        raise UsageError(f"header_bytes must be >= 0, got {header_bytes}")
    payload = int(mtu) - int(header_bytes)
    if payload < 1:
        raise UsageError(f"mtu ({mtu}) must exceed header_bytes ({header_bytes}) by at least 1 byte")
    return payload


def packet_count(nbytes: int, mtu: int, header_bytes: int = DEFAULT_HEADER_BYTES) -> int:
    """Number of packets needed for ``nbytes`` of message (at least 1, even for 0 bytes)."""
    if nbytes < 0:
        raise UsageError(f"nbytes must be >= 0, got {nbytes}")
    payload = payload_size(mtu, header_bytes)
    return max(1, -(-int(nbytes) // payload))


def packet_sizes(nbytes: int, mtu: int, header_bytes: int = DEFAULT_HEADER_BYTES) -> np.ndarray:
    """Payload bytes of each packet (int64 array of length ``packet_count``); headers excluded."""
    n = packet_count(nbytes, mtu, header_bytes)
    sizes = np.full(n, payload_size(mtu, header_bytes), dtype=np.int64)
    sizes[-1] = int(nbytes) - int(sizes[:-1].sum())
    return sizes


def packetize(data: bytes, mtu: int, header_bytes: int = DEFAULT_HEADER_BYTES) -> list[bytes]:
    """Split ``data`` into payload chunks of ``mtu - header_bytes`` bytes (``[b""]`` if empty)."""
    payload = payload_size(mtu, header_bytes)
    view = memoryview(bytes(data))
    return [bytes(view[i : i + payload]) for i in range(0, len(view), payload)] or [b""]


def reassemble(
    packets: list[bytes | None], *, payload: int | None = None, nbytes: int | None = None
) -> tuple[bytes, np.ndarray]:
    """Join packets in order, zero-filling lost ones (``None``); returns ``(data, arrived_mask)``.

    A lost packet takes the payload size, read from any arrived packet that is not the last one or
    given as ``payload``. A lost *last* packet takes ``nbytes - payload * (count - 1)`` bytes when
    ``nbytes`` (the message length) is given, else a full payload.
    """
    if not packets:
        raise UsageError("reassemble needs at least one packet (an empty message is [b''])")
    mask = np.array([p is not None for p in packets], dtype=bool)
    if mask.all():
        return b"".join(packets), mask  # type: ignore[arg-type]
    size = _infer_payload(packets, payload)
    last = size if nbytes is None else int(nbytes) - size * (len(packets) - 1)
    if last < 0:
        raise UsageError(f"nbytes={nbytes} is too small for {len(packets)} packets of {size} bytes")
    parts = [p if p is not None else bytes(size) for p in packets[:-1]]
    parts.append(packets[-1] if packets[-1] is not None else bytes(last))
    return b"".join(parts), mask


def _infer_payload(packets: list[bytes | None], payload: int | None) -> int:
    if payload is not None:
        return int(payload)
    for p in packets[:-1]:
        if p is not None:
            return len(p)
    if len(packets) == 1 and packets[0] is None:
        raise UsageError("the only packet is lost: pass payload= (and nbytes=) to zero-fill it")
    raise UsageError("cannot infer the payload size from the arrived packets; pass payload=")


def apply_loss_mask(
    data: bytes | np.ndarray, arrived: np.ndarray, mtu: int, header_bytes: int = DEFAULT_HEADER_BYTES
) -> bytes:
    """Zero the bytes of ``data`` carried by packets whose ``arrived`` entry is False (vectorized)."""
    buf = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(), np.uint8)
    arrived = np.asarray(arrived, dtype=bool)
    n = packet_count(buf.size, mtu, header_bytes)
    if arrived.shape != (n,):
        raise UsageError(f"mask has shape {arrived.shape}, expected ({n},) packets for {buf.size} bytes")
    keep = np.repeat(arrived, payload_size(mtu, header_bytes))[: buf.size]
    out = buf.copy()
    out[~keep] = 0
    return out.tobytes()
