"""Wire packets of the Chord ring and of failure-information propagation (tags 0x90–0x9F).

Every packet is an immutable tuple subclass (cheap to build: the simulator passes the objects
and counts ``wire_size``, which equals ``len(encode())`` exactly). A peer travels as
``(id, name)``: a u32 ring identifier and the node's name (u8 length + UTF-8), the name being
the address a runtime sends to. An absent optional peer is written as id 0 with an empty name.

Tags are part of the protocol: ONLY APPEND to this table.

    0x90 FindSuccessor   routed lookup of the node owning ``key``
    0x91 FoundSuccessor  lookup answer, sent straight to the origin
    0x92 GetNeighbors    stabilize request: "send me your predecessor and successor list"
    0x93 Neighbors       stabilize answer
    0x94 Notify          "I think I am your predecessor"
    0x95 Ping            keep-alive / check_predecessor probe (carries the prober's id)
    0x96 Pong            answer to Ping
    0x98 Will            stateful arm: a node's backpointer list, handed to its successors
    0x99 FailureReport   stateful arm: routed to the failed node's will holder
    0x9A FailureNotice   "``failed`` is dead; use ``replacement``", sent to one target
    0x9B FailureWalk     stateless arm: routed to the top of an estimated interval, then walks
                         predecessors while inside it
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import ClassVar

from meshlearn.errors import ProtocolError
from meshlearn.wire.packet import Packet, PacketReader, register_packet

__all__ = [
    "Peer",
    "FindSuccessor",
    "FoundSuccessor",
    "GetNeighbors",
    "Neighbors",
    "Notify",
    "Ping",
    "Pong",
    "Will",
    "FailureReport",
    "FailureNotice",
    "FailureWalk",
    "MAX_PEERS",
]

Peer = tuple  # (ring id: int, node name: str)
MAX_PEERS = 0xFFFF  # a peer list's count is a u16

_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
_PEER_HEAD = struct.Struct(">IB")


# ----- peer codec ---------------------------------------------------------------------------
def _peer_size(peer: Peer | None) -> int:
    return 5 if peer is None else 5 + len(peer[1].encode())


def _peers_size(peers: tuple) -> int:
    return 2 + sum(5 + len(p[1].encode()) for p in peers)


def _enc_peer(peer: Peer | None) -> bytes:
    if peer is None:
        return _PEER_HEAD.pack(0, 0)
    name = peer[1].encode()
    return _PEER_HEAD.pack(peer[0], len(name)) + name


def _enc_peers(peers: tuple) -> bytes:
    return _U16.pack(len(peers)) + b"".join(_enc_peer(p) for p in peers)


class _Reader(PacketReader):
    """Adds Chord peers (id + name) to the shared bounds-checked reader."""

    __slots__ = ()

    def opt_peer(self) -> Peer | None:
        ident, length = _PEER_HEAD.unpack(self.take(5))
        if length == 0:
            if ident != 0:
                raise ProtocolError(f"{self.what}: peer {ident} has an empty name")
            return None
        try:
            return (ident, self.take(length).decode())
        except UnicodeDecodeError:
            raise ProtocolError(f"{self.what}: peer name is not UTF-8") from None

    def peer(self) -> Peer:
        peer = self.opt_peer()
        if peer is None:
            raise ProtocolError(f"{self.what}: a required peer is missing")
        return peer

    def peers(self) -> tuple:
        return tuple(self.peer() for _ in range(self.u16()))


def _check_tag(cls, data: bytes) -> _Reader:
    return _Reader.of(cls, data)


# ----- base -----------------------------------------------------------------------------------
class _TuplePacket(Packet, tuple):
    """A packet stored as a tuple of ``FIELDS`` (immutable; fields readable by name)."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, *values):
        return tuple.__new__(cls, values)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for index, name in enumerate(cls.FIELDS):
            setattr(cls, name, property(itemgetter(index)))

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={v!r}" for n, v in zip(self.FIELDS, self))
        return f"{type(self).__name__}({args})"

    def __getnewargs__(self):
        return tuple(self)


# ----- Chord ----------------------------------------------------------------------------------
class _LookupPacket(_TuplePacket):
    """A lookup request or its answer: (req u32, key u32, peer, hops u8)."""

    __slots__ = ()

    @property
    def wire_size(self) -> int:
        return 10 + _peer_size(self[2])

    def encode(self) -> bytes:
        return struct.pack(">BII", self.TAG, self[0], self[1]) + _enc_peer(self[2]) + _U8.pack(self[3])

    @classmethod
    def decode(cls, data: bytes):
        r = _check_tag(cls, data)
        out = cls(r.u32(), r.u32(), r.peer(), r.u8())
        r.end()
        return out


@register_packet
class FindSuccessor(_LookupPacket):
    __slots__ = ()
    TAG, kind, FIELDS = 0x90, "chord.find_successor", ("req", "key", "origin", "hops")


@register_packet
class FoundSuccessor(_LookupPacket):
    __slots__ = ()
    TAG, kind, FIELDS = 0x91, "chord.found_successor", ("req", "key", "succ", "hops")


