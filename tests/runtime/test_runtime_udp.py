"""Datagrams: delivery over loopback UDP, learned return routes, forged datagrams, size limit."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from rt_helpers import LOCAL, SECRET, Echo, Pinger, Ponger, stamped, until, wire_bytes

from meshlearn.errors import UsageError
from meshlearn.node import Node
from meshlearn.runtime import MAX_DATAGRAM_BYTES, AsyncioRuntime
from meshlearn.wire import FrameCodec, Message, encode_message

pytestmark = pytest.mark.timeout(30)


def _datagram_pair(pinger, ponger, **client_kw):
    """Ponger listens; the pinger knows its address, the ponger learns the pinger's."""

    async def main():
        server = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET)
        server.add_node(ponger)
        await server.start()
        client = AsyncioRuntime(peers={ponger.node_id: server.address}, secret=SECRET, **client_kw)
        client.add_node(pinger)
        return await asyncio.gather(server.run(timeout=10), client.run(timeout=10)), server, client

    return asyncio.run(main())


def test_datagram_ping_pong_replies_over_the_learned_route():
    from meshlearn.executors import InlineExecutor
    from rt_helpers import Doubler

    pinger, ponger = Pinger("dev", "edge", count=3, reliable=False), Ponger("edge", reliable=False)
    (ok_s, ok_c), server, client = _datagram_pair(pinger, ponger, executor=InlineExecutor(Doubler()))
    assert ok_c and pinger.pongs == [0, 1, 2]
    # the final bye is a datagram too; on loopback it arrives
    assert ok_s and ponger.got[-1][1].kind == "t.bye"
    sent, back = wire_bytes("dev", pinger.sent, datagram=True), wire_bytes("edge", ponger.sent, datagram=True)
    assert client.context("dev").tx_bytes == server.context("edge").rx_bytes == sent
    assert server.context("edge").tx_bytes == client.context("dev").rx_bytes == back
    assert server.context("edge").control_bytes == 0  # no handshake for datagrams
    assert not server.tcp.links  # and no TCP connection either


def test_forged_and_garbage_datagrams_are_rejected_and_counted():
    async def main():
        rt, echo = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET), Echo("edge")
        rt.add_node(echo)
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        payload = encode_message(Message.make("t.x"))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(FrameCodec(b"wrong secret").seal("mallory", stamped(payload, 1)), rt.address)
            s.sendto(b"garbage", rt.address)
            s.sendto(FrameCodec(SECRET).seal("mallory", stamped(b"\x00\x00\x00\x09not json!", 2)), rt.address)
            await until(lambda: rt.stats["datagrams_rejected"] == 3)
            s.sendto(FrameCodec(SECRET).seal("mallory", stamped(payload, 3)), rt.address)  # a genuine one
            await until(lambda: len(echo.got) == 1)
        rt.context("edge").stop()
        await serving
        return rt, echo

    rt, echo = asyncio.run(main())
    assert echo.got[0][0] == "mallory" and rt.stats["datagrams_rejected"] == 3
    assert sum(rt.stats[k] for k in ("frames_rejected_auth", "frames_rejected_malformed")) == 0


def test_runtime_hosting_several_nodes_rejects_datagrams():
    async def main():
        rt = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET)
        rt.add_nodes([Echo("a"), Echo("b")])
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(FrameCodec(SECRET).seal("x", stamped(encode_message(Message.make("t.x")), 1)), rt.address)
            await until(lambda: rt.stats["datagrams_rejected"] == 1)
        rt.context("a").stop()
        rt.context("b").stop()
        await serving
        return rt

    assert "exactly one" in asyncio.run(main()).log_lines[-1][3]


def test_datagram_over_the_size_limit_is_a_usage_error():
    class Big(Node):
        def on_start(self, ctx):
            ctx.send("far", Message.make("t.big", {"w": np.zeros(MAX_DATAGRAM_BYTES // 4, np.float32)}),
                     reliable=False)

    rt = AsyncioRuntime(peers={"far": (LOCAL, 9)})
    rt.add_node(Big("b"))
    with pytest.raises(UsageError, match="datagram"):
        rt.run_forever(timeout=5)


def test_datagram_to_an_unknown_node_is_dropped():
    class Lost(Node):
        def on_start(self, ctx):
            self.sent = ctx.send("nobody", Message.make("t.x"), reliable=False)
            ctx.stop()

    node, rt = Lost("a"), AsyncioRuntime()
    rt.add_node(node)
    rt.run_forever(timeout=5)
    assert node.sent == 0 and rt.stats["messages_dropped_unreachable"] == 1
