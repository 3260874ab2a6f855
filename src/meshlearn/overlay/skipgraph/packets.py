"""Skip Graph and DSML packets, struct-encoded (tags 0xA0–0xAF; append only, the values are wire).

A peer is written ``key u64 | id str`` (``str`` = u8 length + UTF-8); an optional peer is a u8
flag (0 absent, 1 present) followed by the peer. Layouts after the one-byte tag:

    0xA0 Route     op u8 | req u32 | hops u8 | target u64 | mvec u64 | origin peer
    0xA1 Found     req u32 | hops u8 | peer | mvec u64
    0xA2 Walk      mode u8 | side u8 | level u8 | top u8 | hops u8 | req u32 | match u64
                   | dead u64 (0 = none; keys are ≥ 1 on the wire via +1) | origin peer
    0xA3 Linked    level u8 | left opt-peer | right opt-peer | n u8 | peer * n | m u8 | peer * m
    0xA4 WalkEnd   mode u8 | side u8 | level u8 | hops u8 | req u32
    0xA5 SetNbr    level u8 | side u8 | peer opt-peer | expect u64 (0 = any, else key + 1)
    0xA6 Ping      nonce u32 | want u8 | side u8 | lo u8 | hi u8 | key u64
    0xA7 Pong      nonce u32 | mvec u64 | n u8 | peer * n | m u8 | opt-peer * m
    0xA8 Aggregate round u32 | seq u32 | flags u8 | total (u8 length + big-endian bytes)
                   | n u32 | (start u32 | count u32 | weight u64) * n
    0xA9 Ack       op u8 | round u32 | seq u32        (op: ACK, RELEASE, PROBE, PROBE_ACK)
    0xAA Adopt     round u32 | height u8

Aggregate ``runs`` are the audit trail of a DSML partial aggregate: leaf ids ``start …
start+count-1`` each contributed ``weight`` (in units of 2**-40 of one update).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.wire.packet import Packet, PacketReader, register_packet

__all__ = ["Peer", "Route", "Found", "Walk", "Linked", "WalkEnd", "SetNeighbor", "Ping", "Pong",
           "Aggregate", "Ack", "Adopt", "SEARCH", "JOIN", "INSERT", "REPAIR", "FIND", "LEFT", "RIGHT",
           "ACK", "RELEASE", "PROBE", "PROBE_ACK", "COPY"]

SEARCH, JOIN = 0, 1  # Route ops
INSERT, REPAIR, FIND = 0, 1, 2  # Walk modes
LEFT, RIGHT = 0, 1  # sides
ACK, RELEASE, PROBE, PROBE_ACK = 0, 1, 2, 3  # Ack ops
COPY = 1  # Aggregate flag: a fail-over copy, never merged before the root
_MAX_U64 = (1 << 64) - 1
# bodies after the tag byte, for decoding
_B_BBBBBIQQ = struct.Struct(">BBBBBIQQ")
_B_BBBBI = struct.Struct(">BBBBI")
_B_BIBQQ = struct.Struct(">BIBQQ")
_B_BII = struct.Struct(">BII")
_B_I = struct.Struct(">I")
_B_IB = struct.Struct(">IB")
_B_IQ = struct.Struct(">IQ")
_B_IIB = struct.Struct(">IIB")
_B_Q = struct.Struct(">Q")


class Peer(NamedTuple):
    """A skip graph member: its key (sort order) and its node id (address)."""

    key: int
    node: str


# ----- field codecs ---------------------------------------------------------------------------
def _str_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _peer_len(p: Peer) -> int:
    return 9 + _str_len(p.node)


def _opt_len(p: Peer | None) -> int:
    return 1 if p is None else 1 + _peer_len(p)


def _put_peer(out: list, p: Peer) -> None:
    raw = p.node.encode()
    if len(raw) > 255:
        raise UsageError(f"node id {p.node[:40]!r}… is {len(raw)} bytes; ids are at most 255")
    if not 0 <= p.key <= _MAX_U64:
        raise UsageError(f"skip graph key {p.key} does not fit 64 bits")
    out += [struct.pack(">QB", p.key, len(raw)), raw]


def _put_opt(out: list, p: Peer | None) -> None:
    if p is None:
        out.append(b"\0")
    else:
        out.append(b"\1")
        _put_peer(out, p)


class _Reader(PacketReader):
    """Adds skip graph peers (key + name) and range checks to the shared bounds-checked reader."""

    __slots__ = ()

    def peer(self) -> Peer:
        key, n = struct.unpack(">QB", self.take(9))
        try:
            return Peer(key, self.take(n).decode())
        except UnicodeDecodeError:
            raise ProtocolError("node id is not UTF-8") from None

    def opt(self) -> Peer | None:
        flag = self.u8()
        if flag > 1:
            raise ProtocolError(f"optional-peer flag must be 0 or 1, got {flag}")
        return self.peer() if flag else None

    def peers(self) -> tuple[Peer, ...]:
        return tuple(self.peer() for _ in range(self.u8()))

    def choice(self, value: int, valid: range, what: str) -> int:
        if value not in valid:
            raise ProtocolError(f"{what} {value} is not one of {list(valid)}")
        return value


def _check_tag(cls, data: bytes) -> _Reader:
    return _Reader.of(cls, data)


def _key_or_none(value: int) -> int | None:
    return None if value == 0 else value - 1


def _none_or_key(key: int | None) -> int:
    if key is not None and not 0 <= key < _MAX_U64:
        raise UsageError(f"skip graph key {key} must be in [0, 2**64 - 1)")
    return 0 if key is None else key + 1


# ----- skip graph -----------------------------------------------------------------------------
_ROUTE = struct.Struct(">BBIBQQ")


@register_packet
class Route(Packet):
    """Greedy routing towards ``target``: a search (reply Found) or a join (link the origin)."""

    __slots__ = ("op", "req", "hops", "target", "mvec", "origin")
    TAG = 0xA0
    kind = "sg.route"

    def __init__(self, op: int, req: int, hops: int, target: int, mvec: int, origin: Peer):
        self.op, self.req, self.hops, self.target, self.mvec, self.origin = op, req, hops, target, mvec, origin

    @property
    def wire_size(self) -> int:
        return _ROUTE.size + _peer_len(self.origin)

    def encode(self) -> bytes:
        out = [_ROUTE.pack(self.TAG, self.op, self.req, self.hops, self.target, self.mvec)]
        _put_peer(out, self.origin)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "Route":
        r = _check_tag(cls, data)
        op, req, hops, target, mvec = r.unpack(_B_BIBQQ)
        pkt = cls(r.choice(op, range(2), "route op"), req, hops, target, mvec, r.peer())
        r.end()
        return pkt


_FOUND = struct.Struct(">BIB")


@register_packet
class Found(Packet):
    """Answer to a search or a FIND walk: ``peer`` (with its membership vector) is the result."""

    __slots__ = ("req", "hops", "peer", "mvec")
    TAG = 0xA1
    kind = "sg.found"

    def __init__(self, req: int, hops: int, peer: Peer, mvec: int):
        self.req, self.hops, self.peer, self.mvec = req, hops, peer, mvec

    @property
    def wire_size(self) -> int:
        return _FOUND.size + _peer_len(self.peer) + 8

    def encode(self) -> bytes:
        out = [_FOUND.pack(self.TAG, self.req, self.hops)]
        _put_peer(out, self.peer)
        out.append(struct.pack(">Q", self.mvec))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "Found":
        r = _check_tag(cls, data)
        req, hops = r.unpack(_B_IB)
        peer = r.peer()
        (mvec,) = r.unpack(_B_Q)
        r.end()
        return cls(req, hops, peer, mvec)


_WALK = struct.Struct(">BBBBBBIQQ")


@register_packet
class Walk(Packet):
    """Find the nearest node on ``side`` of the origin sharing ``level`` prefix bits with ``match``.

    INSERT / REPAIR link the origin there (and INSERT / REPAIR up to ``top`` continue one level
    up from the node found); FIND only reports it. ``dead`` is a key no hop may use.
    """

    __slots__ = ("mode", "side", "level", "top", "hops", "req", "match", "dead", "origin")
    TAG = 0xA2
    kind = "sg.walk"

    def __init__(self, mode: int, side: int, level: int, top: int, hops: int, req: int, match: int,
                 dead: int | None, origin: Peer):
        self.mode, self.side, self.level, self.top, self.hops = mode, side, level, top, hops
        self.req, self.match, self.dead, self.origin = req, match, dead, origin

    def hop(self, level: int | None = None) -> "Walk":
        """This walk one hop further (optionally at another level)."""
        lvl = self.level if level is None else level
        return Walk(self.mode, self.side, lvl, self.top, min(self.hops + 1, 255), self.req, self.match,
                    self.dead, self.origin)

    @property
    def wire_size(self) -> int:
        return _WALK.size + _peer_len(self.origin)

    def encode(self) -> bytes:
        out = [_WALK.pack(self.TAG, self.mode, self.side, self.level, self.top, self.hops, self.req, self.match,
                          _none_or_key(self.dead))]
        _put_peer(out, self.origin)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "Walk":
        r = _check_tag(cls, data)
        mode, side, level, top, hops, req, match, dead = r.unpack(_B_BBBBBIQQ)
        pkt = cls(r.choice(mode, range(3), "walk mode"), r.choice(side, range(2), "side"), level, top, hops,
                  req, match, _key_or_none(dead), r.peer())
        r.end()
        return pkt


@register_packet
class Linked(Packet):
    """"You are linked at ``level``: these are your neighbours there" (+ leaf lists at level 0)."""

    __slots__ = ("level", "left", "right", "lefts", "rights")
    TAG = 0xA3
    kind = "sg.linked"

    def __init__(self, level: int, left: Peer | None, right: Peer | None, lefts: tuple = (), rights: tuple = ()):
        self.level, self.left, self.right, self.lefts, self.rights = level, left, right, lefts, rights

    @property
    def wire_size(self) -> int:
        return (4 + _opt_len(self.left) + _opt_len(self.right) + sum(map(_peer_len, self.lefts))
                + sum(map(_peer_len, self.rights)))

    def encode(self) -> bytes:
        out = [bytes([self.TAG, self.level])]
        _put_opt(out, self.left)
        _put_opt(out, self.right)
        for peers in (self.lefts, self.rights):
            if len(peers) > 255:
                raise UsageError(f"{len(peers)} leaf entries; at most 255")
            out.append(bytes([len(peers)]))
            for p in peers:
                _put_peer(out, p)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "Linked":
        r = _check_tag(cls, data)
        level, left, right = r.u8(), r.opt(), r.opt()
        pkt = cls(level, left, right, r.peers(), r.peers())
        r.end()
        return pkt


_WALK_END = struct.Struct(">BBBBBI")


@register_packet
class WalkEnd(Packet):
    """A walk fell off the end of a list: no node on that side matches at ``level``."""

    __slots__ = ("mode", "side", "level", "hops", "req")
    TAG = 0xA4
    kind = "sg.walk_end"

    def __init__(self, mode: int, side: int, level: int, hops: int, req: int):
        self.mode, self.side, self.level, self.hops, self.req = mode, side, level, hops, req

    @property
    def wire_size(self) -> int:
        return _WALK_END.size

    def encode(self) -> bytes:
        return _WALK_END.pack(self.TAG, self.mode, self.side, self.level, self.hops, self.req)

    @classmethod
    def decode(cls, data: bytes) -> "WalkEnd":
        r = _check_tag(cls, data)
        mode, side, level, hops, req = r.unpack(_B_BBBBI)
        r.end()
        return cls(r.choice(mode, range(3), "walk mode"), r.choice(side, range(2), "side"), level, hops, req)


@register_packet
class SetNeighbor(Packet):
    """Set your ``side`` neighbour at ``level`` to ``peer`` if it is still ``expect`` (None: any)."""

    __slots__ = ("level", "side", "peer", "expect")
    TAG = 0xA5
    kind = "sg.set_neighbor"

    def __init__(self, level: int, side: int, peer: Peer | None, expect: int | None):
        self.level, self.side, self.peer, self.expect = level, side, peer, expect

    @property
    def wire_size(self) -> int:
        return 3 + _opt_len(self.peer) + 8

    def encode(self) -> bytes:
        out = [bytes([self.TAG, self.level, self.side])]
        _put_opt(out, self.peer)
        out.append(struct.pack(">Q", _none_or_key(self.expect)))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "SetNeighbor":
        r = _check_tag(cls, data)
        level, side, peer = r.u8(), r.choice(r.u8(), range(2), "side"), r.opt()
        (expect,) = r.unpack(_B_Q)
        r.end()
        return cls(level, side, peer, _key_or_none(expect))


_PING = struct.Struct(">BIBBBBQ")
_B_IBBBBQ = struct.Struct(">IBBBBQ")


@register_packet
class Ping(Packet):
    """Keep-alive and level stabilization.

    ``want`` asks for the receiver's leaf list on that side (2 = none); ``side`` / ``lo`` / ``hi``
    claim "I (key ``key``) am your ``side`` neighbour at levels lo..hi" (side 2 = no claim).
    """

    __slots__ = ("nonce", "want", "side", "lo", "hi", "key")
    TAG = 0xA6
    kind = "sg.ping"

    def __init__(self, nonce: int, want: int, side: int = 2, lo: int = 0, hi: int = 0, key: int = 0):
        self.nonce, self.want, self.side, self.lo, self.hi, self.key = nonce, want, side, lo, hi, key

    @property
    def wire_size(self) -> int:
        return _PING.size

    def encode(self) -> bytes:
        return _PING.pack(self.TAG, self.nonce, self.want, self.side, self.lo, self.hi, self.key)

    @classmethod
    def decode(cls, data: bytes) -> "Ping":
        r = _check_tag(cls, data)
        nonce, want, side, lo, hi, key = r.unpack(_B_IBBBBQ)
        r.end()
        if lo > hi:
            raise ProtocolError(f"ping claims levels {lo}..{hi}")
        return cls(nonce, r.choice(want, range(3), "ping want"), r.choice(side, range(3), "ping side"), lo, hi,
                   key)


@register_packet
class Pong(Packet):
    """Keep-alive answer: the responder's vector, the asked-for leaf list, and its neighbours on
    the claimed side at the claimed levels (so a stale claimant learns who is nearer)."""

    __slots__ = ("nonce", "mvec", "peers", "nbrs")
    TAG = 0xA7
    kind = "sg.pong"

    def __init__(self, nonce: int, mvec: int, peers: tuple = (), nbrs: tuple = ()):
        self.nonce, self.mvec, self.peers, self.nbrs = nonce, mvec, peers, nbrs

    @property
    def wire_size(self) -> int:
        return 15 + sum(map(_peer_len, self.peers)) + sum(map(_opt_len, self.nbrs))

    def encode(self) -> bytes:
        if len(self.peers) > 255 or len(self.nbrs) > 255:
            raise UsageError(f"{len(self.peers)} leaf entries, {len(self.nbrs)} neighbours; at most 255 each")
        out = [struct.pack(">BIQB", self.TAG, self.nonce, self.mvec, len(self.peers))]
        for p in self.peers:
            _put_peer(out, p)
        out.append(bytes([len(self.nbrs)]))
        for p in self.nbrs:
            _put_opt(out, p)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "Pong":
        r = _check_tag(cls, data)
        nonce, mvec = r.unpack(_B_IQ)
        peers = r.peers()
        nbrs = tuple(r.opt() for _ in range(r.u8()))
        r.end()
        return cls(nonce, mvec, peers, nbrs)


# ----- DSML -----------------------------------------------------------------------------------
_AGG = struct.Struct(">BIIB")
_RUN = struct.Struct(">IIQ")


def _int_len(value: int) -> int:
    return (value.bit_length() + 7) // 8


@register_packet
class Aggregate(Packet):
    """A partial aggregate: exact scaled ``total`` and the ``runs`` of leaf weights it contains."""

    __slots__ = ("round", "seq", "flags", "total", "runs")
    TAG = 0xA8
    kind = "dsml.aggregate"

    def __init__(self, round: int, seq: int, flags: int, total: int, runs: tuple):
        self.round, self.seq, self.flags, self.total, self.runs = round, seq, flags, total, runs

    @property
    def wire_size(self) -> int:
        return _AGG.size + 1 + _int_len(self.total) + 4 + _RUN.size * len(self.runs)

    def encode(self) -> bytes:
        n = _int_len(self.total)
        if self.total < 0 or n > 255:
            raise UsageError(f"aggregate total must be a non-negative integer below 2**2040, got {self.total}")
        out = [_AGG.pack(self.TAG, self.round, self.seq, self.flags), bytes([n]), self.total.to_bytes(n, "big"),
               struct.pack(">I", len(self.runs))]
        out += [_RUN.pack(*run) for run in self.runs]
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "Aggregate":
        r = _check_tag(cls, data)
        rnd, seq, flags = r.unpack(_B_IIB)
        if flags > COPY:
            raise ProtocolError(f"unknown aggregate flags {flags:#x}")
        total = int.from_bytes(r.take(r.u8()), "big")
        (n,) = r.unpack(_B_I)
        if n * _RUN.size != len(data) - r.pos:
            raise ProtocolError(f"aggregate announces {n} runs but carries {len(data) - r.pos} bytes of them")
        runs = tuple(_RUN.iter_unpack(r.take(n * _RUN.size)))
        r.end()
        return cls(rnd, seq, flags, total, runs)


_ACK = struct.Struct(">BBII")


@register_packet
class Ack(Packet):
    """Aggregate control: ACK (received), RELEASE (custody passed on), PROBE / PROBE_ACK (alive?)."""

    __slots__ = ("op", "round", "seq")
    TAG = 0xA9
    kind = "dsml.ack"

    def __init__(self, op: int, round: int, seq: int):
        self.op, self.round, self.seq = op, round, seq

    @property
    def wire_size(self) -> int:
        return _ACK.size

    def encode(self) -> bytes:
        return _ACK.pack(self.TAG, self.op, self.round, self.seq)

    @classmethod
    def decode(cls, data: bytes) -> "Ack":
        r = _check_tag(cls, data)
        op, rnd, seq = r.unpack(_B_BII)
        r.end()
        return cls(r.choice(op, range(4), "ack op"), rnd, seq)


_ADOPT = struct.Struct(">BIB")


@register_packet
class Adopt(Packet):
    """A child announces itself to a parent for ``round`` (so the parent knows whom to wait for)."""

    __slots__ = ("round", "height")
    TAG = 0xAA
    kind = "dsml.adopt"

    def __init__(self, round: int, height: int):
        self.round, self.height = round, height

    @property
    def wire_size(self) -> int:
        return _ADOPT.size

    def encode(self) -> bytes:
        return _ADOPT.pack(self.TAG, self.round, self.height)

    @classmethod
    def decode(cls, data: bytes) -> "Adopt":
        r = _check_tag(cls, data)
        rnd, height = r.unpack(_B_IB)
        r.end()
        return cls(rnd, height)
