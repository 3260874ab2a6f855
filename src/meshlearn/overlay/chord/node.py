"""Chord: an m-bit identifier ring with successor lists and finger tables, as a sans-I/O node.

What lives here: ring arithmetic (``in_half_open``, ``in_open``), identifiers (``chord_id``: the
top ``bits`` of SHA-1 of the node name), the converged state of a ring computed directly
(``bootstrap_ring``, for 10,000-node experiments that should not spend simulated minutes
converging), the settings, and ``ChordNode``: join through a bootstrap node, periodic stabilize /
notify, fix_fingers and check_predecessor, a successor list of r entries, and recursive lookup
routing. Packets live in ``packets.py``.

A peer is the tuple ``(id, name)``: the ring identifier and the name a runtime sends to.

Rules of the node (Stoica et al., SIGCOMM 2001, with the successor-list extension):

* ``succs[0]`` is the successor; ``succs`` holds at most r peers, never ``self`` unless alone;
* ``fingers[i]`` is the successor of ``id + 2**i`` (possibly ``self``), or None while unknown;
* a peer learnt dead is kept in ``dead`` for ``dead_ttl_s`` and refused in every table;
* subclasses (``PropagationNode`` in ``propagation.py``) extend ``HANDLERS`` / ``_t_<timer>`` methods and override the
  hooks ``_peer_failed`` and ``_table_changed``; everything else is shared.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass
from itertools import chain
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field

from meshlearn.errors import UsageError
from meshlearn.node import Context, Node
from meshlearn.overlay.chord.packets import (
    FindSuccessor,
    FoundSuccessor,
    GetNeighbors,
    Neighbors,
    Notify,
    Peer,
    Ping,
    Pong,
)

__all__ = [
    "ChordSettings",
    "ChordNode",
    "RingState",
    "bootstrap_ring",
    "chord_id",
    "ring_peers",
    "in_half_open",
    "in_open",
]

HOP_LIMIT = 64  # a routed packet with more hops is dropped (routing loop under churn)


# ----- ring arithmetic ------------------------------------------------------------------------
def in_half_open(x: int, a: int, b: int, mask: int) -> bool:
    """``x`` in the ring interval (a, b]; (a, a] is the whole ring."""
    span = (b - a) & mask
    return span == 0 or 0 < ((x - a) & mask) <= span


def in_open(x: int, a: int, b: int, mask: int) -> bool:
    """``x`` in the ring interval (a, b); (a, a) is the whole ring but ``a``."""
    span, off = (b - a) & mask, (x - a) & mask
    return 0 < off < span or (span == 0 and off != 0)


def chord_id(name: str, bits: int = 32) -> int:
    """The top ``bits`` bits of SHA-1(name): the node's place on the ring."""
    if not 1 <= bits <= 32:
        raise UsageError(f"bits must be in [1, 32] (ids travel as u32), got {bits}")
    digest = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big")
    return digest >> (64 - bits)


def ring_peers(names: Iterable[str], bits: int = 32) -> list[Peer]:
    """``(chord_id(name), name)`` for each name; UsageError when two names share an id."""
    peers, seen = [], {}
    for name in names:
        ident = chord_id(name, bits)
        if ident in seen:
            raise UsageError(f"{name!r} and {seen[ident]!r} hash to the same {bits}-bit id; "
                             "rename one or use more bits")
        seen[ident] = name
        peers.append((ident, name))
    return peers


# ----- converged state ------------------------------------------------------------------------
@dataclass(frozen=True)
class RingState:
    """A node's routing state: predecessor, successor list, finger table."""

    pred: Peer | None
    succs: tuple[Peer, ...]
    fingers: tuple[Peer | None, ...]


