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

These clients take the placement as given (``placement``); servers that announce their spans and
place themselves, and clients that follow those announcements, are in :mod:`meshlearn.swarm.announce`.

**Generation sessions** (the client is :class:`meshlearn.swarm.generate.GenerationClient`):

    client ── sw.step {session, attempt, start, end, past} + x ──▶ server   x: only the new positions
    client ◀── sw.out {session, attempt, end, past} + y ──────────  server   y: their outputs at ``end``
    client ◀── sw.err {session, attempt, code, reason} ───────────  server   code: lost | full | refused
    client ── sw.close {session} ──────────────────────────────────▶ server   (no answer)

The server keeps one :class:`~meshlearn.swarm.tasks.CachedBlock` per (client, session, block) in its
:class:`SessionTable` and hands them to the executor with each :class:`~meshlearn.swarm.tasks.StepTask`.
``past`` is how many positions the client believes the server holds: ``past == 0`` opens (or restarts)
the session's caches for those blocks, so a replacement rebuilds from the history in one step; any other
``past`` must equal the cached length, or the answer is ``code="lost"`` (the server restarted, or the
session expired or was closed) and the client replays. Sessions are bounded: at most ``max_sessions``
(a new one beyond that gets ``code="full"``) and dropped after ``session_ttl_s`` idle seconds (by
``ctx.now``; a timer sweeps while any is open). A crash or restart loses them all, as a real one does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.node import Context, Node
from meshlearn.swarm.placement import Server
from meshlearn.swarm.routing import Journey
from meshlearn.swarm.tasks import CachedBlock, SpanTask, StepTask
from meshlearn.wire import Message

__all__ = [
    "CLOSE",
    "ERR",
    "FULL",
    "LOST",
    "OUT",
    "REFUSED",
    "RUN",
    "STEP",
    "SessionRefused",
    "SessionTable",
    "SwarmClient",
    "SwarmServer",
]

RUN, OUT, ERR, STEP, CLOSE = "sw.run", "sw.out", "sw.err", "sw.step", "sw.close"
LOST, FULL, REFUSED = "lost", "full", "refused"  # sw.err codes of a step: replay the history / go elsewhere / ban


