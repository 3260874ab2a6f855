"""SWIM packets and membership updates, struct-encoded (tags 0x80–0x85).

Every probe packet has one layout::

    tag u8 | seq u32 | target str | n u8 | update * n

where ``str`` is a u8 length + UTF-8 bytes. ``Ping``, ``Ack``, ``PingReq``, ``Nack`` and
``Gossip`` differ only by tag (unused fields are 0 / ""). Updates ride along (piggybacking):

    ALIVE   code u8 | incarnation u32 | node str
    SUSPECT code u8 | incarnation u32 | node str | from str
    DEAD    code u8 | incarnation u32 | node str | from str      (from == node: it left)
    USER    code u8 | seq u32 | origin str | length u16 | bytes    (application broadcast)

An update is a plain tuple ``(code, a, b, c)``: (code, node, incarnation, from) for membership,
(USER, origin, seq, payload) for user broadcasts; ``update_size`` gives its encoded bytes, so the
sender fills a 1,400-byte datagram without encoding anything. ``Sync`` (push/pull of the whole
table, sent reliably) carries ``(code, incarnation, node)`` entries and a reply flag.
"""

from __future__ import annotations

import struct

import numpy as np

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.wire.packet import Packet, PacketReader, register_packet

__all__ = ["ALIVE", "SUSPECT", "DEAD", "USER", "Ping", "Ack", "PingReq", "Nack", "Gossip", "Sync",
           "update_size", "MAX_ID_BYTES"]

ALIVE, SUSPECT, DEAD, USER = 1, 2, 3, 4
MAX_ID_BYTES = 255
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_HEAD = struct.Struct(">BI")  # tag, seq


def _id_len(text: str) -> int:
    """Encoded length of a node id (ASCII ids: one byte per character)."""
    return len(text) if text.isascii() else len(text.encode())


def update_size(update: tuple) -> int:
    """Encoded bytes of one piggybacked update."""
    code, a, _, c = update
    if code == ALIVE:
        return 6 + _id_len(a)
    if code == USER:
        return 8 + _id_len(a) + len(c)
    return 7 + _id_len(a) + _id_len(c)


def _put_str(out: list[bytes], text: str) -> None:
    raw = text.encode()
    if len(raw) > MAX_ID_BYTES:
        raise UsageError(f"node id {text[:40]!r}… is {len(raw)} bytes; ids are at most {MAX_ID_BYTES}")
    out += [bytes([len(raw)]), raw]


def _put_update(out: list[bytes], update: tuple) -> None:
    code, a, b, c = update
    if code == USER:
        out += [bytes([USER]), _U32.pack(b)]
        _put_str(out, a)
        out += [_U16.pack(len(c)), bytes(c)]
        return
    out += [bytes([code]), _U32.pack(b)]
    _put_str(out, a)
    if code != ALIVE:
        _put_str(out, c)


class _Reader(PacketReader):
    """Adds piggybacked membership updates to the shared bounds-checked reader."""

    __slots__ = ()

    def update(self) -> tuple:
        code = self.u8()
        if code == USER:
            seq, origin = self.u32(), self.text()
            return (USER, origin, seq, self.take(self.u16()))
        if code not in (ALIVE, SUSPECT, DEAD):
            raise ProtocolError(f"unknown membership update type {code}")
        inc, node = self.u32(), self.text()
        return (code, node, inc, "" if code == ALIVE else self.text())


class _Probe(Packet):
    """Shared body of the probe packets: sequence number, target node id, piggybacked updates."""

    __slots__ = ("seq", "target", "updates")

    def __init__(self, seq: int = 0, target: str = "", updates: tuple = ()):
        self.seq, self.target, self.updates = seq, target, updates

    @property
    def wire_size(self) -> int:
        return 7 + _id_len(self.target) + sum(map(update_size, self.updates))

    def encode(self) -> bytes:
        if len(self.updates) > 255:
            raise UsageError(f"{len(self.updates)} updates in one packet; at most 255")
        out = [_HEAD.pack(self.TAG, self.seq)]
        _put_str(out, self.target)
        out.append(bytes([len(self.updates)]))
        for update in self.updates:
            _put_update(out, update)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "_Probe":
        reader = _Reader(data, cls.__name__)
        seq, target = reader.u32(), reader.text()
        updates = tuple(reader.update() for _ in range(reader.u8()))
        reader.end()
        return cls(seq, target, updates)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seq={self.seq}, target={self.target!r}, updates={len(self.updates)})"


