"""The DSML member: a skip graph member that sums one auditable update per round up a mesh.

Hierarchy (derived from the skip graph each round, so joins, leaves and repairs need no operator):

* a member's *height* h is the number of leading zero bits of its membership vector, so it sits in
  the lists 0^0 ⊃ 0^1 ⊃ … ⊃ 0^h (its own level-i lists up to h);
* its *parents* are the nearest members with height > h on its left and on its right: two FIND
  walks along its level-h list (expected two hops each) at the start of every round;
* the *primary* parent is the left one (the right one when there is none), the *secondary* the
  other; members of the top list have no taller member and use their left top-list neighbour;
  the leftmost of them, having none, is the **root**.

Arms (``mode``):

* ``tree``      primary only, nothing acknowledged (the conventional single-parent tree);
* ``failover``  primary; no ACK within ``ack_timeout_s`` → a *copy* to the secondary. With
  ``custody`` the sender also keeps its aggregate until the parent *releases* it (the parent
  does so once its own aggregate was released from above; the root releases on receipt) and
  probes the parent meanwhile, so a parent that dies holding children's data is failed over too;
* ``split``     half of every weight to each parent, no acknowledgements;
* ``flat``      every member sends straight to the root.

No double counting: aggregates that follow the primary tree are disjoint by construction and
are merged on the way; a fail-over copy may duplicate data that did arrive (a slow ACK, or a
parent that died after forwarding), so copies carry the COPY flag and are **never merged before
the root**. The root merges primary-path aggregates at once, and at the close takes copies
largest first: a copy already contained is dropped (``suppressed``), a disjoint one merged, a
partial overlap (impossible by the argument above) counted as a ``conflict`` and dropped.

Audit: each member contributes an exact integer ``x`` with weight ``UNIT``; an aggregate carries
``total`` = Σ weight·x and the runs of leaf weights (``Aggregate.runs``). Splitting halves both.
The root's tally lets anyone check: Σ over leaves of weight·x == total, no leaf above ``UNIT``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from meshlearn.errors import UsageError
from meshlearn.node import Context
from meshlearn.overlay.skipgraph.node import MVEC_BITS, SkipGraphNode, SkipGraphSettings, prefix_len
from meshlearn.overlay.skipgraph.packets import (
    ACK, COPY, LEFT, PROBE, PROBE_ACK, RELEASE, RIGHT, Ack, Adopt, Aggregate, Peer,
)

__all__ = ["DsmlNode", "DsmlTiming", "RoundTally", "UNIT", "MODES", "dsml_height", "runs_of", "expand_runs"]

UNIT = 1 << 40  # weight of one whole update; split mode halves it at most 40 times
MODES = ("failover", "split", "tree", "flat")
_WAIT_ACK, _HELD, _PROBING = 0, 1, 2


def dsml_height(mvec: int) -> int:
    """Height of a member in the aggregation skip list: leading zero bits of its vector."""
    return min(prefix_len(mvec, 0), MVEC_BITS - 1)


def runs_of(weights: dict[int, int]) -> tuple:
    """``{leaf: weight}`` as sorted runs ``(start, count, weight)`` of consecutive equal weights."""
    runs: list[list[int]] = []
    for leaf in sorted(weights):
        w = weights[leaf]
        if runs and runs[-1][0] + runs[-1][1] == leaf and runs[-1][2] == w:
            runs[-1][1] += 1
        else:
            runs.append([leaf, 1, w])
    return tuple(map(tuple, runs))


def expand_runs(runs) -> dict[int, int]:
    """Inverse of ``runs_of``."""
    return {leaf: w for start, count, w in runs for leaf in range(start, start + count)}


@dataclass(frozen=True)
class DsmlTiming:
    """Round schedule and protocol timers shared by every member of one run."""

    mode: str = "failover"
    rounds: int = 5
    first_round_s: float = 1.0  # round r starts at first_round_s + (r - 1) * round_s
    round_s: float = 2.0  # also when the root closes the round
    train_s: float = 1.0  # a member's update is ready after train_s × U(0.5, 1.5)
    level_slot_s: float = 0.02  # a height-h member forwards at ready_max + (h + 1) × slot at the latest
    ack_timeout_s: float = 0.01  # no ACK / PROBE_ACK in this long: the parent is presumed dead
    probe_s: float = 0.2  # custody: probe the holding parent this often
    custody: bool = True  # failover: keep aggregates until released from above
    datagrams: bool = False  # packets as datagrams (the protocol's timeouts cover loss) instead of reliably

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"DSML mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    def start_of(self, number: int) -> float:
        return self.first_round_s + (number - 1) * self.round_s


@dataclass
class RoundTally:
    """What the root holds when it closes a round."""

    number: int
    weights: dict[int, int]  # leaf -> delivered weight (UNIT = the whole update)
    total: int  # Σ weight × value, exact
    arrivals: dict[int, float]  # leaf -> when its first share reached the root
    suppressed: int = 0  # fail-over copies already contained (duplicates removed)
    conflicts: int = 0  # partially overlapping copies (dropped; 0 by design)


@dataclass
class _Out:
    """An aggregate on its way up, kept until acknowledged (or released, with custody)."""

    agg: Aggregate
    target: Peer
    spare: list[Peer]  # parents left to fail over to
    includes: list[tuple[str, int]]  # (child, child seq) pieces inside it
    stage: int = _WAIT_ACK


@dataclass
class _Round:
    number: int
    start: float
    finds: dict[int, int] = field(default_factory=dict)  # find request -> side
    found: dict[int, Peer | None] = field(default_factory=dict)
    parents: list[Peer] | None = None  # primary first; None until both finds answered
    is_root: bool = False
    children: set[str] = field(default_factory=set)
    reported: set[str] = field(default_factory=set)
    weights: dict[int, int] = field(default_factory=dict)
    total: int = 0
    pieces: list[tuple[str, int]] = field(default_factory=list)  # merged, not yet sent
    own_ready: bool = False
    sent: bool = False
    outs: dict[int, _Out] = field(default_factory=dict)
    held: dict[tuple[str, int], int | None] = field(default_factory=dict)  # child piece -> out seq
    fan_in: set[str] = field(default_factory=set)
    copies: list[tuple[Aggregate, float]] = field(default_factory=list)  # root only
    arrivals: dict[int, float] = field(default_factory=dict)  # root only


class DsmlNode(SkipGraphNode):
    """A skip graph member that aggregates one auditable integer update per round."""

    def __init__(self, node_id: str, key: int, mvec: int, timing: DsmlTiming, *, flat_root: str | None = None):
        super().__init__(node_id, key, mvec,
                         settings=SkipGraphSettings(keepalive_s=None, reliable=not timing.datagrams,
                                                   rejoin_on_restart=False))  # the harness reloads pointers
        if not 0 <= key < 2**32:
            raise UsageError(f"DSML leaf keys must fit 32 bits, got {key}")
        self.timing, self.height, self.flat_root = timing, dsml_height(mvec), flat_root
        self.values: dict[int, int] = {}  # round -> this member's contribution
        self.ready_at: dict[int, float] = {}
        self.fan_in: dict[int, int] = {}  # round -> distinct senders of aggregates
        self.tallies: dict[int, RoundTally] = {}  # root: closed rounds
        self.counts: Counter = Counter()  # failovers, gave_up, stale, conflicts, no_parent
        self.rnd: _Round | None = None
        self._seq = 0

    # ----- rounds -------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        super().on_start(ctx)
        t = self.timing
        k = max(1, math.ceil((ctx.now - t.first_round_s) / t.round_s - 1e-9) + 1)
        ctx.set_timer("dsml.round", t.start_of(k) - ctx.now)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "dsml.round":
            self._next_round(ctx)
        elif name.startswith("dsml.o"):
            self._out_timer(ctx, int(name[6:]))
        elif name == "dsml.ready" and self.rnd is not None:
            self._own_ready(ctx)
        elif name == "dsml.deadline" and self.rnd is not None and not self.rnd.sent:
            self._send_main(ctx)
        else:
            super().on_timer(ctx, name)

    def _next_round(self, ctx: Context) -> None:
        t = self.timing
        number = round((ctx.now - t.first_round_s) / t.round_s) + 1
        if self.rnd is not None:
            self._end_round(ctx)
        if number > t.rounds:
            return
        self.rnd = r = _Round(number, ctx.now)
        self.values[number] = int(ctx.rng.integers(1, 2**20))
        ready = t.train_s * float(ctx.rng.uniform(0.5, 1.5))
        self.ready_at[number] = ctx.now + ready
        ctx.set_timer("dsml.ready", ready)
        ctx.set_timer("dsml.deadline", min(1.5 * t.train_s + (self.height + 1) * t.level_slot_s, t.round_s))
        ctx.set_timer("dsml.round", t.round_s)
        if t.mode == "flat":
            r.is_root = self.flat_root == self.node_id
            r.parents = [] if r.is_root else [Peer(0, self.flat_root)]
            return
        reqs = {self.new_req(): side for side in (LEFT, RIGHT)}
        r.finds.update(reqs)  # both registered first: an answer may come back at once
        for req, side in reqs.items():
            self.find(ctx, side, self.height + 1, 0, req=req)

    def _end_round(self, ctx: Context) -> None:
        r = self.rnd
        if r.is_root:
            self._close(r)
        if r.fan_in:
            self.fan_in[r.number] = len(r.fan_in)
        for seq in r.outs:
            ctx.cancel_timer(f"dsml.o{seq}")
        self.rnd = None

    # ----- parents ------------------------------------------------------------------------
    def on_found(self, ctx: Context, req: int, peer: Peer | None, hops: int, mvec: int | None) -> None:
        r = self.rnd
        if r is None or req not in r.finds:
            return
        r.found[r.finds.pop(req)] = peer
        if not r.finds:
            self._parents_known(ctx, r)

    def _parents_known(self, ctx: Context, r: _Round) -> None:
        parents = [p for p in (r.found.get(LEFT), r.found.get(RIGHT)) if p is not None]
        if not parents:  # top list: follow it leftwards to the root
            top_left = self.left[self.height] if self.height < len(self.left) else None
            parents = [] if top_left is None else [top_left]
            r.is_root = top_left is None
        r.parents = parents
        adopt = parents if self.timing.mode == "split" else parents[:1]
        for p in adopt:
            self._send(ctx, p, Adopt(r.number, self.height))
        self._maybe_send(ctx)

    def _on_adopt(self, ctx: Context, src: str, m: Adopt) -> None:
        if self.rnd is not None and m.round == self.rnd.number:
            self.rnd.children.add(src)

    # ----- collecting ---------------------------------------------------------------------
    def _own_ready(self, ctx: Context) -> None:
        r = self.rnd
        piece = {self.key: UNIT}
        total = UNIT * self.values[r.number]
        if r.is_root:
            self._merge_at_root(r, piece, total, ctx.now)
        elif r.sent:  # slower than my own deadline: send it on its own
            self._dispatch(ctx, runs_of(piece), total, 0, [])
        else:
            _merge(r.weights, piece)
            r.total += total
        r.own_ready = True
        self._maybe_send(ctx)

    def _on_aggregate(self, ctx: Context, src: str, m: Aggregate) -> None:
        r = self.rnd
        if r is None or m.round != r.number:
            self.counts["stale"] += 1
            return
        r.fan_in.add(src)
        if r.is_root:
            self._root_take(ctx, src, m)
            return
        if self.timing.mode == "failover":
            self._send(ctx, Peer(0, src), Ack(ACK, m.round, m.seq))
        piece = expand_runs(m.runs)
        overlap = self.timing.mode != "split" and _overlaps(piece, r.weights)
        if overlap:
            self.counts["conflicts"] += 1
        if m.flags & COPY or r.sent or overlap:
            flags = m.flags | (COPY if overlap else 0)
            r.held[(src, m.seq)] = None
            self._dispatch(ctx, m.runs, m.total, flags, [(src, m.seq)])
            return
        _merge(r.weights, piece)
        r.total += m.total
        r.pieces.append((src, m.seq))
        r.held[(src, m.seq)] = None
        r.reported.add(src)
        self._maybe_send(ctx)

    def _root_take(self, ctx: Context, src: str, m: Aggregate) -> None:
        if self.timing.mode == "failover":
            self._send(ctx, Peer(0, src), Ack(RELEASE, m.round, m.seq))
        r = self.rnd
        piece = expand_runs(m.runs)
        if not m.flags & COPY and self.timing.mode != "split" and _overlaps(piece, r.weights):
            self.counts["conflicts"] += 1
            r.copies.append((m, ctx.now))
        elif m.flags & COPY:
            r.copies.append((m, ctx.now))
        else:
            self._merge_at_root(r, piece, m.total, ctx.now)

    def _merge_at_root(self, r: _Round, piece: dict[int, int], total: int, now: float) -> None:
        _merge(r.weights, piece)
        r.total += total
        for leaf in piece:
            r.arrivals.setdefault(leaf, now)

    def _close(self, r: _Round) -> None:
        """Root: take the held copies, largest first, and record the round's tally."""
        tally = RoundTally(r.number, r.weights, r.total, r.arrivals)
        for m, when in sorted(r.copies, key=lambda c: -sum(run[1] for run in c[0].runs)):
            piece = expand_runs(m.runs)
            if all(leaf in r.weights for leaf in piece):
                tally.suppressed += 1
            elif not _overlaps(piece, r.weights):
                self._merge_at_root(r, piece, m.total, when)
                tally.total = r.total
            else:
                tally.conflicts += 1
        self.tallies[r.number] = tally

    # ----- sending ------------------------------------------------------------------------
    def _maybe_send(self, ctx: Context) -> None:
        r = self.rnd
        if r.sent or r.is_root or not r.own_ready or r.parents is None:
            return
        if r.children <= r.reported:
            self._send_main(ctx)

    def _send_main(self, ctx: Context) -> None:
        r = self.rnd
        if r.is_root:
            return
        if r.parents is None or not r.parents:
            self.counts["no_parent"] += 1
            return
        r.sent = True
        ctx.cancel_timer("dsml.deadline")
        if r.weights:
            self._dispatch(ctx, runs_of(r.weights), r.total, 0, r.pieces)
        r.pieces = []

    def _dispatch(self, ctx: Context, runs: tuple, total: int, flags: int, includes: list) -> None:
        """Send one piece up according to the arm."""
        parents, mode = self.rnd.parents, self.timing.mode
        if not parents:
            self.counts["no_parent"] += 1
            return
        if mode == "split" and len(parents) == 2 and not flags & COPY:
            half_runs, half_total = _halve(runs, total)
            for p in parents:
                self._emit(ctx, half_runs, half_total, flags, p, [], includes, ack=False)
        elif mode == "failover":
            self._emit(ctx, runs, total, flags, parents[0], list(parents[1:]), includes, ack=True)
        else:
            self._emit(ctx, runs, total, flags, parents[0], [], includes, ack=False)

    def _emit(self, ctx, runs, total, flags, target: Peer, spare: list, includes: list, *, ack: bool) -> None:
        r = self.rnd
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        agg = Aggregate(r.number, self._seq, flags, total, runs)
        self._send(ctx, target, agg)
        for inc in includes:
            r.held[inc] = self._seq
        if ack:
            r.outs[self._seq] = _Out(agg, target, spare, list(includes))
            ctx.set_timer(f"dsml.o{self._seq}", self.timing.ack_timeout_s)

    # ----- acknowledgements, custody and fail-over ----------------------------------------
    def _on_ack(self, ctx: Context, src: str, m: Ack) -> None:
        r = self.rnd
        if r is None or m.round != r.number:
            return
        if m.op == PROBE:
            if (src, m.seq) in r.held:
                self._send(ctx, Peer(0, src), Ack(PROBE_ACK, m.round, m.seq))
            return
        out = r.outs.get(m.seq)
        if out is None or out.target.node != src:
            return
        if m.op == RELEASE or (m.op == ACK and not self.timing.custody):
            self._released(ctx, m.seq)
        elif (m.op == ACK and out.stage == _WAIT_ACK) or (m.op == PROBE_ACK and out.stage == _PROBING):
            out.stage = _HELD
            ctx.set_timer(f"dsml.o{m.seq}", self.timing.probe_s)

    def _out_timer(self, ctx: Context, seq: int) -> None:
        r = self.rnd
        out = None if r is None else r.outs.get(seq)
        if out is None:
            return
        if out.stage == _HELD:
            self._send(ctx, out.target, Ack(PROBE, r.number, seq))
            out.stage = _PROBING
            ctx.set_timer(f"dsml.o{seq}", self.timing.ack_timeout_s)
        elif out.spare:  # no answer: the parent is presumed dead; a copy goes to the next one
            self.counts["failovers"] += 1
            out.target, out.spare, out.stage = out.spare[0], out.spare[1:], _WAIT_ACK
            a = out.agg
            out.agg = Aggregate(a.round, a.seq, a.flags | COPY, a.total, a.runs)
            self._send(ctx, out.target, out.agg)
            ctx.set_timer(f"dsml.o{seq}", self.timing.ack_timeout_s)
        else:  # out of parents: give the children's pieces back (their probes now go unanswered)
            self.counts["gave_up"] += 1
            del r.outs[seq]
            for inc in out.includes:
                r.held.pop(inc, None)

    def _released(self, ctx: Context, seq: int) -> None:
        r = self.rnd
        out = r.outs.pop(seq)
        ctx.cancel_timer(f"dsml.o{seq}")
        for child, child_seq in out.includes:
            r.held.pop((child, child_seq), None)
            if self.timing.custody:
                self._send(ctx, Peer(0, child), Ack(RELEASE, r.number, child_seq))

    _HANDLERS = {**SkipGraphNode._HANDLERS}


DsmlNode._HANDLERS.update({Aggregate: DsmlNode._on_aggregate, Ack: DsmlNode._on_ack, Adopt: DsmlNode._on_adopt})


def _overlaps(piece: dict[int, int], weights: dict[int, int]) -> bool:
    """Whether any leaf of ``piece`` is already in ``weights`` (cost: the size of the piece)."""
    return any(leaf in weights for leaf in piece)


def _merge(into: dict[int, int], piece: dict[int, int]) -> None:
    for leaf, w in piece.items():
        into[leaf] = into.get(leaf, 0) + w


def _halve(runs: tuple, total: int) -> tuple[tuple, int]:
    if total % 2 or any(w % 2 for _, _, w in runs):
        raise UsageError("a split aggregate's weights are no longer even: the hierarchy is deeper than 40 "
                         "levels; use failover mode or fewer members")
    return tuple((s, c, w // 2) for s, c, w in runs), total // 2
