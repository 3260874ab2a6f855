"""Compact binary packets: the second payload format, for small high-rate control traffic.

A :class:`~meshlearn.wire.Message` (JSON header + tensors) is right for model updates but costs
hundreds of bytes and tens of microseconds per message; overlay gossip sends thousands of tiny
packets per second and must fit 1,400-byte datagrams. A ``Packet`` subclass encodes itself with
``struct`` and starts with a one-byte type tag of 0x80 or more. An encoded ``Message`` starts
with the high byte of its u32 header length, which is 0 or 1 (headers are at most 16 MiB), so
:func:`decode_payload` tells the two formats apart from the first byte alone.

Both runtimes speak through :func:`encode_payload` / :func:`decode_payload`. The simulator
does not encode packets at all: it hands the (immutable) object to the receiver and counts
``wire_size``, which every packet type must compute exactly (``len(encode())``; tested).

Defining a packet type::

    @register_packet
    class Ping(Packet):
        TAG = 0x90
        kind = "swim.ping"
        ...
"""

from __future__ import annotations

import struct
from typing import Callable, ClassVar, TypeVar

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.wire.envelope import DEFAULT_CODEC, decode_message, encode_message
from meshlearn.wire.message import Message
from meshlearn.wire.tensors import TensorCodec

__all__ = ["Packet", "PacketReader", "register_packet", "packet_types", "encode_payload", "decode_payload",
           "MIN_TAG"]

MIN_TAG = 0x80


class Packet:
    """Base of compact packets: immutable, self-encoding, first byte ``TAG``."""

    __slots__ = ()
    TAG: ClassVar[int]
    kind: ClassVar[str]

    @property
    def wire_size(self) -> int:
        """``len(self.encode())``, computed without encoding."""
        raise NotImplementedError

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> "Packet":
        """Inverse of ``encode``; raises ProtocolError on anything malformed."""
        raise NotImplementedError


class PacketReader:
    """Bounds-checked cursor over a received packet: every overrun is a ProtocolError.

    Packet modules subclass it for their own field types (peers, updates). ``of`` checks the
    tag and starts after it; ``end`` rejects trailing bytes.
    """

    __slots__ = ("data", "pos", "what")
    _U16, _U32 = struct.Struct(">H"), struct.Struct(">I")

    def __init__(self, data: bytes, what: str = "packet", pos: int = 1):
        self.data, self.pos, self.what = data, pos, what

    @classmethod
    def of(cls, packet_cls: type, data: bytes) -> "PacketReader":
        if not data or data[0] != packet_cls.TAG:
            raise ProtocolError(f"not a {packet_cls.__name__} packet")
        return cls(bytes(data), packet_cls.__name__)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolError(f"truncated {self.what}: need {n} bytes at offset {self.pos}, have {len(self.data)}")
        chunk, self.pos = self.data[self.pos:end], end
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple:
        return layout.unpack(self.take(layout.size))

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return self._U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return self._U32.unpack(self.take(4))[0]

    def text(self, length: int | None = None) -> str:
        """UTF-8 text of ``length`` bytes (None: a u8 length prefix first)."""
        raw = self.take(self.u8() if length is None else length)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ProtocolError(f"{self.what}: text is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


_DECODERS: dict[int, type[Packet]] = {}
P = TypeVar("P", bound=type[Packet])


def register_packet(cls: P) -> P:
    """Class decorator: make ``decode_payload`` route ``cls.TAG`` to ``cls.decode``."""
    tag = getattr(cls, "TAG", None)
    if not isinstance(tag, int) or not MIN_TAG <= tag <= 0xFF:
        raise UsageError(f"{cls.__name__}.TAG must be an int in [0x80, 0xff], got {tag!r}")
    if tag in _DECODERS and _DECODERS[tag] is not cls:
        raise UsageError(f"packet tag {tag:#x} of {cls.__name__} is taken by {_DECODERS[tag].__name__}")
    _DECODERS[tag] = cls
    return cls


def packet_types() -> dict[int, type[Packet]]:
    """Registered packet classes by tag."""
    return dict(_DECODERS)


def encode_payload(msg: Message | Packet, codec: TensorCodec = DEFAULT_CODEC) -> bytes:
    """Bytes of a Message (envelope) or a Packet (its own encoding)."""
    if isinstance(msg, Packet):
        return msg.encode()
    return encode_message(msg, codec)


def decode_payload(data: bytes, *, max_bytes: int | None = None) -> Message | Packet:
    """Decode what ``encode_payload`` produced; ProtocolError for unknown tags or bad bytes."""
    if not data:
        raise ProtocolError("empty payload")
    tag = data[0]
    if tag < MIN_TAG:
        return decode_message(data) if max_bytes is None else decode_message(data, max_bytes=max_bytes)
    cls: Callable | None = _DECODERS.get(tag)
    if cls is None:
        raise ProtocolError(f"unknown packet type {tag:#x}")
    try:
        return cls.decode(bytes(data))
    except ProtocolError:
        raise
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:  # belt and braces
        raise ProtocolError(f"malformed {cls.__name__} packet: {exc}") from None
