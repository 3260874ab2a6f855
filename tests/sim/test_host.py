"""The node host (meshlearn.host): one dispatch policy and one timer validation for both runtimes."""

from __future__ import annotations

import ast
import asyncio
import math
from pathlib import Path

import numpy as np
import pytest

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.net import Crash, LinkSpec, Network, Recover
from meshlearn.node import Node
from meshlearn.runtime import AsyncioRuntime
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import Message

SRC = Path(__file__).resolve().parents[2] / "src" / "meshlearn"


def simulator(**options) -> Simulator:
    return Simulator(Network(None, LinkSpec(), {}, np.random.SeedSequence(0)), **options)


def run_once(kind: str, *nodes: Node):
    """Host ``nodes`` in a fresh runtime of ``kind`` and run until they stop; returns the runtime."""
    rt = simulator(stop_on=[]) if kind == "sim" else AsyncioRuntime()
    rt.add_nodes(nodes)
    if kind == "sim":
        rt.run(until=60)
    else:
        assert rt.run_forever(timeout=5)
    return rt


class Sender(Node):
    """Sends 't.bad' then 't.good' to ``peer`` and stops."""

    def __init__(self, node_id: str, peer: str):
        super().__init__(node_id)
        self.peer = peer

    def on_start(self, ctx):
        ctx.send(self.peer, Message.make("t.bad"))
        ctx.send(self.peer, Message.make("t.good"))
        ctx.stop()


class Picky(Node):
    """Rejects 't.bad' with a PeerError; counts good messages and timer ticks; stops on its tick."""

    def __init__(self, node_id: str):
        super().__init__(node_id)
        self.good = self.ticks = 0

    def on_start(self, ctx):
        ctx.set_timer("tick", 0.5)

    def on_message(self, ctx, src, msg):
        if msg.kind == "t.bad":
            raise ProtocolError("that peer sent nonsense")
        self.good += 1

    def on_timer(self, ctx, name):
        self.ticks += 1
        ctx.stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sim", "aio"])
def test_a_peer_error_is_counted_logged_and_the_node_keeps_running(kind):
    node = Picky("p")
    rt = run_once(kind, node, Sender("s", "p"))
    assert rt.stats["peer_errors"] == 1
    assert node.good == 1 and node.ticks == 1  # later messages and timers still reached it
    assert any(who == "p" and "ProtocolError: that peer sent nonsense" in text for _, who, _, text in rt.log_lines)


def test_a_bug_in_a_node_propagates_out_of_the_simulator_at_once():
    class Buggy(Node):
        def on_start(self, ctx):
            raise RuntimeError("a bug")

    sim = simulator()
    sim.add_node(Buggy("b"))
    with pytest.raises(RuntimeError, match="a bug"):
        sim.run()
    assert sim.stats["peer_errors"] == 0


class Armer(Node):
    """Arms one timer with ``delay`` when started."""

    def __init__(self, node_id: str, delay):
        super().__init__(node_id)
        self.delay = delay

    def on_start(self, ctx):
        ctx.set_timer("t", self.delay)
        ctx.stop()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sim", "aio"])
@pytest.mark.parametrize("delay", [math.inf, -math.inf, math.nan, "1", None, True])
def test_both_runtimes_reject_a_non_finite_timer_delay_the_same_way(kind, delay):
    with pytest.raises(UsageError, match=r"timer 't': delay must be a finite number of seconds"):
        run_once(kind, Armer("a", delay))


class Rearmer(Node):
    """Arms, re-arms and cancels timers, notes what is armed, and stops when 'b' fires."""

    def __init__(self, node_id: str, host):
        super().__init__(node_id)
        self.host, self.fired, self.armed = host, [], None

    def on_start(self, ctx):
        ctx.set_timer("a", 5.0)
        ctx.set_timer("a", 2.0)  # re-arming replaces
        ctx.set_timer("b", np.float32(-1.0))  # negative clamps to now; numpy reals are fine
        ctx.set_timer("c", 1)
        ctx.cancel_timer("c")
        ctx.cancel_timer("never-armed")
        self.armed = self.host.timers(self.node_id)

    def on_timer(self, ctx, name):
        self.fired.append((name, ctx.now))
        ctx.stop()
        ctx.set_timer("after-stop", 0.0)  # a stopped node cannot arm timers


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["sim", "aio"])
def test_timers_rearm_replace_clamp_and_report_their_due_times(kind):
    rt = simulator(stop_on=[]) if kind == "sim" else AsyncioRuntime()
    node = Rearmer("r", rt)
    rt.add_node(node)
    rt.run(until=10) if kind == "sim" else rt.run_forever(timeout=5)
    assert set(node.armed) == {"a", "b"}
    assert node.armed["a"] == pytest.approx(2.0, abs=0.2) and node.armed["b"] == pytest.approx(0.0, abs=0.2)
    assert [name for name, _ in node.fired] == ["b"] and not rt.is_alive("r") and rt.timers("r") == {}


def test_a_crashed_node_gets_nothing_and_recovers_through_on_start():
    class Ticker(Node):
        def __init__(self, node_id):
            super().__init__(node_id)
            self.starts, self.ticks = 0, []

        def on_start(self, ctx):
            self.starts += 1
            ctx.set_timer("tick", 1.0)

        def on_timer(self, ctx, name):
            self.ticks.append(ctx.now)
            ctx.set_timer("tick", 1.0)

    sim, node = simulator(), Ticker("t")
    sim.add_node(node)
    sim.schedule_faults([Crash(2.5, "t"), Recover(5.0, "t")])
    sim.run(until=6.5)
    assert node.starts == 2 and node.ticks == [1.0, 2.0, 6.0]
    assert sim.is_alive("t") and sim.timers("t") == {"tick": 7.0}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_simulator_and_the_host_import_neither_executors_nor_the_socket_runtime():
    for path in [SRC / "host.py", *sorted((SRC / "sim").glob("*.py"))]:
        bad = {m for m in _imports(path) if m.startswith(("meshlearn.executors", "meshlearn.runtime"))}
        assert not bad, f"{path.name} imports {bad}"


def test_asyncio_run_reraises_a_non_finite_delay_after_shutting_down():
    async def main():
        rt = AsyncioRuntime()
        rt.add_node(Armer("a", math.inf))
        with pytest.raises(UsageError):
            await rt.run(timeout=5)
        return rt

    rt = asyncio.run(main())
    assert rt.stats["peer_errors"] == 0 and rt._closing
