"""Replays, non-members, per-node keys and stalled readers, against real loopback sockets.

Each attack must be rejected and counted, and the honest peer must keep being served.
"""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from rt_helpers import LOCAL, SECRET, Echo, RawPeer, stamped, until

from meshlearn.node import Node
from meshlearn.runtime import AsyncioRuntime
from meshlearn.runtime.udp import WINDOW, ReplayGuard
from meshlearn.wire import FrameCodec, Message, encode_message
from meshlearn.wire.keys import Keyring, node_key

pytestmark = pytest.mark.timeout(30)


class Feeder(Node):
    """A server: every 20 ms it sends the next 'model' to every node that joined (FL's downlink)."""

    def __init__(self, node_id="server"):
        super().__init__(node_id)
        self.roster: list[str] = []

    def on_start(self, ctx):
        ctx.set_timer("tick", 0.02)

    def on_timer(self, ctx, name):
        for dst in self.roster:
            ctx.send(dst, Message.make("t.model", n=len(self.roster)))
        ctx.set_timer("tick", 0.02)

    def on_message(self, ctx, src, msg):
        if msg.kind == "t.join" and src not in self.roster:
            self.roster.append(src)
        elif msg.kind == "t.bye":
            ctx.stop()


class Learner(Node):
    """A client: joins, counts models, says bye after `want` of them."""

    def __init__(self, node_id="client-1", want=25):
        super().__init__(node_id)
        self.want, self.models = want, 0

    def on_start(self, ctx):
        ctx.send("server", Message.make("t.join"))

    def on_message(self, ctx, src, msg):
        self.models += 1
        if self.models == self.want:
            ctx.send("server", Message.make("t.bye"))
            ctx.stop()


async def _recording_proxy(target):
    """A TCP proxy to `target` that records what its first client sends (the wiretap)."""
    recorded = bytearray()

    async def pipe(reader, writer, record):
        while data := await reader.read(65536):
            if record:
                recorded.extend(data)
            writer.write(data)
        writer.close()

    async def handle(reader, writer):
        up_reader, up_writer = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    server = await asyncio.start_server(handle, LOCAL, 0)
    return server, recorded


def test_replayed_handshake_does_not_hijack_the_clients_downlink():
    async def main():
        server = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET)
        feeder = Feeder()
        server.add_node(feeder)
        await server.start()
        proxy, recorded = await _recording_proxy(server.address)
        client = AsyncioRuntime(peers={"server": proxy.sockets[0].getsockname()[:2]}, secret=SECRET)
        learner = Learner()
        client.add_node(learner)
        runs = asyncio.gather(server.run(timeout=10), client.run(timeout=10))
        await until(lambda: learner.models >= 3)
        reader, writer = await asyncio.open_connection(*server.address)  # the attacker: no secret,
        writer.write(bytes(recorded))  # only the honest client's recorded hello, ready and join
        stolen = await asyncio.wait_for(reader.read(), 5)  # until the server closes on us
        writer.close()
        await runs
        proxy.close()
        return server, learner, stolen

    server, learner, stolen = asyncio.run(main())
    assert learner.models == 25  # the honest client was served to the end
    assert server.stats["handshakes_rejected"] == 1
    assert b"t.model" not in stolen and len(stolen) < 300  # a welcome at most, never the client's traffic


def test_frame_replayed_inside_a_connection_closes_it_and_is_delivered_once():
    async def main():
        rt, echo = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET), Echo("server")
        rt.add_node(echo)
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        peer = await RawPeer.connect(rt.address, key=SECRET)
        frame = peer.send(encode_message(Message.make("t.once")))
        await until(lambda: len(echo.got) == 1)
        peer.write(frame)  # the same bytes again: its sequence number is stale
        assert await peer.closed_by_peer()
        rt.context("server").stop()
        await serving
        return rt, echo

    rt, echo = asyncio.run(main())
    assert [m.kind for _, m in echo.got] == ["t.once"]
    assert rt.stats["frames_rejected_auth"] == 1


def test_handshake_without_ready_is_never_bound():
    async def main():
        rt, echo = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET, handshake_timeout=0.3), Echo("server")
        rt.add_node(echo)
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        peer = await RawPeer.connect(rt.address, key=SECRET, ready=False)
        peer.write(peer.frames.seal("mallory", encode_message(Message.make("t.x"))))  # no session key
        assert await peer.closed_by_peer()
        rt.context("server").stop()
        await serving
        return rt, echo

    rt, echo = asyncio.run(main())
    assert echo.got == [] and not rt.tcp.routes and rt.stats["handshakes_rejected"] == 1


def test_ids_outside_the_deployment_are_rejected_by_tcp_and_udp():
    async def main():
        rt, echo = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET, members=["client-1"]), Echo("server")
        rt.add_node(echo)
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        for fake in ("client-7", "made-up-29"):
            with pytest.raises(asyncio.IncompleteReadError):
                await RawPeer.connect(rt.address, me=fake, key=SECRET)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(FrameCodec(SECRET).seal("made-up-3", stamped(encode_message(Message.make("t.x")), 1)), rt.address)
            await until(lambda: rt.stats["datagrams_rejected"] == 1)
        peer = await RawPeer.connect(rt.address, me="client-1", key=SECRET)
        peer.send(encode_message(Message.make("t.hi")))
        assert (await peer.read())[1].kind == "t.hi"
        peer.close()
        rt.context("server").stop()
        await serving
        return rt, echo

    rt, echo = asyncio.run(main())
    assert rt.stats["handshakes_rejected"] == 2 and [s for s, _ in echo.got] == ["client-1"]
    assert any("not a member" in line[3] for line in rt.log_lines)


