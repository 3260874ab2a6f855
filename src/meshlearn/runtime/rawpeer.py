"""RawPeer: one side of the TCP protocol over a bare asyncio stream, for red-team tests and benchmarks.

It speaks the handshake of ``handshake.py`` itself, so a test can be an *insider* (it holds the
key and then misbehaves: never reads, replays a frame, claims another source) or, by re-sending
what an honest peer wrote (``sent``), an *outsider* replaying recorded traffic. Nodes never use it.
"""

from __future__ import annotations

import asyncio

from meshlearn.runtime import handshake as hs
from meshlearn.wire import HEADER_SIZE, MAC_SIZE, FrameCodec, Message, decode_message

__all__ = ["RawPeer"]


class RawPeer:
    """A raw socket that speaks the TCP handshake of ``meshlearn.runtime.handshake`` itself: an
    insider (it holds ``key``) or, replaying ``sent``, an outsider. Everything written is kept in
    ``sent`` so a test can replay it byte for byte on a new socket."""

    def __init__(self, reader, writer, frames: FrameCodec, me: str):
        self.reader, self.writer, self.frames, self.me = reader, writer, frames, me
        self.sent: list[bytes] = []
        self.session = None

    @classmethod
    async def connect(cls, addr, me: str = "mallory", dst: str = "server", key: bytes | None = None,
                      ready: bool = True) -> "RawPeer":
        """Connect to ``addr`` and handshake as ``me`` with ``key`` (None: an unauthenticated runtime);
        ``ready=False`` stops before proving the session key."""
        peer = cls(*await asyncio.open_connection(*addr), FrameCodec(key), me)
        nonce = hs.new_nonce()
        peer.write(hs.hello(peer.frames, key, me, dst, nonce))
        src, payload = peer.frames.open(await asyncio.wait_for(peer.read_raw(), 5))
        theirs = hs.parse_welcome(payload, src, dst, nonce)
        peer.session = hs.Session.derive(key, nonce, theirs, me, dst, side="connector")
        if ready:
            peer.write(hs.ready(peer.frames, peer.session, me))
        return peer

    def write(self, frame: bytes) -> None:
        self.sent.append(frame)
        self.writer.write(frame)

    def send(self, payload: bytes, src: str | None = None) -> bytes:
        """Seal ``payload`` as the next frame of the session (as ``src``, default our id) and send it."""
        frame = self.session.seal(self.frames, src or self.me, payload)
        self.write(frame)
        return frame

    async def read_raw(self) -> bytes:
        head = await self.reader.readexactly(HEADER_SIZE)
        src_len, body_len, has_mac = self.frames.parse_header(head)
        return head + await self.reader.readexactly(src_len + body_len + (MAC_SIZE if has_mac else 0))

    async def read(self, timeout: float = 5.0) -> tuple[str, Message]:
        src, payload = self.session.open(self.frames, await asyncio.wait_for(self.read_raw(), timeout))
        return src, decode_message(payload)

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the other side closed (what it still sent before is skipped)."""
        await asyncio.wait_for(self.reader.read(), timeout)
        return True

    def close(self) -> None:
        self.writer.close()
