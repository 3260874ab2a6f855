"""Skip Graph membership (Aspnes & Shah, SODA 2003), as a sans-I/O node.

Every member has a key (the sort order) and a random 64-bit membership vector. The level-i list
of a member holds the members sharing the first i bits of its vector, sorted by key; level 0 is
every member. A member keeps its left / right neighbour in each of its lists, up to the first
level where it is alone, plus a *leaf list* of the ``leaf_size`` nearest members on each side at
level 0 (the redundancy that lets repair step over a crashed neighbour).

One primitive does most of the work, the **walk**: "find the nearest member on side S whose
vector shares ``level`` bits with M". A hop from member y jumps along y's list at level
``min(prefix(y, M), level - 1)``: the members it skips do not share y's prefix of that length,
which is M's, so no match is ever skipped (the jump falls back to lower levels, and finally to the
leaf list, when a pointer is dead). Walks implement

* **insert** (join via an introducer): route to the key's place at level 0, link there, then the
  member found at level i links the joiner and continues the walk for level i + 1; when a side
  runs out, the other side finishes the upper levels;
* **repair**: a member whose keep-alive to neighbour f times out walks from its own side over f
  (f is named as ``dead``) and relinks every level that pointed at f;
* **find**: report the member found without linking (DSML uses it to find parents).

**Search** is greedy routing: forward to the farthest neighbour that does not pass the target;
O(log n) hops. **Leave** tells both neighbours at every level about each other.

``bootstrap_skipgraph`` (``view.py``) computes the converged structure directly (large
simulations start from it); tests check that protocol joins produce exactly that structure.
Keep-alive, repair and level stabilization live in ``upkeep.py`` (a mixin of the node);
packets in ``packets.py``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from meshlearn.errors import UsageError
from meshlearn.node import Context, Node
from meshlearn.overlay.skipgraph.packets import (
    FIND, INSERT, JOIN, LEFT, REPAIR, RIGHT, SEARCH, Found, Linked, Peer, Ping, Pong, Route, SetNeighbor, Walk,
    WalkEnd,
)
from meshlearn.overlay.skipgraph.upkeep import SkipGraphUpkeep
from meshlearn.overlay.skipgraph.view import (
    MVEC_BITS, SkipGraphView, bootstrap_skipgraph, prefix_len, random_mvecs,
)

__all__ = ["MVEC_BITS", "Peer", "SkipGraphNode", "SkipGraphSettings", "SkipGraphView", "bootstrap_skipgraph",
           "prefix_len", "random_mvecs"]

_NONE_WANTED = 2  # Ping.want: no leaf list


@dataclass(frozen=True)
class SkipGraphSettings:
    """Protocol timing; the defaults suit a LAN."""

    leaf_size: int = 4  # level-0 neighbours kept per side; repair steps over up to leaf_size - 1 adjacent crashes
    keepalive_s: float | None = 1.0  # ping every neighbour this often (a ping unanswered by the next one = failed)
    join_retry_s: float = 2.0  # resend the join when level 0 is not linked after this long
    repair_retry_s: float = 3.0  # restart a repair walk that has not finished after this long
    suspect_ttl_s: float = 30.0  # forget a failed key after this long (it may come back)
    reliable: bool = True  # control packets over the reliable path; False: datagrams (pings always are)
    rejoin_on_restart: bool = True  # after a crash, join afresh (via the introducer or a member known before)

    def __post_init__(self) -> None:
        if self.leaf_size < 1:
            raise UsageError(f"leaf_size must be ≥ 1, got {self.leaf_size}")
        if self.keepalive_s is not None and self.keepalive_s <= 0:
            raise UsageError(f"keepalive_s must be > 0 or None, got {self.keepalive_s}")


# ----- the protocol node ----------------------------------------------------------------------
class SkipGraphNode(SkipGraphUpkeep, Node):
    """A Skip Graph member: search, join through ``introducer``, leave, repair after crashes.

    Hooks for subclasses: ``on_found(ctx, req, peer, hops, mvec)`` (search / find results; None
    when a find walk ran off the list) and ``on_joined(ctx)``.
    """

    def __init__(self, node_id: str, key: int, mvec: int, *, introducer: str | None = None,
                 join_delay_s: float = 0.0, settings: SkipGraphSettings | None = None):
        super().__init__(node_id)
        if not 0 <= key < 2**64 - 1:
            raise UsageError(f"skip graph key must be in [0, 2**64 - 1), got {key}")
        self.me, self.key, self.mvec = Peer(key, node_id), key, mvec
        self.settings = settings or SkipGraphSettings()
        self.introducer, self.join_delay_s = introducer, join_delay_s
        self._join_via = introducer  # whom a (re)join goes through
        self.sent: Counter = Counter()  # packets sent, by kind (maintenance accounting)
        self.results: dict[int, tuple[Peer | None, int]] = {}  # request id -> (peer, hops)
        self._req = 0
        self._started = False
        self._reset()

    def _reset(self) -> None:
        self.left: list[Peer | None] = [None]
        self.right: list[Peer | None] = [None]
        self.lefts: list[Peer] = []
        self.rights: list[Peer] = []
        self.joined = self.introducer is None
        self.active = True
        self.suspected: dict[int, float] = {}
        self.peer_mvecs: dict[int, int] = {}  # membership vectors learnt from pongs
        self._pings: dict[int, tuple] = {}  # nonce -> (peer, claimed side, lo, hi)
        self._repairs: dict[int, list] = {}  # req -> [side, next level, top, dead key, started]
        self._insert_ends = 0
        self._fix_level = 0
        self._fixes: dict[int, tuple[int, int]] = {}  # fix-level walks: req -> (side, level)
        self._linked_levels: set[int] = set()  # insert: levels linked so far
        self._held_end: WalkEnd | None = None  # insert: a walk end that overtook a Linked

    # ----- set-up -------------------------------------------------------------------------
    def load(self, view: SkipGraphView) -> None:
        """Take this member's converged pointers from ``view`` (bootstrap of large simulations)."""
        peers = view.peers
        self.left = [None if k is None else peers[k] for k in view.left[self.key]]
        self.right = [None if k is None else peers[k] for k in view.right[self.key]]
        self.lefts = [peers[k] for k in view.lefts[self.key]]
        self.rights = [peers[k] for k in view.rights[self.key]]
        self.joined, self.active = True, True
        self.suspected.clear()

    def snapshot(self) -> tuple[tuple, tuple, tuple, tuple]:
        """(left keys, right keys, left leaf keys, right leaf keys): comparable with a view."""
        keys = lambda ps: tuple(None if p is None else p.key for p in ps)  # noqa: E731
        return keys(self.left), keys(self.right), keys(self.lefts), keys(self.rights)

    @property
    def levels(self) -> int:
        return len(self.left)

    # ----- events -------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        if self._started and self.settings.rejoin_on_restart:  # back from a crash: pointers are stale
            known = [p for p in (*self.left, *self.right, *self.lefts, *self.rights) if p is not None]
            via = self.introducer or (known[0].node if known else None)
            self._reset()
            self.joined, self._join_via = via is None, via
        self._started = True
        if not self.joined and self._join_via is not None:
            ctx.set_timer("sg.join", self.join_delay_s)
        if self.settings.keepalive_s is not None:
            ctx.set_timer("sg.keepalive", self.settings.keepalive_s * float(ctx.rng.uniform(0.5, 1.5)))

    def on_timer(self, ctx: Context, name: str) -> None:
        if not self.active:
            return
        if name == "sg.keepalive":
            self._keepalive(ctx)
        elif name == "sg.join" and not self.joined:
            self._send_join(ctx)

    def on_message(self, ctx: Context, src: str, msg) -> None:
        if not self.active:
            return
        handler = self._HANDLERS.get(type(msg))
        if handler is None:
            ctx.log(f"ignored {getattr(msg, 'kind', type(msg).__name__)!r} from {src}", level="warning")
            return
        handler(self, ctx, src, msg)

    def on_found(self, ctx: Context, req: int, peer: Peer | None, hops: int, mvec: int | None) -> None:
        """A search or find request finished (``peer`` None: a find walk found nobody)."""

    def on_joined(self, ctx: Context) -> None:
        """This member's insert finished: it is linked at every level."""

    # ----- search -------------------------------------------------------------------------
    def search(self, ctx: Context, target: int) -> int:
        """Route towards key ``target``; the result (the member holding it, else the last member
        reached, a neighbour of its place) arrives in ``results`` / ``on_found``."""
        req = self._new_req()
        self._on_route(ctx, self.node_id, Route(SEARCH, req, 0, target, 0, self.me))
        return req

    def _route_next(self, target: int) -> Peer | None:
        if target > self.key:
            for p in reversed(self.right):
                if p is not None and p.key <= target and p.key not in self.suspected:
                    return p
        elif target < self.key:
            for p in reversed(self.left):
                if p is not None and p.key >= target and p.key not in self.suspected:
                    return p
        return None

    def _on_route(self, ctx: Context, src: str, m: Route) -> None:
        nxt = self._route_next(m.target)
        if nxt is not None:
            self._send(ctx, nxt, Route(m.op, m.req, min(m.hops + 1, 255), m.target, m.mvec, m.origin))
        elif m.op == SEARCH:
            self._reply(ctx, m.origin, Found(m.req, m.hops, self.me, self.mvec))
        elif m.origin.key == self.key:
            ctx.log(f"join of key {m.origin.key} refused: the key is taken by {self.node_id}", level="warning")
        else:  # join: I am next to the joiner's place at level 0; link it there
            side = RIGHT if self.key > m.origin.key else LEFT
            self._on_walk(ctx, src, Walk(INSERT, side, 0, 255, m.hops, 0, m.mvec, None, m.origin))

    def _on_found(self, ctx: Context, src: str, m: Found) -> None:
        self.peer_mvecs[m.peer.key] = m.mvec
        if self._fixed(m.req, m.peer):
            return
        self.results[m.req] = (m.peer, m.hops)
        self.on_found(ctx, m.req, m.peer, m.hops, m.mvec)

    # ----- walks --------------------------------------------------------------------------
    def find(self, ctx: Context, side: int, level: int, match: int, *, req: int | None = None) -> int:
        """Find the nearest member on ``side`` sharing ``level`` bits with ``match`` (→ on_found,
        possibly before this returns: pass ``req`` from ``new_req()`` to recognise the answer)."""
        req = self._new_req() if req is None else req
        self._start_walk(ctx, FIND, side, level, level, match, None, req)
        return req

    def _start_walk(self, ctx, mode: int, side: int, level: int, top: int, match: int, dead, req: int) -> None:
        first = self._walk_hop(side, max(0, min(prefix_len(self.mvec, match), level - 1)), dead)
        if first is None:
            self._on_walk_end(ctx, self.node_id, WalkEnd(mode, side, level, 0, req))
        else:
            self._send(ctx, first, Walk(mode, side, level, top, 1, req, match, dead, self.me))

    def _walk_hop(self, side: int, level: int, dead: int | None) -> Peer | None:
        """Next hop of a walk towards ``side`` at ``level`` or below, avoiding failed members."""
        nbrs = self.right if side == RIGHT else self.left
        for lvl in range(min(level, len(nbrs) - 1), -1, -1):
            p = nbrs[lvl]
            if p is None:
                return None  # nobody on that side shares this prefix
            if p.key != dead and p.key not in self.suspected:
                return p
        for p in self.rights if side == RIGHT else self.lefts:
            if p.key != dead and p.key not in self.suspected:
                return p
        return None

    def _on_walk(self, ctx: Context, src: str, w: Walk) -> None:
        if w.origin.key == self.key:
            return
        cp = prefix_len(self.mvec, w.match)
        if cp < w.level:
            nxt = self._walk_hop(w.side, cp, w.dead)
            if nxt is None:
                self._reply(ctx, w.origin, WalkEnd(w.mode, w.side, w.level, w.hops, w.req))
            else:
                self._send(ctx, nxt, w.hop())
        elif w.mode == FIND:
            self._reply(ctx, w.origin, Found(w.req, w.hops, self.me, self.mvec))
        else:
            self._accept(ctx, w)

    def _accept(self, ctx: Context, w: Walk) -> None:
        """I match ``w`` at its level: link the origin next to me, level after level."""
        u, lvl = w.origin, w.level
        toward = self.left if w.side == RIGHT else self.right  # my pointers towards u
        while True:
            self._ensure(lvl)
            old = toward[lvl]
            usable = old is not None and old.key != u.key and old.key != w.dead and old.key not in self.suspected
            if usable and (u.key < old.key < self.key or self.key < old.key < u.key):
                self._send(ctx, old, w.hop(lvl))  # a nearer match sits between us: it links u
                return
            toward[lvl] = u
            self.suspected.pop(u.key, None)
            stale = old if usable else None
            if stale is not None:
                self._send(ctx, stale, SetNeighbor(lvl, w.side, u, self.key))
            self._reply(ctx, u, self._linked(lvl, w.side, stale, u))
            if w.mode == REPAIR and lvl >= w.top:
                self._trim()
                return
            lvl += 1
            if prefix_len(self.mvec, w.match) < lvl:
                break
        self._trim()
        nxt = self._walk_hop(w.side, prefix_len(self.mvec, w.match), w.dead)
        if nxt is None:
            self._reply(ctx, u, WalkEnd(w.mode, w.side, lvl, w.hops, w.req))
        else:
            self._send(ctx, nxt, w.hop(lvl))

    def _linked(self, lvl: int, side: int, stale: Peer | None, u: Peer) -> Linked:
        """The Linked reply for u, to whose ``side`` I am; at level 0 it carries u's leaf lists."""
        if lvl != 0:
            return Linked(lvl, stale, self.me) if side == RIGHT else Linked(lvl, self.me, stale)
        size = self.settings.leaf_size
        if side == RIGHT:  # u is my nearest left now
            lefts = tuple(p for p in self.lefts if p.key < u.key)[:size]
            rights = (self.me, *self.rights[: size - 1])
            self.lefts = [u, *(p for p in self.lefts if p.key < u.key)][:size]
            return Linked(0, stale, self.me, lefts, rights)
        lefts = (self.me, *self.lefts[: size - 1])
        rights = tuple(p for p in self.rights if p.key > u.key)[:size]
        self.rights = [u, *(p for p in self.rights if p.key > u.key)][:size]
        return Linked(0, self.me, stale, lefts, rights)

    def _on_linked(self, ctx: Context, src: str, m: Linked) -> None:
        lvl = m.level
        self._ensure(lvl)
        if not self.joined:  # insert: both sides at this level
            self.left[lvl], self.right[lvl] = m.left, m.right
            self._linked_levels.add(lvl)
            if lvl == 0:
                self.lefts, self.rights = list(m.lefts), list(m.rights)
                ctx.cancel_timer("sg.join")
            if self._held_end is not None:
                held, self._held_end = self._held_end, None
                self._on_walk_end(ctx, src, held)
            return
        side = RIGHT if m.right is not None and m.right.node == src else LEFT
        found = m.right if side == RIGHT else m.left
        (self.right if side == RIGHT else self.left)[lvl] = found
        if lvl == 0:
            leaves = m.rights if side == RIGHT else m.lefts
            if side == RIGHT:
                self.rights = list(leaves)
            else:
                self.lefts = list(leaves)
        self._trim()
        for rep in self._repairs.values():
            if rep[0] == side and rep[1] <= lvl:
                rep[1] = lvl + 1
        for req in [r for r, rep in self._repairs.items() if rep[1] > rep[2]]:
            del self._repairs[req]

    def _on_walk_end(self, ctx: Context, src: str, m: WalkEnd) -> None:
        if m.mode == FIND:
            if self._fixed(m.req, None):
                return
            self.results[m.req] = (None, m.hops)
            self.on_found(ctx, m.req, None, m.hops, None)
        elif m.mode == REPAIR:
            rep = self._repairs.pop(m.req, None)
            if rep is not None:
                self._clear_side(m.side, m.level, rep[3])
        elif not self.joined:
            if all(lvl in self._linked_levels for lvl in range(m.level)):
                self._insert_end(ctx, m.side, m.level)
            else:
                self._held_end = m  # datagrams may overtake each other: wait for the lower levels

    # ----- insert and leave ---------------------------------------------------------------
    def _send_join(self, ctx: Context) -> None:
        self._send(ctx, Peer(0, self._join_via), Route(JOIN, 0, 0, self.key, self.mvec, self.me))
        ctx.set_timer("sg.join", self.settings.join_retry_s)

    def _insert_end(self, ctx: Context, side: int, level: int) -> None:
        """One side has no member sharing ``level`` bits: finish the upper levels on the other."""
        self._ensure(level)
        nbrs = self.right if side == RIGHT else self.left
        for lvl in range(level, len(nbrs)):
            nbrs[lvl] = None
        self._insert_ends += 1
        other = side ^ 1
        if self._insert_ends == 1 and level > 0 and (self.right if other == RIGHT else self.left)[level - 1] is not None:
            self._start_walk(ctx, INSERT, other, level, 255, self.mvec, None, 0)
            return
        self.joined = True
        self._trim()
        ctx.cancel_timer("sg.join")
        self.on_joined(ctx)

    def leave(self, ctx: Context) -> None:
        """Leave gracefully: neighbours at every level are told about each other."""
        for lvl in range(self.levels):
            lp, rp = self.left[lvl], self.right[lvl]
            if lp is not None:
                self._send(ctx, lp, SetNeighbor(lvl, RIGHT, rp, self.key))
            if rp is not None:
                self._send(ctx, rp, SetNeighbor(lvl, LEFT, lp, self.key))
        self.active = False
        for name in ("sg.keepalive", "sg.join"):
            ctx.cancel_timer(name)

    def _on_set_neighbor(self, ctx: Context, src: str, m: SetNeighbor) -> None:
        nbrs = self.right if m.side == RIGHT else self.left
        cur = nbrs[m.level] if m.level < len(nbrs) else None
        if m.expect is not None and (cur is None or cur.key != m.expect):
            return  # stale instruction: the pointer has moved on
        self._ensure(m.level)
        nbrs[m.level] = m.peer
        if m.peer is not None:
            self.suspected.pop(m.peer.key, None)
        if m.level == 0:
            leaves = [p for p in (self.rights if m.side == RIGHT else self.lefts) if p.key != m.expect]
            if m.peer is not None and all(p.key != m.peer.key for p in leaves):
                leaves.insert(0, m.peer)
            leaves = leaves[: self.settings.leaf_size]
            if m.side == RIGHT:
                self.rights = leaves
            else:
                self.lefts = leaves
        self._trim()

    # ----- helpers ------------------------------------------------------------------------
    def _ensure(self, level: int) -> None:
        while len(self.left) <= level:
            self.left.append(None)
            self.right.append(None)

    def _trim(self) -> None:
        """Keep levels up to (and including) the first where this member is alone."""
        if not self.joined:
            return  # an insert in progress builds its levels bottom-up
        for lvl in range(len(self.left)):
            if self.left[lvl] is None and self.right[lvl] is None:
                del self.left[lvl + 1:], self.right[lvl + 1:]
                return
        if len(self.left) <= MVEC_BITS:
            self.left.append(None)
            self.right.append(None)

    def new_req(self) -> int:
        """A fresh request id (searches, finds, pings)."""
        return self._new_req()

    def _new_req(self) -> int:
        self._req = (self._req + 1) & 0xFFFFFFFF
        return self._req

    def _send(self, ctx: Context, peer: Peer, pkt, *, reliable: bool | None = None) -> None:
        self.sent[pkt.kind] += 1
        ctx.send(peer.node, pkt, reliable=self.settings.reliable if reliable is None else reliable)

    def _reply(self, ctx: Context, peer: Peer, pkt, *, reliable: bool | None = None) -> None:
        if peer.node == self.node_id:
            self.on_message(ctx, self.node_id, pkt)
        else:
            self._send(ctx, peer, pkt, reliable=reliable)

    _HANDLERS: dict = {}


SkipGraphNode._HANDLERS = {
    Route: SkipGraphNode._on_route, Found: SkipGraphNode._on_found, Walk: SkipGraphNode._on_walk,
    Linked: SkipGraphNode._on_linked, WalkEnd: SkipGraphNode._on_walk_end,
    SetNeighbor: SkipGraphNode._on_set_neighbor, Ping: SkipGraphNode._on_ping, Pong: SkipGraphNode._on_pong,
}
