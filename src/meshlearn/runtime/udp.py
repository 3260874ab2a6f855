"""Datagrams over UDP: one frame per datagram, for ``send(..., reliable=False)``.

Addressing rule: **a UDP endpoint delivers to exactly one hosted node.** The frame carries only
its source, so the receiving runtime must host a single node for the destination to be
unambiguous. A runtime hosting several nodes can still *send* datagrams, but rejects (and
counts) datagrams it receives. Nothing outside the MAC decides where a datagram goes, so no
unauthenticated byte can redirect one.

Replay protection (authenticated runtimes): the body of every datagram starts with
:data:`STAMP_BYTES` bytes, ``epoch u64 | seq u64``, inside the MAC. The epoch is drawn once per
endpoint (milliseconds in its top bits, randomness below), the sequence number counts the datagrams
it sends. The receiver keeps, per source id, the newest epoch and a sliding window of the last
:data:`WINDOW` sequence numbers (:class:`ReplayGuard`): a datagram seen before, older than the
window, or of an older epoch is dropped and counted as ``datagrams_replayed``. So a recorded
datagram re-sent from anywhere is never delivered twice, and only a *fresh* authenticated
datagram teaches where its source is: a replay from another address cannot re-point replies.
What is left: across a restart of the *receiver* (its window is gone) a recorded datagram of the
sender's current epoch can be delivered once more until the sender sends again; and a sender whose
clock was set back before it restarted is refused (counted, logged) by receivers that saw its old epoch.

The endpoint binds the same host and port number as the runtime's TCP listener. A runtime
without a listener opens an ephemeral endpoint so it can send; its authenticated inbound
datagrams teach the return address of their source (a server learns where NAT'd clients are).
Datagrams go to ``peers[dst]`` when configured, else to the learned address. Datagrams that
fail the MAC or do not decode are dropped and counted as ``datagrams_rejected``.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
import time
from dataclasses import dataclass
from typing import Callable

from meshlearn.errors import PeerError, ProtocolError
from meshlearn.runtime.tcp import Host
from meshlearn.wire import FrameCodec
from meshlearn.wire.frame import STAMP_BYTES
from meshlearn.wire.keys import Keyring

__all__ = ["UdpEndpoint", "ReplayGuard", "MAX_DATAGRAM_BYTES", "STAMP_BYTES", "WINDOW", "new_epoch"]

MAX_DATAGRAM_BYTES = 65_000  # below the 65,507-byte IPv4 UDP payload limit
WINDOW = 1024  # sequence numbers remembered per source: reordering deeper than this is dropped
GUARDS_MAX = 4096  # sources remembered; the oldest is forgotten beyond this
_STAMP = struct.Struct(">QQ")


def new_epoch(now: float | None = None) -> int:
    """An endpoint's epoch: milliseconds since 1970 in the top 48 bits, 16 random bits below, so a
    sender that restarts (even within the same second) gets a newer epoch than before."""
    return (int(1000 * (time.time() if now is None else now)) & (2**48 - 1)) << 16 | secrets.randbits(16)


@dataclass
class ReplayGuard:
    """Newest epoch and the window of sequence numbers seen from one source."""

    epoch: int = -1
    top: int = -1  # highest sequence number accepted in this epoch
    seen: int = 0  # bit i set: sequence number top - i was accepted

    def check(self, epoch: int, seq: int) -> str | None:
        """Why (epoch, seq) is a replay, or None; does not record it (see ``accept``)."""
        if epoch < self.epoch:
            return f"epoch {epoch:#x} is older than the current {self.epoch:#x}"
        if epoch > self.epoch or seq > self.top:
            return None
        if self.top - seq >= WINDOW:
            return f"sequence number {seq} is older than the window ({self.top} - {WINDOW})"
        return f"sequence number {seq} was seen before" if self.seen >> (self.top - seq) & 1 else None

    def accept(self, epoch: int, seq: int) -> None:
        if epoch > self.epoch:
            self.epoch, self.top, self.seen = epoch, seq, 1
        elif seq > self.top:
            shift = seq - self.top
            self.seen = (self.seen << shift | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self.top = seq
        else:
            self.seen |= 1 << (self.top - seq)


class UdpEndpoint(asyncio.DatagramProtocol):
    """Sends and receives frames as datagrams."""

    def __init__(self, host: Host, parser: FrameCodec, peers: dict[str, tuple[str, int]],
                 single_node: Callable[[], str | None], *, frames: FrameCodec | None = None,
                 keys: Keyring | None = None, admits: Callable[[str], bool] = lambda remote: True):
        self.host, self.parser, self.peers, self.single_node = host, parser, peers, single_node
        self.frames, self.keys, self.admits = frames or parser, keys, admits
        self.learned: dict[str, tuple] = {}  # src -> address its last fresh authenticated datagram came from
        self.guards: dict[str, ReplayGuard] = {}
        self.epoch, self.seq = new_epoch(), 0
        self.transport: asyncio.DatagramTransport | None = None

    async def open(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        return self.transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, src: str, dst: str, payload: bytes) -> int:
        addr = self.peers.get(dst) or self.learned.get(dst)
        if addr is None or self.transport is None or self.transport.is_closing():
            self.host.report("messages_dropped_unreachable", src,
                             f"dropped a datagram to {dst!r}: its address is not in peers and it never sent us one")
            return 0
        frame = self._seal(src, dst, payload)
        try:
            self.transport.sendto(frame, addr)
        except OSError as exc:  # e.g. an unresolvable host name
            self.host.report("messages_dropped_unreachable", src, f"dropped a datagram to {dst!r} at {addr}: {exc}")
            return 0
        self.host.written(src, len(frame))
        return len(frame)

    def _seal(self, src: str, dst: str, payload: bytes) -> bytes:
        if self.keys is None:
            return self.frames.seal(src, payload)
        self.seq += 1
        return self.frames.seal(src, _STAMP.pack(self.epoch, self.seq) + payload, key=self.keys.key_for(dst))

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        try:
            src, payload = self.parser.open(data, key=self._key_for)
            epoch, seq, payload = self._unstamp(payload)
        except PeerError as exc:
            self.host.report("datagrams_rejected", None, f"rejected a datagram from {where}: {exc}")
            return
        local = self.single_node()
        if local is None or not self.admits(src):
            why = "this runtime hosts several nodes; a UDP endpoint serves exactly one" if local is None else \
                "it is not a member of this deployment"
            self.host.report("datagrams_rejected", None, f"rejected a datagram from {src!r} at {where}: {why}")
            return
        if self.keys is not None and not self._fresh(src, epoch, seq, where):
            return
        self.learned[src] = addr
        self.host.receive(local, src, payload, len(data), "datagrams_rejected")

    def _key_for(self, remote: str) -> bytes | None:
        return None if self.keys is None else self.keys.key_for(remote)

    def _unstamp(self, payload: bytes) -> tuple[int, int, bytes]:
        if self.keys is None:
            return 0, 0, payload
        if len(payload) < STAMP_BYTES:
            raise ProtocolError(f"datagram body of {len(payload)} bytes lacks its {STAMP_BYTES}-byte replay stamp")
        epoch, seq = _STAMP.unpack_from(payload)
        return epoch, seq, payload[STAMP_BYTES:]

    def _fresh(self, src: str, epoch: int, seq: int, where: str) -> bool:
        guard = self.guards.get(src)
        if guard is None:
            if len(self.guards) >= GUARDS_MAX:
                del self.guards[next(iter(self.guards))]
            guard = self.guards[src] = ReplayGuard()
        why = guard.check(epoch, seq)
        if why is not None:
            self.host.report("datagrams_replayed", None, f"dropped a replayed datagram from {src!r} at {where}: {why}")
            return False
        guard.accept(epoch, seq)
        return True

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and the like
        self.host.log(None, "debug", f"UDP error: {exc}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
