"""Skip Graph upkeep: keep-alive, failure repair and level stabilization (a mixin of SkipGraphNode).

Every ``keepalive_s`` a member

* declares failed the neighbours that did not answer the previous tick's ping and **repairs**
  around each: a REPAIR walk from its side over the dead member relinks every level that
  pointed at it (walks fall back to the leaf list to step over the corpse);
* **stabilizes**: each ping claims "I am your neighbour at levels lo..hi"; the receiver adopts
  the claimant where it is nearer, and answers with its own neighbours there, so a stale
  claimant learns of a nearer member (Chord's stabilize/notify, per level); pongs carry the
  responder's membership vector, which bounds the claimant's pointers at every shared level;
* **re-finds** one level per tick on both sides (Chord's fix_fingers): concurrent joins can leave
  two interleaved lists at a level, which neighbour pings alone never notice;
* refreshes its leaf lists from its level-0 neighbours' pongs;
* also pings whatever ``watched()`` returns (a DSML member's parents), so their death is noticed.
"""

from __future__ import annotations

from itertools import chain

from meshlearn.node import Context
from meshlearn.overlay.skipgraph.packets import FIND, LEFT, REPAIR, RIGHT, Peer, Ping, Pong
from meshlearn.overlay.skipgraph.view import MVEC_BITS, between, prefix_len

__all__ = ["SkipGraphUpkeep"]

_NONE_WANTED = 2  # Ping.want / Ping.side: nothing


