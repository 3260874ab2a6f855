"""Failure-information propagation on a Chord ring: keep-alive probing and three arms.

techniques-mizutani.md §1. Every node probes its distinct routing entries (predecessor, successor
list, fingers; a peer held twice is probed once) with Ping / Pong; an entry unanswered after
``probe_timeout_s`` is detected dead. The arms differ in what follows a detection:

* ``baseline`` (A): every entry probed each ``near_period_s``; a node only repairs its own
  pointers, each holder of the failed node f detects f by itself;
* ``stateful`` (B, Living Will / Zhuang et al.): same probing; every node learns its backpointers
  from the probes it receives and hands that list (its *will*) to its first ``will_copies``
  successors whenever it changes (and every ``will_refresh_s``). The detector reports f to f's
  successor, which notifies every peer in f's will directly;
* ``stateless`` (C): no propagation state. Keep-alive is biased towards close entries: the
  successor list and predecessor every ``near_period_s``, the k-th finger beyond the successor list
  every ``near_period_s · far_base^max(0, k - near_fingers)`` (capped at ``max_period_s``). At
  detection the detector estimates pred(f) (exactly when f is in its successor list, else
  f − the mean gap of its own successor list) and so f's backpointers: the ring intervals
  (pred(f) − 2^i, f − 2^i] (``estimate_regions``) plus the r nodes before f and f's successor. One
  ``FailureWalk`` is routed to the top of each merged interval and walks predecessors while inside.

"Failure-check messages" are the probes and their acks; the stateful arm's will messages are
counted separately (``maintenance``) and added for the comparison. Repairs (on-demand stabilize,
finger lookups) are the same code in every arm and are reported apart, as are notifications.
``PropagationConfig`` holds the protocol's settings (ring shape, keep-alive schedule, arm); the
experiment that runs an arm under Poisson crashes (``PropagationSettings``, ``simulate_propagation``)
is the driver in ``chord/sim.py``, which this module never imports.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from meshlearn.errors import UsageError
from meshlearn.node import Context
from meshlearn.overlay.chord.node import HOP_LIMIT, ChordNode, ChordSettings, RingState, in_half_open
from meshlearn.overlay.chord.packets import (
    MAX_PEERS,
    FailureNotice,
    FailureReport,
    FailureWalk,
    Peer,
    Ping,
    Pong,
    Will,
)

__all__ = [
    "ARMS",
    "PropagationConfig",
    "PropagationNode",
    "estimate_regions",
    "estimated_targets",
]

Arm = Literal["baseline", "stateful", "stateless"]
ARMS: tuple[str, ...] = ("baseline", "stateful", "stateless")


class PropagationConfig(BaseModel):
    """The protocol side of a propagation member: ring shape, keep-alive schedule and the arm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arm: Arm = Field("stateless", description="baseline (A), stateful backpointers (B) or stateless estimation (C)")
    bits: int = Field(32, ge=8, le=32, description="identifier bits m of the Chord ring")
    successors: int = Field(8, ge=1, le=64, description="successor-list length r")
    near_period_s: float = Field(
        1.0, gt=0, description="keep-alive period of the successor list and predecessor (of every entry in A and B)")
    probe_timeout_s: float = Field(0.5, gt=0, description="a probe unanswered this long means dead (< near_period_s)")
    far_base: float = Field(2.0, ge=1, description="stateless arm: period ratio between consecutive far fingers (beta)")
    near_fingers: int = Field(
        0, ge=0, description="stateless arm: fingers beyond the successor list still probed at the near period")
    max_period_s: float = Field(16.0, gt=0, description="stateless arm: longest keep-alive period of any entry")
    will_copies: int = Field(2, ge=1, description="stateful arm: successors that hold a node's will")
    will_min_interval_s: float = Field(1.0, ge=0, description="stateful arm: at most one will update per this interval")
    will_refresh_s: float = Field(30.0, gt=0, description="stateful arm: resend the will this often anyway")
    backpointer_ttl: float = Field(
        2.5, gt=1, description="stateful arm: a backpointer expires after this many probe periods unheard")
    repair_retry_s: float = Field(2.0, gt=0, description="retry an unanswered finger-repair lookup after this long")

    @model_validator(mode="after")
    def _consistent(self) -> "PropagationConfig":
        if self.probe_timeout_s >= self.near_period_s:
            raise UsageError(f"probe_timeout_s ({self.probe_timeout_s}) must be below near_period_s "
                             f"({self.near_period_s}): a probe must time out before the next one")
        if self.max_period_s < self.near_period_s:
            raise UsageError("max_period_s must be at least near_period_s")
        return self

    def chord(self) -> ChordSettings:
        """Chord settings of the members: no periodic tasks, keep-alive does the failure checks."""
        return ChordSettings(bits=self.bits, successors=self.successors, stabilize_s=None, fix_fingers_s=None,
                             check_predecessor_s=None, dead_ttl_s=1e12)


