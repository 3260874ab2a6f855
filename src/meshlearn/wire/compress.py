"""Lossless byte compressors for tensor blobs (``none``, ``zstd``, ``lz4``), in one registry.

A compressor turns the raw little-endian bytes of one tensor into a blob and back. Every
compressed blob is a self-contained frame, so each tensor (and each datagram that carries one)
decodes on its own. Decompression is bounded by the size the peer declared: a blob that
expands past it is rejected *before* the memory is allocated (no decompression bombs), and a
blob that expands to anything but exactly the declared size is a :class:`ProtocolError`.

Third parties can add compressors under the entry-point group ``meshlearn.compressors``; an
object with ``compress(raw, level) -> bytes`` and ``decompress(blob, raw_length) -> bytes``.
"""

from __future__ import annotations

from typing import Protocol

import lz4.frame
import zstandard

from meshlearn.errors import ProtocolError
from meshlearn.registry import Registry

__all__ = ["Compressor", "COMPRESSORS", "get_compressor"]


class Compressor(Protocol):
    """Lossless byte codec. ``decompress`` must return exactly ``raw_length`` bytes or raise."""

    def compress(self, raw: bytes, level: int) -> bytes: ...

    def decompress(self, blob: bytes, raw_length: int) -> bytes: ...


COMPRESSORS: Registry[Compressor] = Registry("compressors")


class _Identity:
    def compress(self, raw: bytes, level: int) -> bytes:
        return raw

    def decompress(self, blob: bytes, raw_length: int) -> bytes:
        if len(blob) != raw_length:
            raise ProtocolError(
                f"uncompressed blob has {len(blob)} bytes but the descriptor declares {raw_length}"
            )
        return blob


class _Zstd:
    def compress(self, raw: bytes, level: int) -> bytes:
        # write_content_size lets the receiver check the size before allocating anything.
        return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw)

    def decompress(self, blob: bytes, raw_length: int) -> bytes:
        try:
            declared = zstandard.frame_content_size(blob)
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"zstd blob is not a valid frame: {exc}") from None
        if declared > raw_length:  # -1 (unknown) falls through to the bounded path below
            raise ProtocolError(
                f"zstd frame expands to {declared} bytes but the descriptor declares {raw_length}"
            )
        try:
            out = zstandard.ZstdDecompressor().decompress(
                blob, max_output_size=max(raw_length, 1), allow_extra_data=False
            )
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"zstd blob does not decompress to {raw_length} bytes: {exc}") from None
        return _exact(out, raw_length, "zstd")


class _Lz4:
    def compress(self, raw: bytes, level: int) -> bytes:
        return lz4.frame.compress(raw, store_size=True)

    def decompress(self, blob: bytes, raw_length: int) -> bytes:
        dec = lz4.frame.LZ4FrameDecompressor()
        try:
            # One byte of head-room tells "exactly raw_length" from "more than declared";
            # max_length=0 would mean unlimited, so it is never passed.
            out = dec.decompress(bytes(blob), max_length=raw_length + 1)
        except RuntimeError as exc:
            raise ProtocolError(f"lz4 blob is not a valid frame: {exc}") from None
        if not dec.eof or dec.unused_data:
            raise ProtocolError(
                f"lz4 blob does not decompress to exactly {raw_length} bytes "
                "(truncated, oversized or trailing data)"
            )
        return _exact(out, raw_length, "lz4")


def _exact(out: bytes, raw_length: int, name: str) -> bytes:
    if len(out) != raw_length:
        raise ProtocolError(
            f"{name} blob decompressed to {len(out)} bytes but the descriptor declares {raw_length}"
        )
    return out


COMPRESSORS.register("none", _Identity())
COMPRESSORS.register("zstd", _Zstd())
COMPRESSORS.register("lz4", _Lz4())


def get_compressor(name: object) -> Compressor:
    """Look up a compressor named by a peer; unknown names are a :class:`ProtocolError`."""
    if not isinstance(name, str) or name not in COMPRESSORS.names():
        raise ProtocolError(
            f"unknown compression {name!r} (known: {', '.join(COMPRESSORS.names())})"
        )
    return COMPRESSORS.get(name)
