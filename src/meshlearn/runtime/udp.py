"""Datagrams over UDP: one frame per datagram, for ``send(..., reliable=False)``.

Addressing rule: **a UDP endpoint delivers to exactly one hosted node.** A datagram is a bare
frame (exactly what the simulator counts; nothing is added around it), the frame carries only
its source, so the receiving runtime must host a single node for the destination to be
unambiguous. A runtime hosting several nodes can still *send* datagrams, but rejects (and
counts) datagrams it receives. Nothing outside the MAC decides where a datagram goes, so no
unauthenticated byte can redirect one.

The endpoint binds the same host and port number as the runtime's TCP listener. A runtime
without a listener opens an ephemeral endpoint so it can send; its authenticated inbound
datagrams teach the return address of their source (a server learns where NAT'd clients are).
Datagrams go to ``peers[dst]`` when configured, else to the learned address. Datagrams that
fail the MAC or do not decode are dropped and counted as ``datagrams_rejected``.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from meshlearn.errors import PeerError
from meshlearn.runtime.tcp import Host
from meshlearn.wire import FrameCodec

__all__ = ["UdpEndpoint", "MAX_DATAGRAM_BYTES"]

MAX_DATAGRAM_BYTES = 65_000  # below the 65,507-byte IPv4 UDP payload limit


class UdpEndpoint(asyncio.DatagramProtocol):
    """Sends and receives frames as datagrams."""

    def __init__(self, host: Host, parser: FrameCodec, peers: dict[str, tuple[str, int]],
                 single_node: Callable[[], str | None]):
        self.host, self.parser, self.peers, self.single_node = host, parser, peers, single_node
        self.learned: dict[str, tuple] = {}  # src -> address its last authenticated datagram came from
        self.transport: asyncio.DatagramTransport | None = None

    async def open(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        return self.transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, src: str, dst: str, frame: bytes) -> int:
        addr = self.peers.get(dst) or self.learned.get(dst)
        if addr is None or self.transport is None or self.transport.is_closing():
            self.host.report("messages_dropped_unreachable", src,
                             f"dropped a datagram to {dst!r}: its address is not in peers and it never sent us one")
            return 0
        try:
            self.transport.sendto(frame, addr)
        except OSError as exc:  # e.g. an unresolvable host name
            self.host.report("messages_dropped_unreachable", src, f"dropped a datagram to {dst!r} at {addr}: {exc}")
            return 0
        self.host.written(src, len(frame))
        return len(frame)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        try:
            src, payload = self.parser.open(data)
        except PeerError as exc:
            self.host.report("datagrams_rejected", None, f"rejected a datagram from {where}: {exc}")
            return
        local = self.single_node()
        if local is None:
            self.host.report("datagrams_rejected", None, f"rejected a datagram from {src!r} at {where}: "
                             "this runtime hosts several nodes; a UDP endpoint serves exactly one")
            return
        self.learned[src] = addr
        self.host.receive(local, src, payload, len(data), "datagrams_rejected")

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and the like
        self.host.log(None, "debug", f"UDP error: {exc}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