@register_packet
class Ping(_Probe):
    """Are you alive? (``target`` names the intended node, so a misdirected ping is noticed.)"""

    __slots__ = ()
    TAG, kind = 0x80, "swim.ping"


@register_packet
class Ack(_Probe):
    """Yes: answers a Ping (or relays an indirect probe's answer) with the same ``seq``."""

    __slots__ = ()
    TAG, kind = 0x81, "swim.ack"


@register_packet
class PingReq(_Probe):
    """Please ping ``target`` for me and relay its Ack (indirect probe)."""

    __slots__ = ()
    TAG, kind = 0x82, "swim.ping_req"


@register_packet
class Nack(_Probe):
    """Lifeguard: the intermediary of a PingReq is alive but got no Ack from the target."""

    __slots__ = ()
    TAG, kind = 0x83, "swim.nack"


@register_packet
class Gossip(_Probe):
    """Updates only, sent to a few random members each gossip interval while any are queued."""

    __slots__ = ()
    TAG, kind = 0x84, "swim.gossip"


@register_packet
class Sync(Packet):
    """Push/pull of the whole membership table (sent reliably); ``reply`` marks the pull answer.

    Built from a table with ``Sync.of_table`` it holds a snapshot ``view`` = (roster, states,
    incarnations) and lists its ``entries`` only when asked (encoding for a socket, or a
    receiver with another roster); a simulated receiver sharing the roster diffs the snapshot
    against its own table instead of walking 10,000 entries.
    """

    __slots__ = ("_entries", "reply", "view")
    TAG, kind = 0x85, "swim.sync"

    def __init__(self, entries: tuple | None = (), reply: bool = False, view: tuple | None = None):
        self._entries, self.reply, self.view = entries, reply, view

    @classmethod
    def of_table(cls, table, reply: bool) -> "Sync":
        return cls(None, reply, (table.roster, bytes(table.state), dict(table.inc)))

    @property
    def entries(self) -> tuple:
        """(state, incarnation, node id) of every member the sender knows."""
        if self._entries is None:
            roster, states, incs = self.view
            ids = roster.ids
            self._entries = tuple((v, incs.get(s, 0), ids[s]) for s, v in enumerate(states) if v)
        return self._entries

    @property
    def wire_size(self) -> int:
        if self._entries is None:
            roster, states, _ = self.view
            known = np.frombuffer(states, dtype=np.uint8) != 0
            lengths = np.frombuffer(roster.id_bytes, dtype=np.uint16)[: len(states)]
            return 4 + 6 * int(known.sum()) + int(lengths[known].sum())
        return 4 + sum(6 + _id_len(node) for _, _, node in self._entries)

    def encode(self) -> bytes:
        entries = self.entries
        if len(entries) > 0xFFFF:
            raise UsageError(f"{len(entries)} entries in one Sync; at most 65535")
        out = [bytes([self.TAG, int(self.reply)]), _U16.pack(len(entries))]
        for code, inc, node in entries:
            out += [bytes([code]), _U32.pack(inc)]
            _put_str(out, node)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> "Sync":
        reader = _Reader(data, cls.__name__)
        reply = reader.u8()
        entries = []
        for _ in range(reader.u16()):
            code, inc = reader.u8(), reader.u32()
            if code not in (ALIVE, SUSPECT, DEAD):
                raise ProtocolError(f"unknown membership state {code} in Sync")
            entries.append((code, inc, reader.text()))
        reader.end()
        return cls(tuple(entries), bool(reply))