# ----- the estimate ---------------------------------------------------------------------------
def estimate_regions(failed_id: int, gap: int, bits: int, successors: int) -> list[tuple[int, int, int]]:
    """Ring regions ``(top, bottom, budget)`` holding the estimated backpointers of ``failed_id``.

    ``gap`` = f − pred(f) (exact or estimated). Node x holds f as finger i iff f − x lies in
    [2^i, 2^i + gap); those offset intervals are merged and turned into ring intervals
    (bottom, top]. The first region (the one reaching pred(f)) gets ``budget`` = r, so its walk
    also covers the r successor-list holders before f.
    """
    size, mask = 1 << bits, (1 << bits) - 1
    gap = max(1, min(gap, mask))
    merged: list[list[int]] = []
    for a, b in sorted((1 << i, min((1 << i) + gap, size)) for i in range(bits)):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [((failed_id - a) & mask, (failed_id - b) & mask, successors if k == 0 else 0)
            for k, (a, b) in enumerate(merged)]


def estimated_targets(live_ids: Sequence[int], failed_id: int, regions, bits: int) -> set[int]:
    """Ids a stateless propagation reaches on a ring of ``live_ids`` (sorted, without f).

    For each region the walk starts at the last live node at or before ``top`` and visits
    max(budget, nodes inside) nodes backwards; f's successor is always notified too.
    """
    n, mask = len(live_ids), (1 << bits) - 1
    if n == 0:
        return set()
    out = {live_ids[bisect_right(live_ids, failed_id) % n]}
    for top, bottom, budget in regions:
        start = (bisect_right(live_ids, top) - 1) % n
        span = (top - bottom) & mask
        inside = 0
        while inside < n and inside < span and in_half_open(live_ids[(start - inside) % n], bottom, top, mask):
            inside += 1
        out.update(live_ids[(start - k) % n] for k in range(min(n, max(budget, inside))))
    return out