class SkipGraphUpkeep:
    """Keep-alive, repair and stabilization; mixed into ``SkipGraphNode`` (uses its state)."""

    def _keepalive(self, ctx: Context) -> None:
        for peer, *_ in list(self._pings.values()):
            self.declare_failed(ctx, peer)
        self._pings.clear()
        self._retry_repairs(ctx)
        ttl = self.settings.suspect_ttl_s
        self.suspected = {k: t for k, t in self.suspected.items() if ctx.now - t < ttl}
        self._close_down()
        self._fix_next_level(ctx)
        watched = chain(self.left, self.right, self.lefts, self.rights, self.watched())
        targets = {p.key: p for p in watched if p is not None}
        for key, p in targets.items():
            if key not in self.suspected:
                self._ping(ctx, p)
        ctx.set_timer("sg.keepalive", self.settings.keepalive_s)

    def watched(self) -> list[Peer]:
        """Members pinged besides the neighbours (a subclass's parents, say); none by default."""
        return []

    def _fix_next_level(self, ctx: Context) -> None:
        """Re-find my neighbours at one level per tick (round robin, like Chord's fix_fingers):
        concurrent joins can leave two interleaved lists at a level that pings alone never see."""
        if not self.joined or self.levels < 2:
            return
        self._fix_level = self._fix_level % (self.levels - 1) + 1
        self._fixes.clear()  # answers come within milliseconds; older ones were lost with a crash
        for side in (LEFT, RIGHT):
            req = self._new_req()
            self._fixes[req] = (side, self._fix_level)
            self._start_walk(ctx, FIND, side, self._fix_level, self._fix_level, self.mvec, None, req)

    def _fixed(self, req: int, peer: Peer | None) -> bool:
        """Take a fix-level walk's result (True when ``req`` was one)."""
        entry = self._fixes.pop(req, None)
        if entry is None:
            return False
        side, lvl = entry
        nbrs = self.right if side == RIGHT else self.left
        if peer is not None and peer.key != self.key and lvl < len(nbrs):
            cur = nbrs[lvl]
            if cur is None or cur.key in self.suspected or abs(peer.key - self.key) < abs(cur.key - self.key):
                nbrs[lvl] = peer
                self._trim()
        return True

    def _ping(self, ctx: Context, p: Peer) -> None:
        """Ping ``p``, claiming the levels at which it is my neighbour (I am on its other side)."""
        r0, l0 = self.right[0], self.left[0]
        want = RIGHT if r0 is not None and p.key == r0.key else LEFT if l0 is not None and p.key == l0.key \
            else _NONE_WANTED
        side, lo, hi = _NONE_WANTED, 0, 0
        for my_side, nbrs in ((LEFT, self.right), (RIGHT, self.left)):
            hit = [lvl for lvl, q in enumerate(nbrs) if q is not None and q.key == p.key]
            if hit:
                side, lo, hi = my_side, hit[0], hit[-1]
        nonce = self._new_req()
        self._pings[nonce] = (p, side, lo, hi)
        self._send(ctx, p, Ping(nonce, want, side, lo, hi, self.key), reliable=False)

    def _on_ping(self, ctx: Context, src: str, m: Ping) -> None:
        peers = self.rights if m.want == RIGHT else self.lefts if m.want == LEFT else ()
        nbrs = () if m.side == _NONE_WANTED else self._take_claim(Peer(m.key, src), m)
        self._reply(ctx, Peer(0, src), Pong(m.nonce, self.mvec, tuple(peers), nbrs), reliable=False)

    def _take_claim(self, x: Peer, m: Ping) -> tuple:
        """``x`` says it is my ``m.side`` neighbour at levels lo..hi: adopt it where it is nearer."""
        if x.key == self.key or (m.side == LEFT) != (x.key < self.key):
            return ()
        nbrs = self.left if m.side == LEFT else self.right
        self._ensure(m.hi)
        for lvl in range(m.lo, m.hi + 1):
            cur = nbrs[lvl]
            if cur is None or cur.key in self.suspected or abs(x.key - self.key) < abs(cur.key - self.key):
                nbrs[lvl] = x
                if lvl == 0:
                    self._leaf_front(m.side, x)
        out = tuple(nbrs[m.lo:m.hi + 1])
        self._trim()
        return out

    def _on_pong(self, ctx: Context, src: str, m: Pong) -> None:
        entry = self._pings.pop(m.nonce, None)
        if entry is None:
            return
        peer, side, lo, _ = entry
        self.peer_mvecs[peer.key] = m.mvec
        size = self.settings.leaf_size
        fresh = [p for p in m.peers if p.key != self.key and p.key not in self.suspected]
        if self.right[0] is not None and peer.key == self.right[0].key:
            self.rights = [peer, *(p for p in fresh if p.key > peer.key)][:size]
        elif self.left[0] is not None and peer.key == self.left[0].key:
            self.lefts = [peer, *(p for p in fresh if p.key < peer.key)][:size]
        toward = self.right if side == LEFT else self.left  # my pointers towards peer
        for lvl, q in enumerate(m.nbrs, start=lo):
            if q is not None and q.key != self.key and lvl < len(toward) and between(self.key, q.key, peer.key):
                toward[lvl] = q  # someone nearer sits between us at that level
        self._close_up(peer, m.mvec)
        self._trim()

    def _close_up(self, peer: Peer, mvec: int) -> None:
        """``peer`` shares prefix_len bits with me: it bounds my neighbours at all those levels."""
        toward = self.right if peer.key > self.key else self.left
        if all(q is None or q.key != peer.key for q in toward):
            return  # not a neighbour (a leaf-list entry): nothing to infer
        shared = min(prefix_len(self.mvec, mvec), MVEC_BITS - 1)
        self._ensure(shared)
        for lvl in range(shared + 1):
            cur = toward[lvl]
            if cur is None or abs(cur.key - self.key) > abs(peer.key - self.key):
                toward[lvl] = peer

    def _close_down(self) -> None:
        """A level-l neighbour also bounds every lower level: lower neighbours are at least as near."""
        for nbrs in (self.left, self.right):
            for lvl in range(len(nbrs) - 1, 0, -1):
                up, low = nbrs[lvl], nbrs[lvl - 1]
                if up is not None and (low is None or abs(low.key - self.key) > abs(up.key - self.key)):
                    nbrs[lvl - 1] = up

    def _leaf_front(self, side: int, p: Peer) -> None:
        leaves = self.rights if side == RIGHT else self.lefts
        leaves[:] = [p, *(q for q in leaves if q.key != p.key and not between(self.key, q.key, p.key))]
        del leaves[self.settings.leaf_size:]

    def declare_failed(self, ctx: Context, peer: Peer) -> None:
        """``peer`` is dead (keep-alive timeout, or a failure detector's verdict): relink around it."""
        if peer.key in self.suspected:
            return
        self.suspected[peer.key] = ctx.now
        self.lefts = [p for p in self.lefts if p.key != peer.key]
        self.rights = [p for p in self.rights if p.key != peer.key]
        for side, nbrs in ((LEFT, self.left), (RIGHT, self.right)):
            hit = [lvl for lvl, p in enumerate(nbrs) if p is not None and p.key == peer.key]
            if hit:
                self._start_repair(ctx, side, hit[0], hit[-1], peer.key)

    def _start_repair(self, ctx: Context, side: int, lo: int, top: int, dead: int) -> None:
        req = self._new_req()
        self._repairs[req] = [side, lo, top, dead, ctx.now]
        self._start_walk(ctx, REPAIR, side, lo, top, self.mvec, dead, req)

    def _retry_repairs(self, ctx: Context) -> None:
        for req, (side, lo, top, dead, started) in list(self._repairs.items()):
            if ctx.now - started >= self.settings.repair_retry_s:
                del self._repairs[req]
                self._start_repair(ctx, side, lo, top, dead)

    def _clear_side(self, side: int, level: int, dead: int) -> None:
        """A repair walk found nobody at ``level`` or above on ``side``: drop those pointers."""
        nbrs = self.right if side == RIGHT else self.left
        for lvl in range(level, len(nbrs)):
            if nbrs[lvl] is not None and nbrs[lvl].key == dead:
                nbrs[lvl] = None
        self._trim()
