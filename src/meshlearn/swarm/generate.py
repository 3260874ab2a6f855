"""Generating text through the swarm (sans-I/O): a client that keeps KV caches alive on the servers of a chain.

    prompt ─▶ [s0: blocks 0-3, session caches] ─▶ [s2: blocks 4-7, session caches] ─▶ logits ─▶ pick ─▶ token
                 ▲ only the new position per step (sw.step, see :mod:`meshlearn.swarm.nodes`)

A :class:`GenerationClient` routes once (:func:`~meshlearn.swarm.routing.route`), opens a session on every
hop's server with the prompt (``past=0``), then per token sends each hop only the new position: the token id
at boundary 0, the hidden state at the others. The next token is picked *at the client* from the last
position's logits by a :class:`Sampler` (greedy, or temperature/top-k from its own seed).

**Histories.** For every boundary b the client keeps ``history[b]``: every position it has sent into a hop
starting at b (``(N, T, ...)``; a hop's answer extends the history of its end boundary). Each hop records how
many positions its server holds (``cached``); a step sends ``history[start][:, cached:]`` with
``past=cached``. So when a server dies mid-generation (timeout, sw.err, or an answer that fails ``check``),
the client bans it, keeps the hops before it, routes again *from the boundary it reached* and sends the
replacement that boundary's whole history in one step (``past=0``): the replacement rebuilds its caches and
answers every position, which becomes the history of the next boundary where needed. Nothing before that
boundary runs again and no token is lost; a hop of the old chain that the new route keeps (same server and
span) keeps its cache. A server that answers ``code="lost"`` (it restarted, or the session expired) is not
banned: the client replays the history to it. ``rebuilds`` and ``rebuilt_positions`` count those replays.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.node import Context, Node
from meshlearn.swarm.nodes import CLOSE, ERR, FULL, LOST, OUT, STEP
from meshlearn.swarm.placement import Server
from meshlearn.swarm.routing import Hop, route
from meshlearn.wire import Message

__all__ = ["GenerationClient", "Sampler"]


class Sampler:
    """Picks the next token ids ``(N,)`` from last-position logits ``(N, vocab)``: greedy when
    ``temperature == 0``, else softmax(logits / temperature) over the ``top_k`` best (0: all) with its own
    generator seeded by ``seed``, so the same seed gives the same text anywhere."""

    def __init__(self, temperature: float = 0.0, top_k: int = 0, seed: int = 0):
        if not (temperature >= 0 and isinstance(top_k, int) and top_k >= 0):
            raise UsageError(f"a sampler needs temperature >= 0 and an int top_k >= 0, got {temperature!r}, {top_k!r}")
        self.temperature, self.top_k = float(temperature), top_k
        self._rng = np.random.default_rng(np.random.SeedSequence(int(seed)))

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float64)
        if self.temperature == 0:
            return logits.argmax(-1).astype(np.int64)
        z = logits / self.temperature
        if 0 < self.top_k < z.shape[-1]:
            kth = np.sort(z, axis=-1)[:, -self.top_k][:, None]
            z = np.where(z >= kth, z, -np.inf)
        p = np.exp(z - z.max(-1, keepdims=True))
        cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)
        u = self._rng.random((len(z), 1))
        return np.minimum((cdf < u).sum(-1), z.shape[-1] - 1).astype(np.int64)


@dataclass
class _Hop:
    """A hop of the chain and how many positions of the session its server holds for it."""

    server: str
    start: int
    end: int
    cached: int = 0

    def same(self, hop: Hop) -> bool:
        return (self.server, self.start, self.end) == (hop.server, hop.start, hop.end)


class GenerationClient(Node):
    """Generates ``tokens`` new tokens after ``prompt`` ``(N, T)`` int ids through the swarm; ``generated``
    is ``(N, tokens)`` once ``done``. ``placement``/``servers``/``site``/``latency``/``timeout_s``/``ban_s``/
    ``retry_s``/``check`` mean what they mean for :class:`~meshlearn.swarm.nodes.SwarmClient`; ``session`` is
    the session id on the servers (None: drawn from ``ctx.rng`` at start)."""

    def __init__(self, node_id: str, placement: dict[str, int], servers: dict[str, Server], blocks: int,
                 prompt: np.ndarray, tokens: int, *, site: str, latency: Callable[[str, str], float],
                 sampler: Sampler | None = None, timeout_s: float = 1.0, ban_s: float = 15.0, retry_s: float = 0.5,
                 check: Callable[[int, np.ndarray], str | None] | None = None, session: int | None = None,
                 on_token: Callable[[int, np.ndarray], None] | None = None):
        super().__init__(node_id)
        self.on_token = on_token  # (index, ids (N,)) for each new token: the caller streams the text
        self.prompt = _prompt(prompt)
        if not (isinstance(tokens, int) and tokens >= 1):
            raise UsageError(f"tokens must be an int >= 1, got {tokens!r}")
        self.placement, self.servers, self.blocks, self.n_tokens = placement, servers, blocks, tokens
        self.site, self.latency, self.check = site, latency, check
        self.sampler = sampler or Sampler()
        self.timeout_s, self.ban_s, self.retry_s = timeout_s, ban_s, retry_s
        self.session = session
        self.suspects: dict[str, float] = {}  # server -> banned until (every generation)
        self.attempt = 0  # never reset: an answer to an attempt of an earlier life never matches
        self._reset()

    def _reset(self) -> None:
        self.history: dict[int, np.ndarray] = {0: self.prompt}
        self.chain: list[_Hop] = []  # the hops of the route; chain[:k] have run for the current token
        self.k, self.sent, self.fresh = 0, 0, self.prompt.shape[1]
        self.hop: _Hop | None = None  # the hop waiting for its answer
        self.dropped: list[_Hop] = []  # hops of the old chain after a failure, until the new route is known
        self.banned: set[str] = set()  # never trusted again in this generation
        self.out: list[np.ndarray] = []
        self.token_times: list[float] = []
        self.rebuilds = self.rebuilt_positions = self.reroutes = self.lost = 0
        self.started = self.waiting_since = self.longest_wait = 0.0
        self.logits: np.ndarray | None = None  # the last position's logits of the current token step
        self.done = False

    @property
    def generated(self) -> np.ndarray:
        """The new token ids so far, ``(N, generated)``."""
        return np.stack(self.out, 1) if self.out else np.zeros((len(self.prompt), 0), np.int64)

    @property
    def longest_token_gap(self) -> float:
        """The longest time between two tokens (the first one: since the start)."""
        times = [self.started, *self.token_times]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    # ------------------------------------------------------------------ the token loop
    def on_start(self, ctx: Context) -> None:
        self._reset()
        if self.session is None:
            self.session = int(ctx.rng.integers(1, 2**31))
        self.started = self.waiting_since = ctx.now
        self._reroute(ctx)

    def _advance(self, ctx: Context) -> None:
        if self.k == len(self.chain):
            self._token_done(ctx)
            return
        self.hop = hop = self.chain[self.k]
        x = self.history[hop.start][:, hop.cached:]
        self.attempt, self.sent = self.attempt + 1, x.shape[1]
        ctx.send(hop.server, Message.make(STEP, {"x": np.ascontiguousarray(x)}, session=self.session,
                                          attempt=self.attempt, start=hop.start, end=hop.end, past=hop.cached))
        ctx.set_timer("timeout", self.timeout_s)

    def _token_done(self, ctx: Context) -> None:
        token = np.asarray(self.sampler(self.logits), dtype=np.int64)
        self.out.append(token)
        self.token_times.append(ctx.now)
        ctx.record("tokens", 1.0)
        if self.on_token is not None:
            self.on_token(len(self.out) - 1, token)
        if len(self.out) == self.n_tokens:
            self._finish(ctx)
            return
        self.history[0] = np.concatenate([self.history[0], token[:, None]], 1)
        self.k, self.fresh = 0, 1
        self._advance(ctx)

    def _finish(self, ctx: Context) -> None:
        self.done = True
        self._close(ctx, self.chain)
        ctx.stop()

    # ------------------------------------------------------------------ answers
    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        hop = self.hop
        if (hop is None or src != hop.server or msg.meta.get("attempt") != self.attempt
                or msg.meta.get("session") != self.session):
            return  # a late answer to an attempt we gave up on (or not ours)
        if msg.kind == OUT:
            problem = self._problem(msg.tensors.get("y"), msg.meta.get("end"))
            if problem is not None:
                self._give_up_on_hop(ctx, f"{src} answered a bad activation for block {hop.end}: {problem}")
            else:
                self._hop_done(ctx, msg.tensors["y"])
        elif msg.kind == ERR:
            self._refused(ctx, msg.meta.get("code"), str(msg.meta.get("reason", "no reason")))

    def _problem(self, y: np.ndarray | None, end: object) -> str | None:
        """A liar's answer is caught here, so the liar (not the next server, which would refuse it) is banned."""
        if y is None or end != self.hop.end:
            return "no output, or the output of another boundary"
        if y.ndim < 2 or y.shape[:2] != (len(self.prompt), self.sent):
            return f"shape {y.shape}, want {len(self.prompt)} sequences of {self.sent} positions"
        return None if self.check is None else self.check(self.hop.end, y)

    def _hop_done(self, ctx: Context, y: np.ndarray) -> None:
        ctx.cancel_timer("timeout")
        hop, self.hop = self.hop, None
        if hop.cached == 0 and self.sent > self.fresh:
            self.rebuilds, self.rebuilt_positions = self.rebuilds + 1, self.rebuilt_positions + self.sent - self.fresh
        old, hop.cached = hop.cached, hop.cached + self.sent
        if hop.end == self.blocks:
            self.logits = y[:, -1]
        else:
            self._extend(hop.end, y, old, hop.cached)
        self.longest_wait = max(self.longest_wait, ctx.now - self.waiting_since)
        self.waiting_since, self.k = ctx.now, self.k + 1
        self._advance(ctx)

    def _extend(self, boundary: int, y: np.ndarray, first: int, stop: int) -> None:
        """``y`` holds positions ``first .. stop - 1`` at ``boundary``: add those its history lacks."""
        have = self.history[boundary].shape[1] if boundary in self.history else 0
        if have < stop:
            new = y[:, have - first:]
            self.history[boundary] = new if not have else np.concatenate([self.history[boundary], new], 1)

    def _refused(self, ctx: Context, code: object, reason: str) -> None:
        if code == LOST and self.hop.cached > 0:  # the server forgot the session: replay to it, no ban
            ctx.cancel_timer("timeout")
            self.lost, self.hop.cached, self.hop = self.lost + 1, 0, None
            ctx.log(f"{self.chain[self.k].server} lost session {self.session}: {reason}; replaying", level="warning")
            self._advance(ctx)
        else:
            self._give_up_on_hop(ctx, f"{self.hop.server} refused ({code}): {reason}", forever=code != FULL)

    # ------------------------------------------------------------------ failures
    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "timeout" and self.hop is not None:
            self._give_up_on_hop(ctx, f"{self.hop.server} did not answer within {self.timeout_s}s")
        elif name == "retry" and not self.done:
            self._reroute(ctx)

    def _give_up_on_hop(self, ctx: Context, why: str, forever: bool = True) -> None:
        ctx.cancel_timer("timeout")
        server, self.hop = self.hop.server, None
        if forever:
            self.banned.add(server)
        self.suspects[server] = ctx.now + self.ban_s
        self.reroutes += 1
        self.dropped, self.chain = self.chain[self.k:], self.chain[:self.k]
        ctx.record("hop_failures", 1.0)
        ctx.log(f"session {self.session}, token {len(self.out)}: {why}; routing again from block "
                f"{self._boundary()}", level="warning")
        self._reroute(ctx)

    def _boundary(self) -> int:
        return self.chain[-1].end if self.chain else 0

    def _reroute(self, ctx: Context) -> None:
        banned = {s for s, until in self.suspects.items() if until > ctx.now} | self.banned
        hops = route(self.placement, self.servers, self.blocks, site=self.site, latency=self.latency,
                     banned=banned, begin=self._boundary())
        if not hops:
            ctx.set_timer("retry", self.retry_s)  # no live host for some block: wait for placement
            return
        self.chain, dropped, self.dropped = self.chain + [self._reuse(hop) for hop in hops], self.dropped, []
        in_use = {h.server for h in self.chain}  # a close drops all of a server's caches of the session
        self._close(ctx, [h for h in dropped if h.server not in in_use])
        self._advance(ctx)

    def _reuse(self, hop: Hop) -> _Hop:
        """The old chain's hop if the new route keeps it (its server still holds the cache), else a fresh one."""
        old = next((h for h in self.dropped if h.same(hop) and h.server not in self.banned), None)
        return old or _Hop(hop.server, hop.start, hop.end)

    def _close(self, ctx: Context, hops: list[_Hop]) -> None:
        for server in dict.fromkeys(h.server for h in hops):
            ctx.send(server, Message.make(CLOSE, session=self.session))


def _prompt(prompt: np.ndarray) -> np.ndarray:
    x = np.asarray(prompt)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] < 1 or x.dtype.kind not in "iu":
        raise UsageError(f"a prompt is token ids (T,) or (N, T) with T >= 1, got shape {x.shape} {x.dtype}")
    return x.astype(np.int64)