# ----- the node -------------------------------------------------------------------------------
class PropagationNode(ChordNode):
    """A Chord member with keep-alive probing and one of the three propagation arms."""

    HANDLERS = {
        **ChordNode.HANDLERS,
        Will: "_on_will",
        FailureReport: "_on_report",
        FailureNotice: "_on_notice",
        FailureWalk: "_on_walk",
    }

    def __init__(self, name: str, *, settings: PropagationConfig, ring_id: int | None = None,
                 state: RingState | None = None):
        super().__init__(name, settings=settings.chord(), ring_id=ring_id, state=state)
        self.prop = settings
        self.arm = settings.arm
        self.period = settings.near_period_s
        self.cap_ticks = max(1, int(settings.max_period_s / settings.near_period_s + 1e-9))
        self.n_probe = self.n_ack = self.n_will = self.n_notify = 0
        self.notify_by_failed: dict[int, int] = {}
        self.estimates: list[tuple] = []  # (time, failed id, gap, exact) per own detection
        self._reset_prop()

    def _reset_prop(self) -> None:
        self.watch: dict[str, list] = {}  # name -> [id, every (ticks), phase, pending seq, peer]
        self.tick = 0
        self._batch: list[str] = []
        self._repairing: dict[int, float] = {}  # finger index -> lookup sent at
        self.bp: dict[str, list] = {}  # stateful: prober name -> [id, last heard]
        self.wills: dict[str, tuple] = {}  # stateful: owner name -> (received at, peers)
        self._executed: set[str] = set()
        self._bp_dirty, self._will_at, self._will_holders = False, -1e18, ()

    # ----- start and watch list -----------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        self._reset_prop()
        super().on_start(ctx)
        ctx.set_timer("ka", self.period * ctx.rng.random())

    def _table_changed(self, ctx: Context) -> None:
        self._rebuild_watch(ctx)

    def probe_every(self, finger_rank: int) -> int:
        """Ticks between probes of the ``finger_rank``-th finger beyond the successor list (0-based)."""
        if self.arm != "stateless":
            return 1
        k = max(0, finger_rank - self.prop.near_fingers)
        return min(self.cap_ticks, max(1, round(self.prop.far_base ** k)))

    def _rebuild_watch(self, ctx: Context) -> None:
        """Distinct routing entries and their probe schedule; pending probes survive."""
        want: dict[str, tuple[Peer, int]] = {}
        for p in ([self.pred] if self.pred is not None else []) + self.succs:
            if p[1] != self.node_id:
                want[p[1]] = (p, 1)
        first_far = None
        for i, f in enumerate(self.fingers):
            near = first_far is None and f is not None and f[1] in want  # still inside the successor list
            if f is None or f[1] == self.node_id or near:
                continue
            if first_far is None:
                first_far = i
            if f[1] not in want:
                want[f[1]] = (f, self.probe_every(i - first_far))
        old, self.watch = self.watch, {}
        for name, (peer, every) in want.items():
            entry = old.get(name)
            if entry is None:
                entry = [peer[0], every, int(ctx.rng.integers(every)), 0, peer]
            entry[1] = every
            self.watch[name] = entry

    # ----- keep-alive ---------------------------------------------------------------------------
    def _t_ka(self, ctx: Context) -> None:
        ctx.set_timer("ka", self.period)
        self.tick = t = self.tick + 1
        ping, batch, send = Ping(t, self.id), [], ctx.send
        for name, e in self.watch.items():
            if e[1] == 1 or (t + e[2]) % e[1] == 0:
                e[3] = t
                send(name, ping, reliable=False)
                batch.append(name)
        self.n_probe += len(batch)
        self._batch = batch
        if batch:
            ctx.set_timer("ka_to", self.prop.probe_timeout_s)
        if self.arm == "stateful":
            self._will_tick(ctx)
        if None in self.fingers:
            self._repair_fingers(ctx)

    def _on_ping(self, ctx: Context, src: str, msg: Ping) -> None:
        self.n_ack += 1
        ctx.send(src, Pong(msg.seq), reliable=False)
        if self.arm == "stateful":
            entry = self.bp.get(src)
            if entry is None:
                self.bp[src] = [msg.sender_id, ctx.now]
                self._bp_dirty = True
            else:
                entry[1] = ctx.now

    def _on_pong(self, ctx: Context, src: str, msg: Pong) -> None:
        e = self.watch.get(src)
        if e is not None and e[3] == msg.seq:
            e[3] = 0

    def _t_ka_to(self, ctx: Context) -> None:
        t = self.tick
        for name in self._batch:
            e = self.watch.get(name)
            if e is not None and e[3] == t:
                self._detect(ctx, e[4])

    def _repair_fingers(self, ctx: Context) -> None:
        now = ctx.now
        for i, f in enumerate(self.fingers):
            if f is None and now - self._repairing.get(i, -1e18) >= self.prop.repair_retry_s:
                self._repairing[i] = now
                self._lookup(ctx, (self.id + (1 << i)) & self.mask, ("finger", i))

    # ----- detection ----------------------------------------------------------------------------
    def _detect(self, ctx: Context, failed: Peer) -> None:
        """An own probe of ``failed`` went unanswered: estimate, propagate per arm, repair."""
        if self.is_dead(failed[1], ctx.now):
            return
        ctx.record("prop.detect", failed[0], per_node=True)
        gap, exact, succ_f = self.estimate_gap(failed, ctx.now)
        self.estimates.append((ctx.now, failed[0], gap, exact))
        if self.arm == "stateless":
            self._propagate_stateless(ctx, failed, gap, succ_f)
        elif self.arm == "stateful":
            self._propagate_stateful(ctx, failed, succ_f)
        self._learn(ctx, failed, succ_f)

    def estimate_gap(self, failed: Peer, now: float) -> tuple[int, bool, Peer | None]:
        """``(f − pred(f) as believed, exact?, f's successor if known)`` from local state only."""
        names = [p[1] for p in self.succs]
        if failed[1] in names:
            k = names.index(failed[1])
            before = [p for p in self.succs[:k] if not self.is_dead(p[1], now)]
            prev = before[-1] if before else self.me
            after = next((p for p in self.succs[k + 1:] if not self.is_dead(p[1], now)), None)
            return (failed[0] - prev[0]) & self.mask, True, after
        span = (self.succs[-1][0] - self.id) & self.mask
        gap = max(1, span // max(1, len(self.succs)))
        known = self.closest_preceding(failed[0], now, avoid=failed[1])
        if known is not None:
            gap = min(gap, (failed[0] - known[0]) & self.mask)
        succ_f = self.me if self.pred is not None and self.pred[1] == failed[1] else None
        return gap, False, succ_f

    def _learn(self, ctx: Context, failed: Peer, replacement: Peer | None) -> None:
        if failed[1] == self.node_id or self.is_dead(failed[1], ctx.now):
            return
        if self._forget(ctx, failed, replacement):
            ctx.record("prop.learn", failed[0], per_node=True)

    def _notify_send(self, ctx: Context, dst: str, packet, failed_id: int) -> None:
        self.n_notify += 1
        self.notify_by_failed[failed_id] = self.notify_by_failed.get(failed_id, 0) + 1
        ctx.send(dst, packet, reliable=False)

    # ----- stateless arm ------------------------------------------------------------------------
    def _propagate_stateless(self, ctx: Context, failed: Peer, gap: int, succ_f: Peer | None) -> None:
        for top, bottom, budget in estimate_regions(failed[0], gap, self.bits, self.cfg.successors):
            self._on_walk(ctx, self.node_id, FailureWalk(failed, succ_f, top, bottom, budget, 0, 0))
        if succ_f is None:
            self._on_report(ctx, self.node_id, FailureReport(failed, 0, 0))
        elif succ_f != self.me:
            self._notify_send(ctx, succ_f[1], FailureNotice(failed, succ_f), failed[0])

    def _on_walk(self, ctx: Context, src: str, msg: FailureWalk) -> None:
        failed, repl, top, bottom, budget, walking, hops = msg
        if failed[1] == self.node_id or hops >= HOP_LIMIT:
            return
        if not walking:
            done, nxt = self.route_step((top + 1) & self.mask, ctx.now, avoid=failed[1])
            if not done:
                self._notify_send(ctx, nxt[1], FailureWalk(failed, repl, top, bottom, budget, 0, hops + 1), failed[0])
                return
        if not in_half_open(self.id, bottom, top, self.mask) and budget == 0:
            return
        self._learn(ctx, failed, repl)
        budget, p = max(0, budget - 1), self.pred
        if p is None or p[1] == failed[1] or self.is_dead(p[1], ctx.now):
            return
        if budget > 0 or in_half_open(p[0], bottom, top, self.mask):
            self._notify_send(ctx, p[1], FailureWalk(failed, repl, top, bottom, budget, 1, hops + 1), failed[0])

    # ----- stateful arm -------------------------------------------------------------------------
    def _propagate_stateful(self, ctx: Context, failed: Peer, succ_f: Peer | None) -> None:
        if failed[1] in self.wills:
            self._execute_will(ctx, failed, succ_f or self.me)
        elif succ_f is not None and succ_f != self.me:
            self._notify_send(ctx, succ_f[1], FailureReport(failed, 1, 0), failed[0])
        else:
            self._on_report(ctx, self.node_id, FailureReport(failed, 0, 0))

    def _on_report(self, ctx: Context, src: str, msg: FailureReport) -> None:
        """Routed to the owner of f's id (f's successor), who executes f's will (stateful)."""
        failed, final, hops = msg
        if failed[1] == self.node_id or hops >= HOP_LIMIT:
            return
        if not final:
            done, nxt = self.route_step(failed[0], ctx.now, avoid=failed[1])
            if nxt != self.me:
                self._notify_send(ctx, nxt[1], FailureReport(failed, int(done), hops + 1), failed[0])
                return
        if self.arm == "stateful":
            self._execute_will(ctx, failed, self.me)
        self._learn(ctx, failed, self.me)

    def _execute_will(self, ctx: Context, failed: Peer, replacement: Peer) -> None:
        if failed[1] in self._executed:
            return
        self._executed.add(failed[1])
        will = self.wills.pop(failed[1], None)
        if will is None:
            return
        for p in will[1]:
            if p[1] not in (self.node_id, failed[1]) and not self.is_dead(p[1], ctx.now):
                self._notify_send(ctx, p[1], FailureNotice(failed, replacement), failed[0])

    def _on_notice(self, ctx: Context, src: str, msg: FailureNotice) -> None:
        self._learn(ctx, msg.failed, msg.replacement)

    def _will_tick(self, ctx: Context) -> None:
        """Expire silent backpointers; hand the will to the first successors when it changed."""
        now, ttl = ctx.now, self.prop.backpointer_ttl * self.period
        if self.tick % 2 == 0:  # expiry needs no finer grain than the ttl (> 1 period)
            for name in [n for n, e in self.bp.items() if now - e[1] > ttl]:
                del self.bp[name]
                self._bp_dirty = True
        holders = tuple(p[1] for p in self.succs[: self.prop.will_copies] if p != self.me)
        moved = holders != self._will_holders
        since = now - self._will_at
        if moved or (self._bp_dirty and since >= self.prop.will_min_interval_s) or since >= self.prop.will_refresh_s:
            peers = tuple((e[0], n) for n, e in self.bp.items())[:MAX_PEERS]
            will = Will(self.tick, peers)
            for name in holders:
                self.n_will += 1
                ctx.send(name, will, reliable=False)
            self._will_at, self._bp_dirty, self._will_holders = now, False, holders

    def _on_will(self, ctx: Context, src: str, msg: Will) -> None:
        if src not in self._executed:
            self.wills[src] = (ctx.now, msg.peers)

