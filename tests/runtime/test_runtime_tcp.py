"""AsyncioRuntime over real loopback TCP: messages, timers, tasks, byte counts, stop, retries."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from rt_helpers import LOCAL, SECRET, Doubler, Echo, Pinger, Ponger, free_port, until, wire_bytes

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.executors import InlineExecutor
from meshlearn.node import Node
from meshlearn.runtime import AsyncioRuntime
from meshlearn.sim.runtime import MemorySink
from meshlearn.wire import Message

pytestmark = pytest.mark.timeout(30)


async def _server(*nodes, **kw) -> AsyncioRuntime:
    rt = AsyncioRuntime(listen=(LOCAL, 0), secret=SECRET, **kw)
    rt.add_nodes(nodes)
    await rt.start()
    return rt


def test_ping_pong_between_two_runtimes_counts_exact_frame_bytes():
    pinger, ponger = Pinger("client-1", "server", count=4), Ponger("server")

    async def main():
        server = await _server(ponger)
        client = AsyncioRuntime(peers={"server": server.address}, secret=SECRET,
                                executor=InlineExecutor(Doubler()))
        client.add_node(pinger)
        return await asyncio.gather(server.run(timeout=10), client.run(timeout=10)), server, client

    (ok_s, ok_c), server, client = asyncio.run(main())
    assert ok_s and ok_c and not server.timed_out
    assert pinger.pongs == [0, 1, 2, 3]
    assert pinger.timer_fired is not None and pinger.timer_fired >= 0.01
    assert pinger.task_result == (1, 42)
    assert [m.kind for _, m in ponger.got] == ["t.ping"] * 4 + ["t.bye"]
    assert ponger.got[0][1] == pinger.sent[0]  # tensors survive the trip
    c, s = client.context("client-1"), server.context("server")
    assert c.tx_bytes == s.rx_bytes == wire_bytes("client-1", pinger.sent)
    assert s.tx_bytes == c.rx_bytes == wire_bytes("server", ponger.sent)
    assert c.control_bytes > 0 and c.control_bytes == s.control_bytes  # hello + welcome, not in tx/rx
    assert server.stats["control_bytes"] == s.control_bytes
    assert all(v == 0 for k, v in server.stats.items() if k != "control_bytes")


class Broadcaster(Node):
    """Waits for `n` joins, sends each a 1 MB final message, stops at once (like FLServer._finish)."""

    def __init__(self, node_id, n):
        super().__init__(node_id)
        self.n, self.roster = n, []

    def on_message(self, ctx, src, msg):
        self.roster.append(src)
        if len(self.roster) == self.n:
            for client in self.roster:
                ctx.send(client, Message.make("t.shutdown", {"w": np.zeros(2**18, np.float32)}))
            ctx.stop()


class Joiner(Node):
    def __init__(self, node_id, server):
        super().__init__(node_id)
        self.server, self.final = server, None

    def on_start(self, ctx):
        ctx.send(self.server, Message.make("t.join"))

    def on_message(self, ctx, src, msg):
        self.final = msg
        ctx.stop()


def test_run_returns_after_every_node_stopped_and_final_messages_leave():
    joiners = [Joiner(f"c{i}", "srv") for i in range(3)]

    async def main():
        server = await _server(Broadcaster("srv", 3))
        clients = [AsyncioRuntime(peers={"srv": server.address}, secret=SECRET) for _ in joiners]
        for rt, node in zip(clients, joiners):
            rt.add_node(node)
        return await asyncio.gather(server.run(timeout=10), *(rt.run(timeout=10) for rt in clients))

    assert all(asyncio.run(main()))
    assert all(j.final is not None and j.final.tensors["w"].shape == (2**18,) for j in joiners)


def test_co_hosted_nodes_talk_without_sockets_and_count_the_same_bytes():
    pinger, ponger = Pinger("a", "b", count=2), Ponger("b")
    rt = AsyncioRuntime(secret=SECRET, executor=InlineExecutor(Doubler()))
    rt.add_nodes([pinger, ponger])
    assert rt.run_forever(timeout=10)
    assert pinger.pongs == [0, 1] and pinger.task_result == (1, 42)
    assert rt.context("a").tx_bytes == rt.context("b").rx_bytes == wire_bytes("a", pinger.sent)
    assert rt.context("b").tx_bytes == rt.context("a").rx_bytes == wire_bytes("b", ponger.sent)


class Caller(Node):
    """Pings `peer` every 50 ms until it hears back, then stops."""

    def __init__(self, node_id, peer):
        super().__init__(node_id)
        self.peer, self.attempts, self.answer = peer, 0, None

    def on_start(self, ctx):
        self.on_timer(ctx, "again")

    def on_timer(self, ctx, name):
        self.attempts += 1
        ctx.send(self.peer, Message.make("t.call", n=self.attempts))
        ctx.set_timer("again", 0.05)

    def on_message(self, ctx, src, msg):
        self.answer = msg
        ctx.stop()


def test_client_started_before_the_server_listens_gets_through_after_it_appears():
    port, caller, echo = free_port(), Caller("client", "server"), Echo("server")

    async def main():
        client = AsyncioRuntime(peers={"server": (LOCAL, port)}, secret=SECRET, connect_retry_s=0.1)
        client.add_node(caller)
        client_run = asyncio.ensure_future(client.run(timeout=10))
        await until(lambda: client.stats["messages_dropped_unreachable"] >= 2, what="failed connects")
        server = AsyncioRuntime(listen=(LOCAL, port), secret=SECRET)
        server.add_node(echo)
        server_run = asyncio.ensure_future(server.run(timeout=10))
        assert await client_run
        server.context("server").stop()
        assert await server_run
        return client

    client = asyncio.run(main())
    assert caller.answer is not None and caller.answer.kind == "t.call"
    assert client.stats["messages_dropped_unreachable"] >= 2
    assert any("cannot connect" in line[3] for line in client.log_lines)
    # one attempt per retry period, not one per send: the queue stays bounded
    assert len([ln for ln in client.log_lines if "cannot connect" in ln[3]]) < caller.attempts + 1


def test_send_to_an_unknown_node_returns_zero_and_is_logged():
    class Lost(Node):
        def on_start(self, ctx):
            self.sent = ctx.send("nobody", Message.make("t.x"))
            ctx.stop()

    node = Lost("a")
    rt = AsyncioRuntime()
    rt.add_node(node)
    assert rt.run_forever(timeout=5)
    assert node.sent == 0 and rt.stats["messages_dropped_unreachable"] == 1
    assert "nobody" in rt.log_lines[-1][3]


def test_timeout_returns_false_and_closes_everything():
    async def main():
        rt = await _server(Echo("e"))
        assert await rt.run(timeout=0.2) is False
        assert rt.timed_out
        with pytest.raises(OSError):
            await asyncio.open_connection(*rt.address)

    asyncio.run(main())


def test_node_errors_peer_errors_are_counted_bugs_end_the_run():
    class Picky(Node):
        def on_start(self, ctx):
            ctx.send(self.node_id, Message.make("t.bad"))
            ctx.send(self.node_id, Message.make("t.bug"))

        def on_message(self, ctx, src, msg):
            if msg.kind == "t.bad":
                raise ProtocolError("that peer sent nonsense")
            raise RuntimeError("a bug")

    rt = AsyncioRuntime()
    rt.add_node(Picky("p"))
    with pytest.raises(RuntimeError, match="a bug"):
        rt.run_forever(timeout=5)
    assert rt.stats["peer_errors"] == 1


def test_metrics_checkpoints_and_logs_reach_their_sinks():
    class Reporter(Node):
        def on_start(self, ctx):
            ctx.record("acc", 0.5, round=1)
            ctx.record("loss", 2, per_node=True)
            ctx.checkpoint(1, {"w": np.ones(2)}, {"round": 1})
            ctx.log("hello", level="debug")
            ctx.stop()

    sink, saved = MemorySink(), []
    rt = AsyncioRuntime(sink=sink, on_checkpoint=lambda *a: saved.append(a))
    rt.add_node(Reporter("r"))
    rt.run_forever(timeout=5)
    assert [(r["key"], r["value"], r["round"], r["node"]) for r in sink.rows] == [
        ("acc", 0.5, 1, None), ("loss", 2.0, None, "r")]
    assert sink.rows[0]["t_sim"] >= 0 and sink.rows[0]["t_wall"] > 1e9
    assert saved[0][0:2] == ("r", 1)
    assert rt.log_lines[-1][1:] == ("r", "debug", "hello")


def test_usage_errors():
    rt = AsyncioRuntime()
    rt.add_node(Echo("a"))
    with pytest.raises(UsageError, match="twice"):
        rt.add_node(Echo("a"))
    with pytest.raises(UsageError):
        rt.add_node(Echo("x" * 300))
    with pytest.raises(UsageError, match="no nodes"):
        asyncio.run(AsyncioRuntime().run())
    with pytest.raises(UsageError, match="listen"):
        AsyncioRuntime(ssl_server=object())
    with pytest.raises(UsageError, match="host, port"):
        AsyncioRuntime(peers={"server": "127.0.0.1:7000"})
    with pytest.raises(UsageError, match="secret"):
        AsyncioRuntime(secret="not bytes")
    assert AsyncioRuntime(start_time=100.0).now == 100.0  # a resumed run continues its clock

    class NeedsExecutor(Node):
        def on_start(self, ctx):
            ctx.submit(object())

    rt = AsyncioRuntime()
    rt.add_node(NeedsExecutor("n"))
    with pytest.raises(UsageError, match="executor"):
        rt.run_forever(timeout=5)


class Counter(Node):
    """Sends to `peer` every 20 ms; stops after `want` answers."""

    def __init__(self, node_id, peer, want):
        super().__init__(node_id)
        self.peer, self.want, self.answers = peer, want, 0

    def on_start(self, ctx):
        self.on_timer(ctx, "tick")

    def on_timer(self, ctx, name):
        ctx.send(self.peer, Message.make("t.tick"))
        ctx.set_timer("tick", 0.02)

    def on_message(self, ctx, src, msg):
        self.answers += 1
        if self.answers == self.want:
            ctx.stop()


def test_dropped_connection_removes_the_route_and_a_later_send_reconnects():
    counter = Counter("client", "server", want=6)

    async def main():
        first = await _server(Echo("server"))
        port = first.address[1]
        client = AsyncioRuntime(peers={"server": first.address}, secret=SECRET, connect_retry_s=0.05)
        client.add_node(counter)
        client_run = asyncio.ensure_future(client.run(timeout=10))
        serving = asyncio.ensure_future(first.run(timeout=10))
        await until(lambda: counter.answers >= 2, what="answers from the first server")
        first.context("server").stop()
        await serving
        await until(lambda: ("client", "server") not in client.tcp.routes, what="route removal")
        second = AsyncioRuntime(listen=(LOCAL, port), secret=SECRET)
        second.add_node(Echo("server"))
        serving = asyncio.ensure_future(second.run(timeout=10))
        assert await client_run
        second.context("server").stop()
        await serving

    asyncio.run(main())
    assert counter.answers == 6


def test_run_nodes_helper():
    from meshlearn.runtime import run_nodes

    pinger, ponger = Pinger("a", "b", count=1), Ponger("b")
    rt = run_nodes([pinger, ponger], timeout=5, executor=InlineExecutor(Doubler()), seed=3)
    assert not rt.timed_out and pinger.task_result == (1, 42)
