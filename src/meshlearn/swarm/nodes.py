"""Swarm nodes (sans-I/O): servers that run their span of blocks, clients that route requests through them.

    client ── sw.run {req, attempt, start, end} + x ──▶ server (hosts [start, end) or more)
    client ◀── sw.out {req, attempt, end} + y ────────  server (its executor ran SpanTask)
    client ◀── sw.err {req, attempt, reason} ─────────  server (not hosted here / invalid activation)

A :class:`SwarmClient` keeps one :class:`~meshlearn.swarm.routing.Journey` per request: it sends the
activation it holds to the first hop of the cheapest route from there, and waits ``timeout_s``. An
answer continues the request; an error, a timeout (a crashed server never answers) or an answer that
fails ``check`` (the activation spec at its boundary; a wrong batch size always fails) bans that server
for the request and for ``ban_s`` seconds for every request, and the request is routed again *from the
boundary it reached*, with the activation it already holds: nothing is recomputed before that boundary. Late answers of an abandoned attempt are ignored.

This step's clients take the placement as given (``placement``); servers announcing their spans
over the overlay is the next step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from meshlearn.node import Context, Node
from meshlearn.swarm.placement import Server
from meshlearn.swarm.routing import Journey
from meshlearn.swarm.tasks import SpanTask
from meshlearn.wire import Message

__all__ = ["SwarmServer", "SwarmClient", "RUN", "OUT", "ERR"]

RUN, OUT, ERR = "sw.run", "sw.out", "sw.err"


class SwarmServer(Node):
    """Runs requested spans inside ``[start, end)`` on its executor; answers each with sw.out or sw.err."""

    def __init__(self, node_id: str, start: int, end: int):
        super().__init__(node_id)
        self.start, self.end = start, end
        self.pending: dict[int, tuple[str, dict]] = {}  # task id -> (client, request meta)
        self.served = self.refused = 0

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        if msg.kind != RUN:
            return
        meta = {k: msg.meta.get(k) for k in ("req", "attempt", "start", "end")}
        if not (isinstance(meta["start"], int) and isinstance(meta["end"], int)
                and self.start <= meta["start"] < meta["end"] <= self.end and "x" in msg.tensors):
            self._refuse(ctx, src, meta, f"blocks [{meta['start']}, {meta['end']}) are not hosted here "
                                         f"([{self.start}, {self.end}))")
            return
        self.pending[ctx.submit(SpanTask(meta["start"], meta["end"], msg.tensors["x"]))] = (src, meta)

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        src, meta = self.pending.pop(task_id)
        if result.problem is not None:
            self._refuse(ctx, src, meta, result.problem)
            return
        self.served += 1
        ctx.send(src, Message.make(OUT, {"y": result.y}, req=meta["req"], attempt=meta["attempt"], end=meta["end"]))

    def on_crash(self) -> None:
        self.pending.clear()

    def _refuse(self, ctx: Context, src: str, meta: dict, reason: str) -> None:
        self.refused += 1
        ctx.send(src, Message.make(ERR, req=meta["req"], attempt=meta["attempt"], reason=reason))


class SwarmClient(Node):
    """Sends ``inputs`` through the swarm one request at a time; ``outputs[i]`` is request i's answer."""

    def __init__(self, node_id: str, placement: dict[str, int], servers: dict[str, Server], blocks: int,
                 inputs: list[np.ndarray], *, site: str, latency: Callable[[str, str], float],
                 timeout_s: float = 1.0, ban_s: float = 15.0, retry_s: float = 0.5,
                 check: Callable[[int, np.ndarray], str | None] | None = None):
        super().__init__(node_id)
        self.check = check  # (boundary, activation) -> why it is not a valid activation there, or None
        self.placement, self.servers, self.blocks, self.inputs = placement, servers, blocks, inputs
        self.site, self.latency = site, latency
        self.timeout_s, self.ban_s, self.retry_s = timeout_s, ban_s, retry_s
        self.outputs: dict[int, np.ndarray] = {}
        self.suspects: dict[str, float] = {}  # server -> banned until
        self.req, self.attempt, self.journey, self.hop = -1, 0, None, None
        self.waiting_since = 0.0  # when the request reached its current boundary
        self.longest_wait = 0.0  # longest time a request stayed at one boundary (a stall, with failures)
        self.reroutes = 0  # hops given up on (timeout, refusal, malformed answer) and routed again

    def on_start(self, ctx: Context) -> None:
        self._next_request(ctx)

    def _next_request(self, ctx: Context) -> None:
        self.req += 1
        if self.req >= len(self.inputs):
            ctx.stop()
            return
        self.journey, self.waiting_since = Journey(self.blocks, self.inputs[self.req]), ctx.now
        self._dispatch(ctx)

    def _dispatch(self, ctx: Context) -> None:
        banned = {s for s, until in self.suspects.items() if until > ctx.now} | self.journey.banned
        journey = self.journey
        hops = journey.next_route(self.placement, {s: v for s, v in self.servers.items() if s not in banned},
                                  site=self.site, latency=self.latency)
        if not hops:
            ctx.set_timer("retry", self.retry_s)  # no live host for some block: wait for placement
            return
        self.attempt += 1
        self.hop = hops[0]
        ctx.send(self.hop.server, Message.make(RUN, {"x": np.asarray(journey.held)}, req=self.req,
                                               attempt=self.attempt, start=self.hop.start, end=self.hop.end))
        ctx.set_timer("timeout", self.timeout_s)

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        if msg.meta.get("req") != self.req or msg.meta.get("attempt") != self.attempt or self.hop is None:
            return  # a late answer to an attempt we gave up on
        if msg.kind == OUT and src == self.hop.server and "y" in msg.tensors and msg.meta.get("end") == self.hop.end:
            problem = self._problem(msg.tensors["y"])
            if problem is not None:
                self._give_up_on_hop(ctx, f"{src} answered a bad activation for block {self.hop.end}: {problem}")
                return
            ctx.cancel_timer("timeout")
            hop, self.hop = self.hop, None
            self.journey.completed(hop, msg.tensors["y"])
            self.longest_wait = max(self.longest_wait, ctx.now - self.waiting_since)
            self.waiting_since = ctx.now
            self._continue(ctx)
        elif msg.kind in (OUT, ERR):
            self._give_up_on_hop(ctx, f"{src} answered {msg.kind}: {msg.meta.get('reason', 'malformed')}")

    def _problem(self, y: np.ndarray) -> str | None:
        """A liar's answer is caught here, so the liar (not the next server, which would refuse it) is banned."""
        x = np.asarray(self.inputs[self.req])
        if y.ndim < 1 or len(y) != len(x):
            return f"batch of {len(y) if y.ndim else 0}, the request has {len(x)}"
        return None if self.check is None else self.check(self.hop.end, y)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "timeout" and self.hop is not None:
            self._give_up_on_hop(ctx, f"{self.hop.server} did not answer within {self.timeout_s}s")
        elif name == "retry":
            self._dispatch(ctx)

    def _give_up_on_hop(self, ctx: Context, why: str) -> None:
        ctx.cancel_timer("timeout")
        server, self.hop = self.hop.server, None
        self.journey.failed(server)
        self.reroutes += 1
        self.suspects[server] = ctx.now + self.ban_s
        ctx.record("hop_failures", 1.0)
        ctx.log(f"request {self.req}: {why}; routing again from block {self.journey.boundary}", level="warning")
        self._dispatch(ctx)

    def _continue(self, ctx: Context) -> None:
        if self.journey.done:
            self.outputs[self.req] = self.journey.held
            self._next_request(ctx)
        else:
            self._dispatch(ctx)

