"""meshlearn.testing: drive your own node in the simulator with scripted messages, timers and faults.

A :class:`NodeHarness` hosts one node (or a few) in a :class:`~meshlearn.sim.runtime.Simulator`
next to scripted stub peers, on ideal links (no latency, no loss, unlimited bandwidth), so a test
says exactly what happens and when, in virtual time, without sockets or sleeps::

    from meshlearn.node import Node
    from meshlearn.testing import NodeHarness
    from meshlearn.wire import Message

    class Echo(Node):
        def on_start(self, ctx):
            ctx.set_timer("hello", 1.0)

        def on_timer(self, ctx, name):
            ctx.send("peer", Message.make("t.hello"))

        def on_message(self, ctx, src, msg):
            ctx.record("pings", 1)
            ctx.send(src, Message.make("t.pong", n=msg.meta["n"]))

    h = NodeHarness(Echo("echo"), peers=["peer"])  # started: on_start ran at t=0
    assert h.timers() == {"hello": 1.0}
    h.deliver("peer", Message.make("t.ping", n=7))  # arrives now; the node answers at once
    (out,) = h.take_sent()
    assert (out.dst, out.msg.kind, out.msg.meta["n"]) == ("peer", "t.pong", 7)
    h.advance(1.0)  # virtual time moves on: the timer fires
    assert [s.msg.kind for s in h.take_sent()] == ["t.hello"]
    h.crash()  # timers disarmed, deliveries dropped
    h.recover()  # on_start runs again
    assert h.metrics("pings") == [1.0] and h.peer_errors == 0

``StubSetup`` is the other half for algorithm authors: the ``Setup`` an algorithm's ``build`` gets
(``meshlearn.fl.spec``), made from a workspace and a few round settings instead of a whole
experiment config, so a test can build an algorithm's nodes and host them in a harness::

    plan = build_fedmedian(StubSetup(workspace, ["c0", "c1"], MySettings(), rounds=2, epochs=1))

Messages still cross the real wire codec (what a stub peer records is what it decoded), every
step runs the simulator until nothing more happens at the current instant, and a ``PeerError``
raised by the node is counted in ``peer_errors`` and logged (``logs()``), exactly as in a run.
Anything else the node raises propagates out of the call that triggered it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.host import Executor, HostContext
from meshlearn.net import Crash, DeviceProfile, LinkSpec, Network, Recover
from meshlearn.node import Node
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import FrameCodec, Message, Packet, TensorCodec

__all__ = ["IDEAL_LINK", "NodeHarness", "Responder", "Sent", "StubPeer", "StubSetup"]

IDEAL_LINK = LinkSpec(latency_s=0.0, bandwidth_bps=math.inf)  # every message arrives the instant it is sent

Responder = Callable[[str, Message | Packet], Message | Packet | None]  # (src, msg) -> reply or None


@dataclass(frozen=True)
class Sent:
    """A message a hosted node sent to a stub peer, as the peer decoded it on arrival."""

    time: float  # arrival time at the stub (the send time, on ideal links)
    src: str
    dst: str
    msg: Message | Packet


class StubPeer(Node):
    """A scripted peer: records every message it gets in ``inbox``; ``respond`` may answer each."""

    def __init__(self, node_id: str, inbox: list[Sent], respond: Responder | None = None):
        super().__init__(node_id)
        self.inbox, self.respond = inbox, respond

    def on_message(self, ctx: HostContext, src: str, msg: Message | Packet) -> None:
        self.inbox.append(Sent(ctx.now, src, self.node_id, msg))
        reply = None if self.respond is None else self.respond(src, msg)
        if reply is not None:
            ctx.send(src, reply)


class NodeHarness:
    """Hosts ``nodes`` next to stub ``peers`` in a simulator and steps it on request (see module doc).

    ``peers`` is a list of stub ids, or a mapping id -> ``Responder`` for stubs that answer. Hosted
    nodes are added first, so their ``ctx.rng`` streams equal a plain ``Simulator``'s with the same
    seed. Methods that take ``node_id`` default to the first hosted node.
    """

    def __init__(self, *nodes: Node, peers: Iterable[str] | Mapping[str, Responder | None] = (), seed: int = 0,
                 link: LinkSpec = IDEAL_LINK, executor: Executor | None = None,
                 devices: dict[str, DeviceProfile] | None = None, codec: TensorCodec | None = None,
                 frames: FrameCodec | None = None):
        if not nodes:
            raise UsageError("NodeHarness needs the node to test: NodeHarness(MyNode('a'), peers=['b'])")
        responders = dict(peers) if isinstance(peers, Mapping) else dict.fromkeys(peers)
        network = Network(None, link, {}, np.random.SeedSequence([seed, 1]))
        self.sim = Simulator(network, seed=seed, executor=executor, devices=devices, codec=codec, frames=frames,
                             stop_on=[])  # ctx.stop() takes a node down; the harness keeps stepping
        self.sim.add_nodes(nodes)
        self.nodes = {node.node_id: node for node in nodes}
        self._sent: list[Sent] = []
        self.stubs = {peer: StubPeer(peer, self._sent, respond) for peer, respond in responders.items()}
        self.sim.add_nodes(self.stubs.values())
        self.node = nodes[0]
        self.sim.run(until=self.sim.now)  # every node starts at t=0

    @property
    def now(self) -> float:
        """Virtual seconds since the harness started."""
        return self.sim.now

    # ----- driving ------------------------------------------------------------------------
    def deliver(self, src: str, msg: Message | Packet, *, to: str | None = None, reliable: bool = True) -> None:
        """Stub peer ``src`` sends ``msg`` to ``to`` (default: the node); runs until it is handled."""
        if src not in self.stubs:
            raise UsageError(f"{src!r} is not a stub peer here; name it in peers=[...] (stubs: {sorted(self.stubs)})")
        dst = self._hosted(to)
        self.sim.context(src).send(dst, msg, reliable=reliable)
        self._settle()

    def advance(self, seconds: float) -> float:
        """Run ``seconds`` of virtual time (timers and tasks due by then fire); returns the time reached."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise UsageError(f"advance() takes a finite number of seconds >= 0, got {seconds!r}")
        return self.sim.run(until=self.sim.now + seconds)

    def crash(self, node_id: str | None = None) -> None:
        """Crash a hosted node now: its timers are disarmed and messages to it are dropped."""
        self.sim.schedule_faults([Crash(self.now, self._hosted(node_id))])
        self._settle()

    def recover(self, node_id: str | None = None) -> None:
        """Bring a crashed (or stopped) node back now; its ``on_start`` runs again."""
        self.sim.schedule_faults([Recover(self.now, self._hosted(node_id))])
        self._settle()

    # ----- inspecting ---------------------------------------------------------------------
    @property
    def sent(self) -> list[Sent]:
        """Everything the hosted nodes sent to stub peers so far, in arrival order."""
        return list(self._sent)

    def take_sent(self) -> list[Sent]:
        """What was sent since the last ``take_sent()``; clears it (handy for step-by-step scripts)."""
        taken, self._sent[:] = list(self._sent), []
        return taken

    def timers(self, node_id: str | None = None) -> dict[str, float]:
        """Armed timers of a hosted node: name -> virtual time at which it fires."""
        return self.sim.timers(self._hosted(node_id))

    def metrics(self, key: str) -> list[float]:
        """Values recorded under ``key`` with ``ctx.record`` (all nodes), in order."""
        return self.sim.sink.series(key)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every recorded metric row (key, value, round, node, t_sim, t_wall)."""
        return list(self.sim.sink.rows)

    def logs(self, node_id: str | None = None) -> list[str]:
        """Lines a hosted node logged (``ctx.log``, and the warnings for its peer errors)."""
        node_id = self._hosted(node_id)
        return [text for _, who, _, text in self.sim.log_lines if who == node_id]

    @property
    def peer_errors(self) -> int:
        """How many times a node handler raised ``PeerError`` (logged, and the node kept running)."""
        return self.sim.stats["peer_errors"]

    def context(self, node_id: str | None = None) -> HostContext:
        return self.sim.context(self._hosted(node_id))

    def is_alive(self, node_id: str | None = None) -> bool:
        """False while a hosted node is crashed or after it called ``ctx.stop()``."""
        return self.sim.is_alive(self._hosted(node_id))

    # ----- internals ----------------------------------------------------------------------
    def _hosted(self, node_id: str | None) -> str:
        if node_id is None:
            return self.node.node_id
        if node_id not in self.nodes:
            raise UsageError(f"{node_id!r} is not a hosted node (hosted: {sorted(self.nodes)})")
        return node_id

    def _settle(self) -> None:
        """Run everything due at the current instant (deliveries, zero-delay timers, tasks)."""
        self.sim.run(until=self.sim.now)


class StubSetup:
    """The ``Setup`` an algorithm's ``build`` gets, without a whole experiment config.

    ``fl`` keywords are ``[fl]`` round settings (rounds, epochs, lr, ...); the selector is random,
    nobody reports telemetry, ``topology()`` returns the graph given here (peer algorithms).
    """

    def __init__(self, workspace: Any, client_ids: Iterable[str], settings: Any = None, *, resume: Any = None,
                 seed: int = 0, topology: Any = None, **fl: Any):
        from types import SimpleNamespace

        from meshlearn.fl.server import RoundSettings

        self.workspace, self.client_ids, self.settings, self.resume = workspace, list(client_ids), settings, resume
        self.config = SimpleNamespace(fl=RoundSettings(**fl), seed=seed)
        self._topology = topology

    def initial_params(self) -> dict[str, np.ndarray]:
        from meshlearn.learn import initial_params

        return initial_params(self.workspace)

    def topology(self) -> Any:
        return self._topology

    def selector(self, cost: Any = None) -> Any:
        from meshlearn.fl.selection import RandomSelector

        return RandomSelector()

    def telemetry(self) -> dict[str, dict]:
        return {}