class SessionRefused(ProtocolError):
    """A step the server cannot run; ``code`` tells the client what to do (LOST: replay, else route around)."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


@dataclass
class _Session:
    last_used: float
    blocks: dict[int, CachedBlock] = field(default_factory=dict)
    busy: bool = False  # a step of it is on the executor


class SessionTable:
    """Generation caches of one server, per (client, session) then per block; bounded in number and idle time.

    Pure bookkeeping: time is an argument. :meth:`claim` gives a step its caches (marking the session busy),
    :meth:`store` takes the new ones back."""

    def __init__(self, max_sessions: int = 64, ttl_s: float = 60.0):
        if not (isinstance(max_sessions, int) and max_sessions >= 1 and ttl_s > 0):
            raise UsageError(f"a session table needs max_sessions >= 1 and ttl_s > 0, got {max_sessions!r}, {ttl_s!r}")
        self.max_sessions, self.ttl_s = max_sessions, float(ttl_s)
        self._sessions: dict[tuple[str, object], _Session] = {}
        self.expired = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def expire(self, now: float) -> int:
        """Drop the sessions idle for ``ttl_s`` or more (not one with a step running); returns how many."""
        old = [k for k, s in self._sessions.items() if not s.busy and now - s.last_used >= self.ttl_s]
        for key in old:
            del self._sessions[key]
        self.expired += len(old)
        return len(old)

    def claim(self, key: tuple[str, object], blocks: range, past: int, now: float) -> tuple[CachedBlock | None, ...]:
        """The caches of ``blocks`` for a step after ``past`` positions (``past == 0``: start afresh);
        SessionRefused when there is no such cache, the table is full or a step of the session is running."""
        session = self._sessions.get(key)
        if session is None and past == 0:
            session = self._open(key, now)
        if session is None:
            raise SessionRefused(LOST, f"no generation session {key[1]!r} here (expired, closed or the server "
                                       "restarted); replay the history with past=0")
        if session.busy:
            raise SessionRefused(REFUSED, f"a step of session {key[1]!r} is still running; wait for its answer")
        caches = tuple(None if past == 0 else session.blocks.get(b) for b in blocks)
        if past and any(c is None or c.length != past for c in caches):
            held = sorted({c.length for c in caches if c is not None})
            raise SessionRefused(LOST, f"session {key[1]!r} holds {held or 'no'} cached positions for blocks "
                                       f"[{blocks.start}, {blocks.stop}), the step says {past}; replay the history")
        session.busy, session.last_used = True, now
        return caches

    def _open(self, key: tuple[str, object], now: float) -> _Session:
        if len(self._sessions) >= self.max_sessions:
            raise SessionRefused(FULL, f"this server holds its limit of {self.max_sessions} generation sessions; "
                                       "use another server or retry after one closes or expires")
        session = self._sessions[key] = _Session(now)
        return session

    def store(self, key: tuple[str, object], blocks: range, caches: tuple[CachedBlock, ...] | None, now: float) -> bool:
        """A step finished: keep its caches (None: it failed, the old ones stay); False if the session is gone."""
        session = self._sessions.get(key)
        if session is None:
            return False
        session.busy, session.last_used = False, now
        if caches is not None:
            session.blocks.update(zip(blocks, caches))
        return True

    def next_expiry(self) -> float | None:
        """When the longest-idle session is due to expire (None: no session)."""
        if not self._sessions:
            return None
        return min(s.last_used for s in self._sessions.values()) + self.ttl_s

    def close(self, key: tuple[str, object]) -> None:
        self._sessions.pop(key, None)

    def clear(self) -> None:
        self._sessions.clear()

    def cached_bytes(self) -> int:
        return sum(c.nbytes for s in self._sessions.values() for c in s.blocks.values())


class SwarmServer(Node):
    """Runs requested spans inside ``[start, end)`` on its executor; answers each with sw.out or sw.err.

    Stateless ``sw.run`` requests and generation ``sw.step`` s of at most ``max_sessions`` sessions, each
    dropped after ``session_ttl_s`` idle seconds (see the module docstring)."""

    def __init__(self, node_id: str, start: int, end: int, *, max_sessions: int = 64, session_ttl_s: float = 60.0):
        super().__init__(node_id)
        self.start, self.end = start, end
        self.pending: dict[int, tuple[str, dict]] = {}  # task id -> (client, request meta)
        self.steps: dict[int, tuple[str, dict]] = {}  # task id -> (client, step meta), generation steps
        self.sessions = SessionTable(max_sessions, session_ttl_s)
        self.served = self.refused = 0
        self.steps_served = 0

    def on_start(self, ctx: Context) -> None:
        self.on_crash()  # a (re)started server remembers no session

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        if msg.kind == STEP:
            self._on_step(ctx, src, msg)
        elif msg.kind == CLOSE:
            self.sessions.close((src, msg.meta.get("session")))
        elif msg.kind == RUN:
            self._on_run(ctx, src, msg)

    def _on_run(self, ctx: Context, src: str, msg: Message) -> None:
        meta = {k: msg.meta.get(k) for k in ("req", "attempt", "start", "end")}
        if not (self._hosts(meta) and "x" in msg.tensors):
            self._refuse(ctx, src, meta, f"blocks [{meta['start']}, {meta['end']}) are not hosted here "
                                         f"([{self.start}, {self.end}))")
            return
        self.pending[ctx.submit(SpanTask(meta["start"], meta["end"], msg.tensors["x"]))] = (src, meta)

    def _hosts(self, meta: dict) -> bool:
        return (isinstance(meta["start"], int) and isinstance(meta["end"], int)
                and self.start <= meta["start"] < meta["end"] <= self.end)

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id in self.steps:
            self._step_done(ctx, task_id, result)
            return
        src, meta = self.pending.pop(task_id)
        if result.problem is not None:
            self._refuse(ctx, src, meta, result.problem)
            return
        self.served += 1
        ctx.send(src, Message.make(OUT, {"y": result.y}, req=meta["req"], attempt=meta["attempt"], end=meta["end"]))

    def on_crash(self) -> None:
        self.pending.clear()
        self.steps.clear()
        self.sessions.clear()

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "sessions.expire":
            self.sessions.expire(ctx.now)
            self._arm_expiry(ctx)

    def _arm_expiry(self, ctx: Context) -> None:
        """Sweep when the longest-idle session is due (a busy one is kept: again 1% of a ttl later); no timer
        while no session is open."""
        due = self.sessions.next_expiry()
        if due is not None:
            ctx.set_timer("sessions.expire", max(due - ctx.now, self.sessions.ttl_s / 100))

    def _refuse(self, ctx: Context, src: str, meta: dict, reason: str) -> None:
        self.refused += 1
        ctx.send(src, Message.make(ERR, req=meta["req"], attempt=meta["attempt"], reason=reason))

    # ------------------------------------------------------------------ generation steps
    def _on_step(self, ctx: Context, src: str, msg: Message) -> None:
        meta = {k: msg.meta.get(k) for k in ("session", "attempt", "start", "end", "past")}
        try:
            x = self._step_input(meta, msg)
            self.sessions.expire(ctx.now)
            had = len(self.sessions)
            caches = self.sessions.claim((src, meta["session"]), range(meta["start"], meta["end"]), meta["past"],
                                         ctx.now)
        except SessionRefused as exc:
            self._refuse_step(ctx, src, meta, exc.code, str(exc))
            return
        if not had:
            self._arm_expiry(ctx)
        self.steps[ctx.submit(StepTask(meta["start"], meta["end"], x, caches))] = (src, meta)

    def _step_input(self, meta: dict, msg: Message) -> np.ndarray:
        if not self._hosts(meta):
            raise SessionRefused(REFUSED, f"blocks [{meta['start']}, {meta['end']}) are not hosted here "
                                          f"([{self.start}, {self.end}))")
        if not (isinstance(meta["past"], int) and meta["past"] >= 0 and "x" in msg.tensors):
            raise SessionRefused(REFUSED, f"a step needs an int past >= 0 and a tensor x, got past={meta['past']!r}")
        return msg.tensors["x"]

    def _step_done(self, ctx: Context, task_id: int, result) -> None:
        src, meta = self.steps.pop(task_id)
        blocks = range(meta["start"], meta["end"])
        alive = self.sessions.store((src, meta["session"]), blocks, result.caches if result.y is not None else None,
                                    ctx.now)
        if result.problem is not None:
            self._refuse_step(ctx, src, meta, REFUSED, result.problem)
        elif not alive:
            self._refuse_step(ctx, src, meta, LOST, f"session {meta['session']!r} was closed during the step")
        else:
            self.steps_served += 1
            ctx.send(src, Message.make(OUT, {"y": result.y}, session=meta["session"], attempt=meta["attempt"],
                                       end=meta["end"], past=meta["past"]))

    def _refuse_step(self, ctx: Context, src: str, meta: dict, code: str, reason: str) -> None:
        self.refused += 1
        ctx.send(src, Message.make(ERR, session=meta["session"], attempt=meta["attempt"], code=code, reason=reason))


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