def bootstrap_ring(peers: Iterable[Peer], *, bits: int = 32, successors: int = 8) -> dict[str, RingState]:
    """The state a stabilized Chord ring of ``peers`` converges to, by node name."""
    ring = sorted(peers)
    if not ring:
        raise UsageError("bootstrap_ring needs at least one peer")
    ids = [p[0] for p in ring]
    if len(set(ids)) != len(ids):
        raise UsageError("two peers share a ring id; ids must be unique")
    if ids[-1] >> bits:
        raise UsageError(f"peer id {ids[-1]} does not fit in {bits} bits")
    n, size = len(ring), 1 << bits
    states = {}
    for k, me in enumerate(ring):
        if n == 1:
            states[me[1]] = RingState(None, (me,), (me,) * bits)
            continue
        succs = tuple(ring[(k + j) % n] for j in range(1, min(successors, n - 1) + 1))
        fingers = tuple(ring[bisect_left(ids, (me[0] + (1 << i)) % size) % n] for i in range(bits))
        states[me[1]] = RingState(ring[k - 1], succs, fingers)
    return states


# ----- settings -------------------------------------------------------------------------------
class ChordSettings(BaseModel):
    """Chord protocol parameters; a period of None disables that periodic task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bits: int = Field(32, ge=4, le=32, description="identifier bits m; ids are the top m bits of SHA-1(name)")
    successors: int = Field(8, ge=1, le=64, description="successor-list length r (survives r-1 adjacent failures)")
    stabilize_s: float | None = Field(
        0.5, gt=0, description="stabilize period (ask succ for pred + list); None = on demand only")
    fix_fingers_s: float | None = Field(0.1, gt=0, description="period of fixing one finger by lookup; None = off")
    check_predecessor_s: float | None = Field(0.5, gt=0, description="period of pinging the predecessor; None = off")
    rpc_timeout_s: float = Field(0.2, gt=0, description="wait this long for a stabilize / ping answer, then: dead")
    join_retry_s: float = Field(1.0, gt=0, description="resend the join lookup this often until answered")
    dead_ttl_s: float = Field(30.0, gt=0, description="how long a peer known dead is refused in routing tables")


# ----- the node -------------------------------------------------------------------------------
class ChordNode(Node):
    """A Chord member. Start it with ``state`` (converged), ``bootstrap`` (join) or neither (alone)."""

    HANDLERS = {
        FindSuccessor: "_on_find",
        FoundSuccessor: "_on_found",
        GetNeighbors: "_on_get_neighbors",
        Neighbors: "_on_neighbors",
        Notify: "_on_notify",
        Ping: "_on_ping",
        Pong: "_on_pong",
    }

    def __init__(
        self,
        name: str,
        *,
        settings: ChordSettings | None = None,
        ring_id: int | None = None,
        bootstrap: str | None = None,
        state: RingState | None = None,
    ):
        super().__init__(name)
        self.cfg = settings or ChordSettings()
        self.bits = self.cfg.bits
        self.mask = (1 << self.bits) - 1
        self.id = chord_id(name, self.bits) if ring_id is None else ring_id
        if not 0 <= self.id <= self.mask:
            raise UsageError(f"chord id {self.id} does not fit in {self.bits} bits")
        self.me: Peer = (self.id, name)
        self.bootstrap, self.initial = bootstrap, state
        self._dispatch = {cls: getattr(self, meth) for cls, meth in self.HANDLERS.items()}
        self.dropped = 0  # packets of a type this node does not handle
        self.sent: dict[str, int] = {}  # packets sent, by kind
        self._started = False
        self._reset()

    def _reset(self) -> None:
        self.pred: Peer | None = None
        self.succs: list[Peer] = [self.me]
        self.fingers: list[Peer | None] = [None] * self.bits
        self.dead: dict[str, float] = {}
        self.pending: dict[int, tuple] = {}  # lookup req -> (purpose, key, sent at)
        self.lookups: dict[int, tuple[Peer, int]] = {}  # results of user lookups: req -> (succ, hops)
        self.joined = False
        self._req = self._seq = 0
        self._next_finger = 0
        self._stab_wait: tuple[int, Peer] | None = None
        self._chkp_wait: tuple[int, Peer] | None = None

    # ----- state --------------------------------------------------------------------------------
    def install(self, state: RingState) -> None:
        """Adopt a routing state (e.g. from ``bootstrap_ring``)."""
        self.pred = state.pred
        self.succs = list(state.succs)
        self.fingers = list(state.fingers)
        self.joined = True

    def state(self) -> RingState:
        return RingState(self.pred, tuple(self.succs), tuple(self.fingers))

    def is_dead(self, name: str, now: float) -> bool:
        t = self.dead.get(name)
        if t is None:
            return False
        if now - t > self.cfg.dead_ttl_s:
            del self.dead[name]
            return False
        return True

    # ----- events -------------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        first, self._started = not self._started, True
        self._reset()
        if first and self.initial is not None:
            self.install(self.initial)
        elif self.bootstrap is None or self.bootstrap == self.node_id:
            self.joined = True
        else:
            self._t_join(ctx)
        for timer, period in (("stab", self.cfg.stabilize_s), ("fix", self.cfg.fix_fingers_s),
                              ("chkp", self.cfg.check_predecessor_s)):
            if period is not None:
                ctx.set_timer(timer, period * (0.5 + ctx.rng.random()))
        self._table_changed(ctx)

    def on_message(self, ctx: Context, src: str, msg) -> None:
        handler = self._dispatch.get(type(msg))
        if handler is None:
            self.dropped += 1
        else:
            handler(ctx, src, msg)

    def on_timer(self, ctx: Context, name: str) -> None:
        getattr(self, "_t_" + name)(ctx)

    def _send(self, ctx: Context, dst: str, packet) -> None:
        """Send a datagram and count it by kind (overlay traffic is never retransmitted)."""
        self.sent[packet.kind] = self.sent.get(packet.kind, 0) + 1
        ctx.send(dst, packet, reliable=False)

    # ----- hooks --------------------------------------------------------------------------------
    def _peer_failed(self, ctx: Context, peer: Peer) -> None:
        """A probe of ``peer`` went unanswered (base: forget it)."""
        self._forget(ctx, peer, None)

    def _table_changed(self, ctx: Context) -> None:
        """Called after pred, succs or fingers changed."""

    # ----- routing ------------------------------------------------------------------------------
    def first_live_succ(self, now: float, avoid: str | None = None) -> Peer | None:
        for p in self.succs:
            if p[1] != avoid and not self.is_dead(p[1], now):
                return p
        return None

    def closest_preceding(self, key: int, now: float, avoid: str | None = None) -> Peer | None:
        """The known live peer farthest along the ring from ``self`` but strictly before ``key``."""
        mask, me = self.mask, self.id
        limit = ((key - me) & mask) or (mask + 1)
        best, best_d = None, 0
        for p in chain(self.fingers, self.succs):
            if p is None:
                continue
            d = (p[0] - me) & mask
            if best_d < d < limit and p[1] != avoid and not self.is_dead(p[1], now):
                best, best_d = p, d
        return best

    def route_step(self, key: int, now: float, avoid: str | None = None) -> tuple[bool, Peer]:
        """``(True, succ)`` when this node precedes ``key`` (``succ`` owns it), else ``(False, next hop)``."""
        succ = self.first_live_succ(now, avoid)
        if succ is None or succ == self.me:
            return True, self.me
        if in_half_open(key, self.id, succ[0], self.mask):
            return True, succ
        return False, self.closest_preceding(key, now, avoid) or succ

    # ----- lookups ------------------------------------------------------------------------------
    def lookup(self, ctx: Context, key: int) -> int:
        """Start a lookup of ``key``; its answer lands in ``self.lookups[req]``."""
        return self._lookup(ctx, key & self.mask, ("user",))

    def _lookup(self, ctx: Context, key: int, purpose: tuple) -> int:
        self._req += 1
        req = self._req
        if len(self.pending) > 256:
            cutoff = ctx.now - 10.0
            self.pending = {k: v for k, v in self.pending.items() if v[2] >= cutoff}
        self.pending[req] = (purpose, key, ctx.now)
        self._on_find(ctx, self.node_id, FindSuccessor(req, key, self.me, 0))
        return req

    def _on_find(self, ctx: Context, src: str, msg: FindSuccessor) -> None:
        req, key, origin, hops = msg
        done, peer = self.route_step(key, ctx.now)
        if done:
            answer = FoundSuccessor(req, key, peer, hops)
            if origin[1] == self.node_id:
                self._on_found(ctx, self.node_id, answer)
            else:
                self._send(ctx, origin[1], answer)
        elif hops < HOP_LIMIT:
            self._send(ctx, peer[1], FindSuccessor(req, key, origin, hops + 1))

    def _on_found(self, ctx: Context, src: str, msg: FoundSuccessor) -> None:
        entry = self.pending.pop(msg.req, None)
        if entry is None or entry[1] != msg.key:
            return
        purpose, succ = entry[0], msg.succ
        if purpose[0] == "user":
            self.lookups[msg.req] = (succ, msg.hops)
        elif self.is_dead(succ[1], ctx.now):
            return
        elif purpose[0] == "finger":
            self._set_finger(ctx, purpose[1], succ)
        elif purpose[0] == "join" and not self.joined:
            self.joined = True
            self.succs = [succ]
            ctx.cancel_timer("join")
            self._table_changed(ctx)
            self._stabilize(ctx)

    def _t_join(self, ctx: Context) -> None:
        if self.joined:
            return
        self._req += 1
        self.pending[self._req] = (("join",), self.id, ctx.now)
        self._send(ctx, self.bootstrap, FindSuccessor(self._req, self.id, self.me, 0))
        ctx.set_timer("join", self.cfg.join_retry_s)

    def _set_finger(self, ctx: Context, i: int, peer: Peer) -> None:
        """Finger i is ``peer``; so is every later finger whose start lies in (self, peer]."""
        changed, j = False, i
        while j < self.bits and (j == i or in_half_open((self.id + (1 << j)) & self.mask, self.id, peer[0], self.mask)):
            if self.fingers[j] != peer:
                self.fingers[j], changed = peer, True
            j += 1
        self._next_finger = j % self.bits
        if changed:
            self._table_changed(ctx)

    def _t_fix(self, ctx: Context) -> None:
        ctx.set_timer("fix", self.cfg.fix_fingers_s)
        if self.joined:
            i = self._next_finger
            self._next_finger = (i + 1) % self.bits
            self._lookup(ctx, (self.id + (1 << i)) & self.mask, ("finger", i))

    # ----- stabilize / notify -------------------------------------------------------------------
    def _t_stab(self, ctx: Context) -> None:
        ctx.set_timer("stab", self.cfg.stabilize_s)
        self._stabilize(ctx)

    def _stabilize(self, ctx: Context) -> None:
        """Ask the successor for its predecessor and successor list (periodic or on demand)."""
        if not self.joined:
            return
        succ = self.succs[0]
        if succ == self.me:
            if self.pred is None or self.pred == self.me:
                return
            self.succs = [self.pred]
            self._table_changed(ctx)
            succ = self.pred
        self._seq += 1
        self._stab_wait = (self._seq, succ)
        self._send(ctx, succ[1], GetNeighbors(self._seq))
        if self.cfg.stabilize_s is not None:
            ctx.set_timer("stab_to", self.cfg.rpc_timeout_s)

    def _t_stab_to(self, ctx: Context) -> None:
        wait, self._stab_wait = self._stab_wait, None
        if wait is not None:
            self._peer_failed(ctx, wait[1])

    def _on_get_neighbors(self, ctx: Context, src: str, msg: GetNeighbors) -> None:
        now = ctx.now
        pred = self.pred if self.pred is not None and not self.is_dead(self.pred[1], now) else None
        succs = tuple(p for p in self.succs if not self.is_dead(p[1], now))
        self._send(ctx, src, Neighbors(msg.seq, pred, succs))

    def _on_neighbors(self, ctx: Context, src: str, msg: Neighbors) -> None:
        wait = self._stab_wait
        if wait is None or wait[0] != msg.seq or wait[1][1] != src:
            return
        self._stab_wait = None
        ctx.cancel_timer("stab_to")
        succ, x, now = wait[1], msg.pred, ctx.now
        head = [succ]
        if x is not None and x != self.me and not self.is_dead(x[1], now) \
                and in_open(x[0], self.id, succ[0], self.mask):
            head = [x, succ]  # a node joined between us and our successor
        fresh: list[Peer] = []
        for p in chain(head, msg.succs):
            if p[1] != self.node_id and p not in fresh and not self.is_dead(p[1], now):
                fresh.append(p)
        fresh = fresh[: self.cfg.successors] or [self.me]
        if fresh != self.succs:
            self.succs = fresh
            self._table_changed(ctx)
        if fresh[0] != self.me:
            self._send(ctx, fresh[0][1], Notify(self.me))

    def _on_notify(self, ctx: Context, src: str, msg: Notify) -> None:
        p = msg.peer
        if p == self.me or p[1] != src:
            return
        self.dead.pop(p[1], None)  # it just spoke: alive
        changed = False
        if self.pred is None or self.is_dead(self.pred[1], ctx.now) or in_open(p[0], self.pred[0], self.id, self.mask):
            self.pred, changed = p, self.pred != p
        if self.succs == [self.me]:
            self.succs, changed = [p], True
        if changed:
            self._table_changed(ctx)

    # ----- check_predecessor --------------------------------------------------------------------
    def _t_chkp(self, ctx: Context) -> None:
        ctx.set_timer("chkp", self.cfg.check_predecessor_s)
        if self.pred is None or self.pred == self.me:
            return
        self._seq += 1
        self._chkp_wait = (self._seq, self.pred)
        self._send(ctx, self.pred[1], Ping(self._seq, self.id))
        ctx.set_timer("chkp_to", self.cfg.rpc_timeout_s)

    def _t_chkp_to(self, ctx: Context) -> None:
        wait, self._chkp_wait = self._chkp_wait, None
        if wait is not None and wait[1] == self.pred:
            self._peer_failed(ctx, wait[1])

    def _on_ping(self, ctx: Context, src: str, msg: Ping) -> None:
        self._send(ctx, src, Pong(msg.seq))

    def _on_pong(self, ctx: Context, src: str, msg: Pong) -> None:
        wait = self._chkp_wait
        if wait is not None and wait[0] == msg.seq and wait[1][1] == src:
            self._chkp_wait = None
            ctx.cancel_timer("chkp_to")

    # ----- forgetting a dead peer ---------------------------------------------------------------
    def _forget(self, ctx: Context, peer: Peer, replacement: Peer | None) -> bool:
        """Drop ``peer`` from every table; fingers move to ``replacement`` (or the next successor).

        Returns whether ``peer`` was in any table. A shortened successor list is refilled by an
        on-demand stabilize.
        """
        name, now = peer[1], ctx.now
        self.dead[name] = now
        if replacement is not None and (replacement[1] == name or self.is_dead(replacement[1], now)):
            replacement = None
        held = False
        if self.pred is not None and self.pred[1] == name:
            self.pred, held = None, True
        names = [p[1] for p in self.succs]
        if name in names:
            held = True
            k = names.index(name)
            if replacement is None:
                replacement = next((p for p in self.succs[k + 1:] if not self.is_dead(p[1], now)), None)
            self.succs = [p for p in self.succs if p[1] != name] or [self._fallback_succ(now)]
        for i, f in enumerate(self.fingers):
            if f is not None and f[1] == name:
                self.fingers[i], held = replacement, True
        if self._stab_wait is not None and self._stab_wait[1][1] == name:
            self._stab_wait = None
        if held:
            self._table_changed(ctx)
            if name in names:
                self._stabilize(ctx)
        return held

    def _fallback_succ(self, now: float) -> Peer:
        """When the whole successor list is gone: the closest live finger, else ``self``."""
        live = [f for f in self.fingers if f is not None and f != self.me and not self.is_dead(f[1], now)]
        return min(live, key=lambda p: (p[0] - self.id) & self.mask, default=self.me)