class _SeqPacket(_TuplePacket):
    """A packet that is only a u32 sequence number."""

    __slots__ = ()
    FIELDS = ("seq",)

    @property
    def wire_size(self) -> int:
        return 5

    def encode(self) -> bytes:
        return struct.pack(">BI", self.TAG, self[0])

    @classmethod
    def decode(cls, data: bytes):
        r = _check_tag(cls, data)
        out = cls(r.u32())
        r.end()
        return out


@register_packet
class GetNeighbors(_SeqPacket):
    __slots__ = ()
    TAG, kind = 0x92, "chord.get_neighbors"


@register_packet
class Neighbors(_TuplePacket):
    __slots__ = ()
    TAG, kind, FIELDS = 0x93, "chord.neighbors", ("seq", "pred", "succs")

    @property
    def wire_size(self) -> int:
        return 5 + _peer_size(self[1]) + _peers_size(self[2])

    def encode(self) -> bytes:
        return struct.pack(">BI", self.TAG, self[0]) + _enc_peer(self[1]) + _enc_peers(self[2])

    @classmethod
    def decode(cls, data: bytes) -> "Neighbors":
        r = _check_tag(cls, data)
        out = cls(r.u32(), r.opt_peer(), r.peers())
        r.end()
        return out


@register_packet
class Notify(_TuplePacket):
    __slots__ = ()
    TAG, kind, FIELDS = 0x94, "chord.notify", ("peer",)

    @property
    def wire_size(self) -> int:
        return 1 + _peer_size(self[0])

    def encode(self) -> bytes:
        return bytes([self.TAG]) + _enc_peer(self[0])

    @classmethod
    def decode(cls, data: bytes) -> "Notify":
        r = _check_tag(cls, data)
        out = cls(r.peer())
        r.end()
        return out


@register_packet
class Ping(_TuplePacket):
    __slots__ = ()
    TAG, kind, FIELDS = 0x95, "chord.ping", ("seq", "sender_id")

    @property
    def wire_size(self) -> int:
        return 9

    def encode(self) -> bytes:
        return struct.pack(">BII", self.TAG, self[0], self[1])

    @classmethod
    def decode(cls, data: bytes) -> "Ping":
        r = _check_tag(cls, data)
        out = cls(r.u32(), r.u32())
        r.end()
        return out


@register_packet
class Pong(_SeqPacket):
    __slots__ = ()
    TAG, kind = 0x96, "chord.pong"


# ----- failure-information propagation --------------------------------------------------------
@register_packet
class Will(_TuplePacket):
    __slots__ = ()
    TAG, kind, FIELDS = 0x98, "prop.will", ("seq", "peers")

    @property
    def wire_size(self) -> int:
        return 5 + _peers_size(self[1])

    def encode(self) -> bytes:
        return struct.pack(">BI", self.TAG, self[0]) + _enc_peers(self[1])

    @classmethod
    def decode(cls, data: bytes) -> "Will":
        r = _check_tag(cls, data)
        out = cls(r.u32(), r.peers())
        r.end()
        return out


@register_packet
class FailureReport(_TuplePacket):
    __slots__ = ()
    TAG, kind, FIELDS = 0x99, "prop.failure_report", ("failed", "final", "hops")

    @property
    def wire_size(self) -> int:
        return 3 + _peer_size(self[0])

    def encode(self) -> bytes:
        return bytes([self.TAG]) + _enc_peer(self[0]) + struct.pack(">BB", self[1], self[2])

    @classmethod
    def decode(cls, data: bytes) -> "FailureReport":
        r = _check_tag(cls, data)
        out = cls(r.peer(), r.u8(), r.u8())
        r.end()
        return out


@register_packet
class FailureNotice(_TuplePacket):
    __slots__ = ()
    TAG, kind, FIELDS = 0x9A, "prop.failure_notice", ("failed", "replacement")

    @property
    def wire_size(self) -> int:
        return 1 + _peer_size(self[0]) + _peer_size(self[1])

    def encode(self) -> bytes:
        return bytes([self.TAG]) + _enc_peer(self[0]) + _enc_peer(self[1])

    @classmethod
    def decode(cls, data: bytes) -> "FailureNotice":
        r = _check_tag(cls, data)
        out = cls(r.peer(), r.opt_peer())
        r.end()
        return out


@register_packet
class FailureWalk(_TuplePacket):
    """Notify every node in ring interval (bottom, top]; ``budget`` more nodes even outside it."""

    __slots__ = ()
    TAG, kind = 0x9B, "prop.failure_walk"
    FIELDS = ("failed", "replacement", "top", "bottom", "budget", "walking", "hops")

    @property
    def wire_size(self) -> int:
        return 12 + _peer_size(self[0]) + _peer_size(self[1])

    def encode(self) -> bytes:
        head = bytes([self.TAG]) + _enc_peer(self[0]) + _enc_peer(self[1])
        return head + struct.pack(">IIBBB", self[2], self[3], self[4], self[5], self[6])

    @classmethod
    def decode(cls, data: bytes) -> "FailureWalk":
        r = _check_tag(cls, data)
        out = cls(r.peer(), r.opt_peer(), r.u32(), r.u32(), r.u8(), r.u8(), r.u8())
        r.end()
        return out