def test_a_node_credential_proves_its_id_and_no_other():
    master = b"cluster-master-secret-32-bytes!!"

    async def main():
        rt, echo = AsyncioRuntime(listen=(LOCAL, 0), secret=Keyring(issuer=master)), Echo("server")
        rt.add_node(echo)
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        mine = node_key(master, "client-00")
        with pytest.raises(asyncio.IncompleteReadError):  # client-00's key, claiming client-01
            await RawPeer.connect(rt.address, me="client-01", key=mine)
        with pytest.raises(asyncio.IncompleteReadError):  # the shared-mode secret is no credential
            await RawPeer.connect(rt.address, me="client-00", key=master)
        client = AsyncioRuntime(peers={"server": rt.address}, secret=Keyring(own=("client-00", mine)))
        asker = _Asker("client-00")
        client.add_node(asker)
        assert await client.run(timeout=5)
        rt.context("server").stop()
        await serving
        return rt, echo, asker

    rt, echo, asker = asyncio.run(main())
    assert asker.answer == "t.ask" and [s for s, _ in echo.got] == ["client-00"]
    assert rt.stats["frames_rejected_auth"] == 2


class _Asker(Node):
    def __init__(self, node_id):
        super().__init__(node_id)
        self.answer = None

    def on_start(self, ctx):
        ctx.send("server", Message.make("t.ask"))

    def on_message(self, ctx, src, msg):
        self.answer = msg.kind
        ctx.stop()


class Flood(Node):
    """Sends a 1 MiB message to `dst` every 5 ms once it joined."""

    def __init__(self):
        super().__init__("server")
        self.dst, self.sent = None, 0

    def on_message(self, ctx, src, msg):
        self.dst = src
        ctx.set_timer("send", 0.0)

    def on_timer(self, ctx, name):
        self.sent += bool(ctx.send(self.dst, Message.make("t.big", {"x": np.ones(2**18, np.float32)})))
        ctx.set_timer("send", 0.005)


def test_a_peer_that_never_reads_costs_a_bounded_buffer():
    limit = 4 * 2**20

    async def main():
        rt, flood = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET, write_buffer_max=limit), Flood()
        rt.add_node(flood)
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        peer = await RawPeer.connect(rt.address, key=SECRET)
        peer.writer.transport.pause_reading()  # an insider that never reads its socket
        peer.send(encode_message(Message.make("t.join")))
        await until(lambda: rt.stats["messages_dropped_backpressure"] >= 20, timeout=10)
        link = rt.tcp.routes[("server", "mallory")]
        buffered = link.writer.transport.get_write_buffer_size()
        peer.close()
        rt.context("server").stop()
        await serving
        return rt, flood, buffered

    rt, flood, buffered = asyncio.run(main())
    assert buffered < limit + 2**20 + 1024  # at most one frame over the limit
    assert flood.sent < 30 and rt.stats["messages_dropped_backpressure"] >= 20


# ----- UDP -------------------------------------------------------------------------------------

class DatagramEcho(Echo):
    def on_message(self, ctx, src, msg):
        self.got.append((src, msg))
        ctx.send(src, msg, reliable=False)


def test_replayed_datagrams_are_dropped_and_cannot_re_point_replies():
    async def main():
        rt, echo = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET), DatagramEcho("edge")
        rt.add_node(echo)
        await rt.start()
        serving = asyncio.ensure_future(rt.run(timeout=10))
        frames = FrameCodec(SECRET)
        dev, thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dev.bind((LOCAL, 0))
        dev.setblocking(False)
        loop = asyncio.get_running_loop()
        first = frames.seal("dev", stamped(encode_message(Message.make("t.x", n=1)), 1))
        dev.sendto(first, rt.address)
        await asyncio.wait_for(loop.sock_recv(dev, 65536), 5)  # the echo comes back to the device
        thief.sendto(first, rt.address)  # the same datagram from another address
        dev.sendto(frames.seal("dev", stamped(encode_message(Message.make("t.x", n=2)), 2)), rt.address)
        back = await asyncio.wait_for(loop.sock_recv(dev, 65536), 5)  # still to the device, not the thief
        await until(lambda: rt.stats["datagrams_replayed"] == 1)
        dev.close(), thief.close()
        rt.context("edge").stop()
        await serving
        return rt, echo, back

    rt, echo, back = asyncio.run(main())
    assert [m.meta["n"] for _, m in echo.got] == [1, 2] and b"t.x" in back
    assert rt.udp.learned["dev"][1] != 0 and "seen before" in rt.log_lines[-1][3]


def test_replay_guard_window_and_epochs():
    guard = ReplayGuard()
    assert guard.check(5, 10) is None
    guard.accept(5, 10)
    assert "seen before" in guard.check(5, 10)
    assert guard.check(5, 9) is None  # reordered but new
    guard.accept(5, 9)
    assert "seen before" in guard.check(5, 9)
    guard.accept(5, 10 + WINDOW)
    assert "older than the window" in guard.check(5, 10)
    assert "older than the current" in guard.check(4, 99)  # a recorded earlier session
    assert guard.check(6, 1) is None  # the sender restarted: a newer epoch starts afresh
    guard.accept(6, 1)
    assert guard.check(5, 10 + WINDOW + 1) is not None


def test_epochs_of_a_restarted_sender_are_newer_even_within_a_second():
    from meshlearn.runtime.udp import new_epoch

    assert all(new_epoch(100.0 + k / 1000) > new_epoch(100.0 + (k - 1) / 1000) for k in range(1, 50))
