"""Peers that misbehave: wrong secret, garbage, oversized headers, bad MACs, forged sources.

Each is logged and counted; the runtime keeps serving honest peers.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from rt_helpers import LOCAL, SECRET, Asker, Echo, Ponger, RawPeer, until

from meshlearn.runtime import AsyncioRuntime
from meshlearn.wire import FrameCodec, Message, encode_message

pytestmark = pytest.mark.timeout(30)
FRAMES = FrameCodec(SECRET)


async def _echo_server() -> tuple[AsyncioRuntime, Echo]:
    rt, echo = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET), Echo("server")
    rt.add_node(echo)
    await rt.start()
    return rt, echo


async def _closed_by_peer(reader) -> bool:
    return await asyncio.wait_for(reader.read(), 5) == b""


async def _honest_ping(server: AsyncioRuntime) -> None:
    """A well-behaved client runtime still gets served."""
    client = AsyncioRuntime(peers={"server": server.address}, secret=SECRET)
    asker = Asker("honest", "server")
    client.add_node(asker)
    assert await client.run(timeout=5)
    assert asker.answer[0] == "server" and asker.answer[1].kind == "t.ask"


def test_wrong_secret_is_rejected_and_honest_client_still_served():
    async def main():
        server, echo = await _echo_server()
        intruder = AsyncioRuntime(peers={"server": server.address}, secret=b"not-the-secret", connect_retry_s=0.05)
        intruder.add_node(Asker("intruder", "server"))
        serving = asyncio.ensure_future(server.run(timeout=10))
        assert await intruder.run(timeout=0.5) is False
        await _honest_ping(server)
        server.context("server").stop()
        await serving
        return server, echo, intruder

    server, echo, intruder = asyncio.run(main())
    assert server.stats["frames_rejected_auth"] >= 1
    assert all(src == "honest" for src, _ in echo.got) and echo.got
    assert intruder.stats["messages_dropped_unreachable"] >= 1
    assert intruder.context("intruder").tx_bytes == 0
    assert any("MAC" in line[3] for line in server.log_lines)


@pytest.mark.parametrize("junk, counter", [
    (b"ML" + struct.pack(">BBBI", 1, 1, 5, 2**31), "frames_oversized"),  # 2 GiB body declared
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frames_rejected_malformed"),
    (FrameCodec(None).seal("mallory", b"no mac"), "frames_rejected_auth"),
])
def test_bad_first_frame_closes_that_connection_only(junk, counter):
    async def main():
        server, _ = await _echo_server()
        serving = asyncio.ensure_future(server.run(timeout=10))
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(junk)
        assert await _closed_by_peer(reader)
        writer.close()
        await _honest_ping(server)
        server.context("server").stop()
        await serving
        return server

    server = asyncio.run(main())
    assert server.stats[counter] == 1
    assert sum(server.stats[k] for k in ("frames_oversized", "frames_rejected_malformed", "frames_rejected_auth")) == 1


def test_undecodable_message_is_dropped_but_the_connection_kept():
    async def main():
        server, echo = await _echo_server()
        serving = asyncio.ensure_future(server.run(timeout=10))
        peer = await RawPeer.connect(server.address, key=SECRET)
        peer.send(b"\x00\x00\x00\x05{bad}")  # valid MAC, invalid message
        await until(lambda: server.stats["frames_rejected_malformed"] == 1)
        peer.send(encode_message(Message.make("t.fine", n=1)))
        src, back = await peer.read()  # the echo comes back
        peer.close()
        server.context("server").stop()
        await serving
        return server, echo, src, back

    server, echo, src, back = asyncio.run(main())
    assert (src, back.kind) == ("server", "t.fine")
    assert [(s, m.kind) for s, m in echo.got] == [("mallory", "t.fine")]
    assert any("undecodable" in line[3] for line in server.log_lines)


@pytest.mark.parametrize("attack, counter", [
    ("forged_src", "frames_rejected_auth"),
    ("bad_mac", "frames_rejected_auth"),
    ("oversized", "frames_oversized"),
    ("truncated", "frames_rejected_malformed"),
])
def test_bad_frame_after_handshake_closes_the_connection(attack, counter):
    async def main():
        server, echo = await _echo_server()
        serving = asyncio.ensure_future(server.run(timeout=10))
        peer = await RawPeer.connect(server.address, key=SECRET)
        reader, writer = peer.reader, peer.writer
        frame = peer.session.seal(FRAMES, "eve" if attack == "forged_src" else "mallory",
                                  encode_message(Message.make("t.x")))
        if attack == "bad_mac":
            frame = frame[:-1] + bytes([frame[-1] ^ 1])
        elif attack == "oversized":
            frame = b"ML" + struct.pack(">BBBI", 1, 1, 7, 64 * 2**20) + b"mallory"
        writer.write(frame[: len(frame) // 2] if attack == "truncated" else frame)
        if attack == "truncated":
            writer.write_eof()
        assert await _closed_by_peer(reader)
        writer.close()
        await _honest_ping(server)
        server.context("server").stop()
        await serving
        return server, echo

    server, echo = asyncio.run(main())
    assert server.stats[counter] == 1
    assert all(src == "honest" for src, _ in echo.got)


@pytest.mark.parametrize("meta, me", [
    ({"dst": "somebody-else", "nonce": "ab" * 16}, "mallory"),  # not hosted here
    ({"dst": "server"}, "mallory"),  # no nonce
    ({"dst": "server", "nonce": "ab" * 16}, "server"),  # claims to be our own node
])
def test_bad_hello_is_rejected(meta, me):
    async def main():
        server, _ = await _echo_server()
        serving = asyncio.ensure_future(server.run(timeout=10))
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(FRAMES.seal(me, encode_message(Message("rt.hello", meta))))
        assert await _closed_by_peer(reader)
        writer.close()
        server.context("server").stop()
        await serving
        return server

    assert asyncio.run(main()).stats["handshakes_rejected"] == 1


def test_silent_connection_is_dropped_after_the_handshake_timeout():
    async def main():
        rt = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET, handshake_timeout=0.2)
        rt.add_node(Ponger("server"))
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        reader, writer = await asyncio.open_connection(*rt.address)
        assert await _closed_by_peer(reader)
        writer.close()
        rt.context("server").stop()
        await serving

    asyncio.run(main())
