"""Reliable messages over TCP: one connection per (local node, remote node) pair.

Every unit is a :class:`~meshlearn.wire.FrameCodec` frame. A connection starts with the
three-frame handshake of ``handshake.py`` (hello, welcome, ready): nonces from both sides, a
per-session key per direction, and frames MAC'd with a sequence number the wire does not carry.
The listener binds a route to the connector only once the connector proved the key for *this*
session, so a recorded handshake replayed on a new socket is rejected and the honest route kept.
Handshake frames are counted as control bytes, never as a node's tx/rx bytes. ``admits(id)``
says which remote ids may connect at all (the deployment's members); others are rejected.

What a peer gets wrong never crashes the runtime; it is counted in ``stats`` and logged:

* a malformed or oversized frame header, a truncated frame, a failed MAC (wrong key, tampered,
  replayed or reordered frame), or a frame whose ``src`` differs from the one the handshake
  bound: the stream can no longer be trusted, so that connection is closed (others are served);
* a frame that opens fine but whose message does not decode: that message is dropped and the
  connection kept (the runtime's ``receive`` does this);
* a peer that does not read: once ``write_buffer_max`` bytes wait in its socket buffer, further
  messages to it are dropped and counted (``messages_dropped_backpressure``), so a stalled
  reader costs this process a bounded amount of memory.

Outbound connections are made lazily on the first send to a node in ``peers``. While a
connect attempt is in flight up to ``queue_max`` messages wait for it; when the attempt fails
they are dropped, later sends are dropped until the next attempt, and the transport retries
every ``connect_retry_s`` for as long as something is being sent. Nothing queues without
bound. When a connection closes its route is removed.

This module owns sockets only; decoding lives in ``aio.py``, nodes and counters in ``meshlearn.host``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from meshlearn.errors import AuthError, PeerError, ProtocolError
from meshlearn.runtime import handshake as hs
from meshlearn.wire import HEADER_SIZE, MAC_SIZE, FrameCodec
from meshlearn.wire.keys import Keyring

__all__ = ["TcpTransport", "Host", "read_raw", "FrameTooLarge", "WRITE_BUFFER_MAX"]

WRITE_BUFFER_MAX = 64 * 2**20  # bytes waiting for one slow reader before messages to it are dropped
_NET_ERRORS = (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError)


class Host(Protocol):
    """What the transports need from the runtime (implemented by ``AsyncioRuntime``)."""

    def is_hosted(self, node_id: str) -> bool: ...
    def receive(self, local: str, src: str, payload: bytes, nbytes: int, reject_counter: str) -> None: ...
    def written(self, node_id: str, nbytes: int) -> None: ...
    def control(self, node_id: str | None, nbytes: int) -> None: ...
    def report(self, counter: str, node_id: str | None, text: str) -> None: ...
    def log(self, node_id: str | None, level: str, text: str) -> None: ...


class FrameTooLarge(ProtocolError):
    """A frame header declares more bytes than this runtime accepts."""


async def read_raw(reader: asyncio.StreamReader, parser: FrameCodec, limit: int) -> bytes:
    """Read one whole frame, unchecked beyond its header (the caller opens it with its key).

    Raises ``IncompleteReadError`` at end of stream, :class:`FrameTooLarge` before reading an
    oversized body, ``ProtocolError``/``AuthError`` for a bad header. ``parser`` must not
    limit sizes itself (``limit`` does), so oversized frames are told apart from malformed ones.
    """
    head = await reader.readexactly(HEADER_SIZE)
    src_len, body_len, has_mac = parser.parse_header(head)
    size = HEADER_SIZE + src_len + body_len + (MAC_SIZE if has_mac else 0)
    if size > limit:
        raise FrameTooLarge(f"frame header declares {size} bytes, over the limit of {limit}")
    return head + await reader.readexactly(size - HEADER_SIZE)


@dataclass(eq=False)
class _Link:
    """One live connection; ``local`` is the node hosted here, ``remote`` the node at the far end."""

    local: str
    remote: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    outbound: bool
    session: hs.Session
    task: asyncio.Task | None = None


@dataclass(eq=False)
class _Dial:
    """Outbound connection attempts for one (local, remote) pair."""

    queue: deque = field(default_factory=deque)
    attempting: bool = False
    wanted: bool = False  # something was sent since the last failed attempt: keep retrying
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


class TcpTransport:
    """Listener, connector and per-pair routes for reliable frames."""

    def __init__(
        self,
        host: Host,
        frames: FrameCodec,
        parser: FrameCodec,
        peers: dict[str, tuple[str, int]],
        *,
        max_frame_bytes: int,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        keys: Keyring | None = None,
        admits: Callable[[str], bool] = lambda remote: True,
        connect_retry_s: float = 1.0,
        handshake_timeout: float = 10.0,
        queue_max: int = 16,
        write_buffer_max: int = WRITE_BUFFER_MAX,
    ):
        self.host, self.frames, self.parser, self.peers = host, frames, parser, peers
        self.keys, self.admits, self.write_buffer_max = keys, admits, write_buffer_max
        self.max_frame_bytes = max_frame_bytes
        self.ssl_server, self.ssl_client = ssl_server, ssl_client
        self.connect_retry_s, self.handshake_timeout, self.queue_max = connect_retry_s, handshake_timeout, queue_max
        self.routes: dict[tuple[str, str], _Link] = {}  # (local, remote) -> the connection used to send
        self.links: set[_Link] = set()
        self.dials: dict[tuple[str, str], _Dial] = {}
        self.server: asyncio.Server | None = None
        self._accepting: dict[asyncio.Task, asyncio.StreamWriter] = {}  # handshakes in progress
        self._closing = False

    # ----- listening ----------------------------------------------------------------------
    async def listen(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._accept, host, port, ssl=self.ssl_server)
        return self.server.sockets[0].getsockname()[:2]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Never cancelled (Python 3.11's start_server callback mishandles cancelled tasks):
        # close() closes the writer instead, which ends the handshake read.
        task = asyncio.current_task()
        self._accepting[task] = writer
        try:
            link = await self._handshake_in(reader, writer)
        finally:
            del self._accepting[task]
        if link is not None and not self._closing:
            link.task = asyncio.get_running_loop().create_task(self._read_loop(link))
            return
        if link is not None:
            self._unbind(link)
        writer.close()

    async def _handshake_in(self, reader, writer) -> _Link | None:
        where = _peername(writer)
        try:
            frame = await asyncio.wait_for(read_raw(reader, self.parser, hs.HELLO_MAX_BYTES), self.handshake_timeout)
            src, payload = self.parser.open(frame, key=self._key_for)
        except (asyncio.TimeoutError, *_NET_ERRORS) as exc:
            self.host.log(None, "info", f"connection from {where} closed before its handshake: {_why(exc)}")
            return None
        except PeerError as exc:
            self.host.report(_counter(exc), None, f"rejected handshake from {where}: {exc}")
            return None
        try:
            dst, nonce = hs.parse_hello(payload)
            why = self._refusal(src, dst)
        except ProtocolError as exc:
            why = str(exc)
        if why is not None:
            self.host.control(None, len(frame))
            self.host.report("handshakes_rejected", None, f"rejected handshake from {src!r} at {where}: {why}")
            return None
        self.host.control(dst, len(frame))
        return await self._finish_in(reader, writer, src, dst, nonce)

    def _refusal(self, src: str, dst: str) -> str | None:
        if not self.host.is_hosted(dst):
            return f"it asks for node {dst!r}, which is not hosted here"
        if self.host.is_hosted(src):
            return f"it claims to be {src!r}, a node hosted here"
        if not self.admits(src):
            return f"{src!r} is not a member of this deployment"
        return None

    async def _finish_in(self, reader, writer, src: str, dst: str, nonce: str) -> _Link | None:
        """Welcome the connector; bind its route once it proved this session's key (ready)."""
        ours = hs.new_nonce()
        key = self._key_for(src)
        session = hs.Session.derive(key, nonce, ours, src, dst, side="listener")
        reply = hs.welcome(self.frames, key, dst, nonce, ours)
        writer.write(reply)
        self.host.control(dst, len(reply))
        try:
            frame = await asyncio.wait_for(read_raw(reader, self.parser, hs.HELLO_MAX_BYTES), self.handshake_timeout)
            got, payload = session.open(self.parser, frame)
            if got != src:
                raise AuthError(f"the ready frame claims src {got!r}")
            hs.check_ready(payload)
        except (asyncio.TimeoutError, *_NET_ERRORS) as exc:
            self.host.log(dst, "info", f"{src!r} ({_peername(writer)}) left during the handshake: {_why(exc)}")
            return None
        except PeerError as exc:
            self.host.report("handshakes_rejected", dst, f"rejected handshake from {src!r} at {_peername(writer)}: "
                             f"it did not prove this session's key (a replayed handshake?): {exc}")
            return None
        self.host.control(dst, len(frame))
        link = _Link(dst, src, reader, writer, outbound=False, session=session)
        self._bind(link)
        return link

    def _key_for(self, remote: str) -> bytes | None:
        return None if self.keys is None else self.keys.key_for(remote)

    # ----- connecting ---------------------------------------------------------------------
    def _start_dial(self, key: tuple[str, str]) -> _Dial:
        dial = self.dials[key] = _Dial()
        dial.task = asyncio.get_running_loop().create_task(self._dial_loop(key, dial))
        dial.attempting = True  # the task's first step is an attempt: let sends queue now
        dial.settled.clear()
        return dial

    async def _dial_loop(self, key: tuple[str, str], dial: _Dial) -> None:
        local, remote = key
        try:
            while True:
                dial.attempting, dial.wanted = True, False
                dial.settled.clear()
                try:
                    link = await self._connect(local, remote)
                except Exception as exc:  # whatever went wrong, this attempt failed
                    link, why = None, _why(exc)
                dial.attempting = False
                dial.settled.set()
                if link is not None:
                    for payload in dial.queue:
                        self._write(link, payload)
                    return
                lost = len(dial.queue)
                dial.queue.clear()
                self.host.log(local, "warning", f"cannot connect to {remote!r} at {self.peers.get(remote)}: {why}; "
                              f"{lost} queued message(s) dropped, retrying every {self.connect_retry_s}s while sending")
                for _ in range(lost):
                    self.host.report("messages_dropped_unreachable", local, f"dropped a message to {remote!r}")
                await asyncio.sleep(self.connect_retry_s)
                if not dial.wanted:
                    return
        finally:
            dial.attempting = False
            dial.settled.set()
            if self.dials.get(key) is dial:
                del self.dials[key]

    async def _connect(self, local: str, remote: str) -> _Link:
        addr = self.peers[remote]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addr[0], addr[1], ssl=self.ssl_client), self.handshake_timeout)
        try:
            session = await self._handshake_out(reader, writer, local, remote)
        except BaseException:
            writer.close()
            raise
        link = _Link(local, remote, reader, writer, outbound=True, session=session)
        self._bind(link)
        link.task = asyncio.get_running_loop().create_task(self._read_loop(link))
        return link

    async def _handshake_out(self, reader, writer, local: str, remote: str) -> hs.Session:
        nonce, key = hs.new_nonce(), self._key_for(remote)
        first = hs.hello(self.frames, key, local, remote, nonce)
        writer.write(first)
        self.host.control(local, len(first))
        try:
            frame = await asyncio.wait_for(read_raw(reader, self.parser, hs.HELLO_MAX_BYTES), self.handshake_timeout)
            src, payload = self.parser.open(frame, key=key)
        except asyncio.IncompleteReadError:
            raise ConnectionError("the listener closed the connection during the handshake (different secret "
                                  "or key, this id not a member there, or the node id is not hosted there?)") from None
        except PeerError as exc:
            self.host.report(_counter(exc), local, f"bad handshake reply from {remote!r}: {exc}")
            raise
        self.host.control(local, len(frame))
        theirs = hs.parse_welcome(payload, src, remote, nonce)
        session = hs.Session.derive(key, nonce, theirs, local, remote, side="connector")
        last = hs.ready(self.frames, session, local)
        writer.write(last)
        self.host.control(local, len(last))
        return session

    # ----- routes, reading, writing -------------------------------------------------------
    def _bind(self, link: _Link) -> None:
        """The newest connection of a pair carries what we send; older ones are still read."""
        self.links.add(link)
        self.routes[(link.local, link.remote)] = link

    def _unbind(self, link: _Link) -> None:
        self.links.discard(link)
        if self.routes.get((link.local, link.remote)) is link:
            del self.routes[(link.local, link.remote)]

    async def _read_loop(self, link: _Link) -> None:
        where = f"{link.remote!r} ({_peername(link.writer)})"
        try:
            while True:
                frame = await read_raw(link.reader, self.parser, self.max_frame_bytes)
                src, payload = link.session.open(self.parser, frame)
                nbytes = len(frame)
                if src != link.remote:
                    self.host.report("frames_rejected_auth", link.local,
                                     f"closed connection from {where}: a frame claims src {src!r}")
                    return
                self.host.receive(link.local, src, payload, nbytes, "frames_rejected_malformed")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self.host.report("frames_rejected_malformed", link.local, f"connection from {where} ended mid-frame")
        except PeerError as exc:
            self.host.report(_counter(exc), link.local, f"closed connection from {where}: {exc}")
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            self.host.log(link.local, "info", f"connection to {where} lost: {_why(exc)}")
        finally:
            self._unbind(link)
            link.writer.close()

    def _write(self, link: _Link, payload: bytes) -> int:
        """Seal and write ``payload``; 0 (dropped, counted) while the peer is not reading."""
        buffered = link.writer.transport.get_write_buffer_size()
        if buffered >= self.write_buffer_max:
            self.host.report("messages_dropped_backpressure", link.local,
                             f"dropped a message to {link.remote!r}: {buffered} bytes wait unread in its socket "
                             f"(limit {self.write_buffer_max}); the peer is not reading")
            return 0
        frame = link.session.seal(self.frames, link.local, payload)
        link.writer.write(frame)
        self.host.written(link.local, len(frame))
        return len(frame)

    def send(self, src: str, dst: str, payload: bytes) -> int:
        """Write, queue (connect in flight) or drop the frame of ``payload``; returns the bytes accepted."""
        if self._closing:
            return 0
        link = self.routes.get((src, dst))
        if link is not None and not link.writer.is_closing():
            return self._write(link, payload)
        if dst not in self.peers:
            self.host.report("messages_dropped_unreachable", src,
                             f"dropped a message to {dst!r}: no connection and its address is not in peers")
            return 0
        dial = self.dials.get((src, dst)) or self._start_dial((src, dst))
        if dial.attempting and len(dial.queue) < self.queue_max:
            dial.queue.append(payload)
            return self.frames.frame_size(src, len(payload))
        dial.wanted = True
        why = "connect queue full" if dial.attempting else "not connected, retry pending"
        self.host.report("messages_dropped_unreachable", src, f"dropped a message to {dst!r}: {why}")
        return 0

    # ----- closing ------------------------------------------------------------------------
    async def close(self, linger: float) -> None:
        """Stop listening, let queued and buffered frames leave (up to ``linger`` s per stage), close."""
        self._closing = True
        if self.server is not None:
            self.server.close()
        waiting = [asyncio.ensure_future(d.settled.wait()) for d in self.dials.values() if d.attempting and d.queue]
        if waiting:
            await asyncio.wait(waiting, timeout=linger)
            for w in waiting:
                w.cancel()
        dials = [d.task for d in self.dials.values()]
        for task in dials:
            task.cancel()
        await asyncio.gather(*(self._close_link(link, linger) for link in list(self.links)), return_exceptions=True)
        for writer in self._accepting.values():
            writer.close()
        if self._accepting or dials:
            await asyncio.wait([*self._accepting, *dials], timeout=linger)
        if self.server is not None:
            await self.server.wait_closed()

    async def _close_link(self, link: _Link, linger: float) -> None:
        """Half-close after the buffered frames, then wait for the peer's EOF before closing, so
        the peer reads everything we sent and nothing in flight is reset."""
        writer = link.writer
        try:
            if not writer.is_closing() and writer.can_write_eof():  # plain TCP (TLS cannot half-close)
                writer.write_eof()
                await asyncio.wait([link.task], timeout=linger)
            writer.close()  # flushes what is still buffered (TLS: then close_notify)
            await asyncio.wait_for(writer.wait_closed(), linger)
        except (asyncio.TimeoutError, *_NET_ERRORS):
            pass
        finally:
            link.task.cancel()
            writer.close()
            self._unbind(link)


def _counter(exc: PeerError) -> str:
    if isinstance(exc, FrameTooLarge):
        return "frames_oversized"
    return "frames_rejected_auth" if isinstance(exc, AuthError) else "frames_rejected_malformed"


def _peername(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
