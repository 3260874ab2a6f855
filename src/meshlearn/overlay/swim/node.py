"""SWIM membership and failure detection with Lifeguard, as one sans-I/O node.

Each protocol period a member probes the next member of its shuffled round-robin list:

1. ``Ping`` → ``Ack`` within ``probe_timeout``; otherwise ``PingReq`` to k live members, which
   ping the target for it and relay the ``Ack`` (or send a ``Nack``: they are alive but got none);
2. no ack by the end of the period: the target becomes SUSPECT (with its incarnation);
3. a suspicion times out into DEAD. Lifeguard's timeout starts at ``max`` and falls towards
   ``min`` as independent confirmations arrive; a member that hears it is suspected refutes
   with a higher incarnation; the probe of a suspect carries the suspicion (buddy system);
4. missed acks and nacks raise the local health multiplier, which stretches the member's own
   probe interval and timeout, so a slow member accuses fewer healthy ones.

Updates spread by piggybacking on every packet, and by ``Gossip`` to ``gossip_nodes`` random
members each gossip interval while any are queued; each is sent retransmit_mult × ⌈log10(N+1)⌉
times. Full-table ``Sync`` (push/pull, reliable) joins new members; a periodic re-join contacts a
seed and a dead member, so partitions heal. Packets stay within ``max_packet_bytes`` with
``reserved_user_bytes`` kept for application broadcasts (``broadcast``).

Time and randomness come from ``ctx``; observers get ``on_event(t, me, event, member)`` with
events ``join``, ``suspect``, ``dead``, ``left``, ``alive`` (back from suspect/dead), ``refute``.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Iterable

from meshlearn.node import Context, Node
from meshlearn.overlay.swim.config import SwimConfig, retransmit_limit, suspicion_timeout
from meshlearn.overlay.swim.packets import (ALIVE, DEAD, SUSPECT, USER, Ack, Gossip, Nack, Ping, PingReq,
                                            Sync)
from meshlearn.overlay.swim.state import (LIVE, UNKNOWN, BroadcastQueue, MemberTable, Probe, ProbeOrder, Roster,
                                          Suspicion)
from meshlearn.wire.frame import HEADER_SIZE, MAC_SIZE, STAMP_BYTES

__all__ = ["SwimNode", "ALL"]

ALL = "all"  # members=ALL: start knowing every id of the (shared) roster

EventHook = Callable[[float, str, str, str], None]


class SwimNode(Node):
    """One SWIM + Lifeguard member.

    ``seeds``: members contacted to join and re-contacted every ``rejoin_interval_s``.
    ``members``: ids known alive at start (a warm start, as if just synced; for large
    simulations), or ``ALL``: every id in ``roster``. ``roster`` may be shared by simulated members (see ``state.py``).
    ``phase``: first probe after this many seconds (None: uniform in one period).
    """

    def __init__(self, node_id: str, config: SwimConfig | None = None, *, seeds: Iterable[str] = (),
                 members: Iterable[str] = (), roster: Roster | None = None, phase: float | None = None,
                 on_event: EventHook | None = None, on_user: Callable[[str, bytes], None] | None = None):
        super().__init__(node_id)
        self.config = config or SwimConfig()
        self.seeds = tuple(s for s in seeds if s != node_id)
        self.roster = roster if roster is not None else Roster()
        self.me = self.roster.slot(node_id)
        self.initial = members if members is ALL else tuple(m for m in members if m != node_id)
        self.phase, self.on_event, self.on_user = phase, on_event, on_user
        self.stats: Counter = Counter()
        self.lives = 0
        self._overhead = HEADER_SIZE + len(node_id.encode()) + MAC_SIZE + STAMP_BYTES + 7  # a signed datagram
        self._reset()

    def _reset(self) -> None:
        self.table = MemberTable(self.roster)
        self.queue, self.order = BroadcastQueue(), ProbeOrder()
        self.incarnation = self.awareness = self.seq = self.user_seq = 0
        self.probe: Probe | None = None
        self.relays: dict[int, tuple[str, int]] = {}  # my ping seq -> (requester, its seq)
        self.suspicions: dict[int, Suspicion] = {}  # slot -> its running suspicion
        self.user_seen: set[tuple[str, int]] = set()
        self._gossip_armed = False

    # ----- life cycle ---------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        """Start, or restart after a crash with an empty table (as a restarted process would)."""
        self._reset()
        self.lives += 1
        cfg = self.config
        slot = self.roster.slot
        self.table.warm(None if self.initial is ALL else [self.me, *map(slot, self.initial)])
        if self.lives > 1 or self.table.live <= 1:
            self._queue(ctx, (ALIVE, self.node_id, 0, ""))
        first = cfg.probe_interval_s * ctx.rng.random() if self.phase is None else self.phase
        ctx.set_timer("probe", first)
        ctx.set_timer("push_pull", self._push_pull_interval() * ctx.rng.random())
        ctx.set_timer("rejoin", cfg.rejoin_interval_s * (0.5 + ctx.rng.random()))
        for seed in self.seeds:
            self._sync(ctx, seed, reply=False)

    def broadcast(self, ctx: Context, payload: bytes) -> None:
        """Spread an application message to every member (best effort, like membership updates)."""
        self.user_seq += 1
        self.user_seen.add((self.node_id, self.user_seq))
        self._queue(ctx, (USER, self.node_id, self.user_seq, bytes(payload)))

    def leave(self, ctx: Context) -> None:
        """Announce a graceful departure (DEAD about oneself, from oneself)."""
        self._queue(ctx, (DEAD, self.node_id, self.incarnation, self.node_id))

    def members(self, *states: int) -> list[str]:
        """Ids of members in ``states`` (default: alive and suspect), self included."""
        wanted = states or LIVE
        return [self.roster.ids[s] for s in self.table.slots_in(*wanted)]

    # ----- timers -------------------------------------------------------------------------
    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "probe":
            self._tick(ctx)
        elif name == "probe_timeout":
            self._indirect(ctx)
        elif name == "disseminate":
            self._gossip(ctx)
        elif name.startswith("s:"):
            self._suspicion_expired(ctx, self.roster.slot(name[2:]))
        elif name.startswith("nack:"):
            self._send_nack(ctx, int(name[5:]))
        elif name == "push_pull":
            self._push_pull(ctx)
        elif name == "rejoin":
            self._rejoin(ctx)

    def _tick(self, ctx: Context) -> None:
        self._conclude_probe(ctx)
        scale = self.awareness + 1
        slot = self._next_target(ctx)
        if slot is None and self.seeds:  # alone: the join did not get through yet, try again
            self._sync(ctx, self.seeds[int(ctx.rng.random() * len(self.seeds))], reply=False)
        if slot is not None:
            self.seq += 1
            target = self.roster.ids[slot]
            buddy = None
            if self.table.get(slot) == SUSPECT:
                buddy = (SUSPECT, target, self.table.incarnation(slot), self.node_id)
            ctx.send(target, Ping(self.seq, target, self._updates(target, buddy)), reliable=False)
            self.probe = Probe(self.seq, slot)
            ctx.set_timer("probe_timeout", self.config.probe_timeout_s * scale)
        ctx.set_timer("probe", self.config.probe_interval_s * scale)

    def _next_target(self, ctx: Context) -> int | None:
        if self.config.probe_order == "random":
            return self.table.random_member(ctx.rng, (self.me,))
        return self.order.next(self.table, self.me, ctx.rng)

    def _conclude_probe(self, ctx: Context) -> None:
        """End of the last probe's period: no ack means suspect (and worse local health)."""
        probe, self.probe = self.probe, None
        if probe is None or probe.acked:
            return
        expected, slot = probe.nacks_expected, probe.slot
        self._health(ctx, (expected - probe.nacks) if expected else 1)
        if self.table.get(slot) in LIVE:
            node = self.roster.ids[slot]
            self._apply(ctx, (SUSPECT, node, self.table.incarnation(slot), self.node_id), self.node_id)

    def _indirect(self, ctx: Context) -> None:
        """Direct probe timed out: ask k members to probe the target (PingReq)."""
        probe = self.probe
        if probe is None or probe.acked:
            return
        seq, slot = probe.seq, probe.slot
        target, exclude = self.roster.ids[slot], [self.me, slot]
        for _ in range(self.config.indirect_checks):
            helper = self.table.random_member(ctx.rng, tuple(exclude), (ALIVE,))
            if helper is None:
                break
            exclude.append(helper)
            node = self.roster.ids[helper]
            ctx.send(node, PingReq(seq, target, self._updates(target)), reliable=False)
            probe.nacks_expected += 1

    def _health(self, ctx: Context, delta: int) -> None:
        self.awareness = min(max(self.awareness + delta, 0), self.config.awareness_max - 1)

    # ----- packets ------------------------------------------------------------------------
    def on_message(self, ctx: Context, src: str, msg) -> None:
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            self.stats["unknown_packets"] += 1
            return
        handler(self, ctx, src, msg)

    def _on_ping(self, ctx: Context, src: str, msg: Ping) -> None:
        self._merge(ctx, src, msg.updates)
        if msg.target and msg.target != self.node_id:
            self.stats["misdirected_pings"] += 1
            return
        ctx.send(src, Ack(msg.seq, "", self._updates(src)), reliable=False)

    def _on_ack(self, ctx: Context, src: str, msg: Ack) -> None:
        self._merge(ctx, src, msg.updates)
        probe = self.probe
        if probe is not None and msg.seq == probe.seq and not probe.acked:
            probe.acked = True
            ctx.cancel_timer("probe_timeout")
            self._health(ctx, -1)
            return
        relay = self.relays.pop(msg.seq, None)
        if relay is not None:
            ctx.cancel_timer(f"nack:{msg.seq}")
            ctx.send(relay[0], Ack(relay[1], "", self._updates(relay[0])), reliable=False)

    def _on_ping_req(self, ctx: Context, src: str, msg: PingReq) -> None:
        self._merge(ctx, src, msg.updates)
        if msg.target == self.node_id or not msg.target:
            return
        self.seq += 1
        self.relays[self.seq] = (src, msg.seq)
        ctx.send(msg.target, Ping(self.seq, msg.target, self._updates(msg.target)), reliable=False)
        ctx.set_timer(f"nack:{self.seq}", self.config.probe_timeout_s * (self.awareness + 1))

    def _send_nack(self, ctx: Context, seq: int) -> None:
        relay = self.relays.pop(seq, None)
        if relay is not None:
            ctx.send(relay[0], Nack(relay[1]), reliable=False)

    def _on_nack(self, ctx: Context, src: str, msg: Nack) -> None:
        probe = self.probe
        if probe is not None and msg.seq == probe.seq:
            probe.nacks += 1

    def _on_gossip(self, ctx: Context, src: str, msg: Gossip) -> None:
        self._merge(ctx, src, msg.updates)

    def _on_sync(self, ctx: Context, src: str, msg: Sync) -> None:
        view = msg.view
        if view is not None and view[0] is self.roster:  # simulated peer: diff the snapshots
            ids, states, incs = self.roster.ids, view[1], view[2]
            entries = [(states[s], incs.get(s, 0), ids[s]) for s in self.table.differences(states, incs)]
        else:
            entries = msg.entries
        table, slot_of = self.table, self.roster.slot
        for code, inc, node in entries:
            slot = slot_of(node)
            if table.get(slot) == code and table.incarnation(slot) == inc:
                continue  # the common case: we agree
            self._apply(ctx, (code, node, inc, src if code != ALIVE else ""), src)
        if not msg.reply:
            self._sync(ctx, src, reply=True)

    def _sync(self, ctx: Context, dst: str, *, reply: bool) -> None:
        ctx.send(dst, Sync.of_table(self.table, reply), reliable=True)

    # ----- membership rules ---------------------------------------------------------------
    def _merge(self, ctx: Context, src: str, updates: tuple) -> None:
        for update in updates:
            self._apply(ctx, update, src)

    def _apply(self, ctx: Context, update: tuple, src: str) -> None:
        code, node, inc, frm = update
        if code == USER:
            self._on_user(ctx, update)
            return
        slot = self.roster.slot(node)
        if slot == self.me:
            self._about_me(ctx, code, inc, frm)
            return
        current, known = self.table.get(slot), self.table.incarnation(slot)
        if inc < known or (current == DEAD and code != ALIVE):
            self.stats["stale_updates"] += inc < known
            return
        if code == ALIVE:
            if current == UNKNOWN or inc > known:
                self._set(ctx, slot, ALIVE, inc, "join" if current == UNKNOWN else "alive", update)
        elif current == UNKNOWN:
            return  # rumours about members we never met are not ours to spread
        elif code == SUSPECT:
            self._suspect(ctx, slot, inc, frm, update)
        else:
            self._set(ctx, slot, DEAD, inc, "left" if frm == node else "dead", update)

    def _set(self, ctx: Context, slot: int, state: int, inc: int, event: str, update: tuple) -> None:
        self.table.set(slot, state, inc, ctx.now)
        if self.suspicions.pop(slot, None) is not None:
            ctx.cancel_timer(f"s:{update[1]}")
        self._queue(ctx, update)
        if self.on_event is not None:
            self.on_event(ctx.now, self.node_id, event, update[1])

    def _suspect(self, ctx: Context, slot: int, inc: int, frm: str, update: tuple) -> None:
        current, known, node = self.table.get(slot), self.table.incarnation(slot), update[1]
        suspicion = self.suspicions.get(slot)
        if current == SUSPECT and inc == known and suspicion is not None:
            if frm in suspicion.confirmers:
                return
            suspicion.confirmers.add(frm)  # an independent confirmation: shorten the timer, pass it on
            self._queue(ctx, update)
            remaining = suspicion_timeout(self.config, suspicion.members, len(suspicion.confirmers) - 1)
            ctx.set_timer(f"s:{node}", remaining - (ctx.now - suspicion.start))
            return
        if current == SUSPECT and inc == known:
            return
        self._set(ctx, slot, SUSPECT, inc, "suspect", update)
        n = max(self.table.live, 1)
        self.suspicions[slot] = Suspicion(ctx.now, inc, {frm}, n)
        ctx.set_timer(f"s:{node}", suspicion_timeout(self.config, n, 0))

    def _suspicion_expired(self, ctx: Context, slot: int) -> None:
        suspicion = self.suspicions.pop(slot, None)
        if suspicion is None or self.table.get(slot) != SUSPECT:
            return
        node = self.roster.ids[slot]
        self._apply(ctx, (DEAD, node, suspicion.incarnation, self.node_id), self.node_id)

    def _about_me(self, ctx: Context, code: int, inc: int, frm: str) -> None:
        """Someone says I am suspect / dead (refute with a higher incarnation), or alive."""
        if (code == ALIVE and inc <= self.incarnation) or (code == DEAD and frm == self.node_id):
            return
        if code != ALIVE and inc < self.incarnation:
            return
        self.incarnation = inc + 1
        self.table.set(self.me, ALIVE, self.incarnation, ctx.now)
        self._queue(ctx, (ALIVE, self.node_id, self.incarnation, ""))
        if code != ALIVE:
            self._health(ctx, 1)
            self.stats["refutations"] += 1
            if self.on_event is not None:
                self.on_event(ctx.now, self.node_id, "refute", self.node_id)

    def _on_user(self, ctx: Context, update: tuple) -> None:
        key = (update[1], update[2])
        if key in self.user_seen:
            return
        self.user_seen.add(key)
        self._queue(ctx, update)
        if self.on_user is not None:
            self.on_user(update[1], update[3])

    # ----- dissemination ------------------------------------------------------------------
    def _queue(self, ctx: Context, update: tuple) -> None:
        self.queue.push(update)
        if not self._gossip_armed and self.config.gossip_nodes > 0:
            self._gossip_armed = True
            ctx.set_timer("disseminate", self.config.gossip_interval_s)

    def _updates(self, dst: str, first: tuple | None = None) -> tuple:
        """Piggyback: as many queued updates as fit one datagram to ``dst``."""
        if not self.queue and first is None:
            return ()
        room = self.config.max_packet_bytes - self._overhead - len(dst.encode())
        user = self.config.reserved_user_bytes
        limit = retransmit_limit(self.config, self.table.live)
        return self.queue.take(room - user, user, limit, first)

    def _gossip(self, ctx: Context) -> None:
        self._gossip_armed = False
        chosen = [self.me]
        for _ in range(self.config.gossip_nodes):
            if not self.queue:
                break
            slot = self.table.random_member(ctx.rng, tuple(chosen))
            if slot is None:
                break
            chosen.append(slot)
            node = self.roster.ids[slot]
            ctx.send(node, Gossip(0, "", self._updates(node)), reliable=False)
        if self.queue:
            self._gossip_armed = True
            ctx.set_timer("disseminate", self.config.gossip_interval_s)

    def _push_pull_interval(self) -> float:
        """memberlist's scaling: longer full syncs beyond 32 members."""
        n = self.table.live
        scale = 1 if n <= 32 else math.ceil(math.log2(n) - math.log2(32)) + 1
        return self.config.push_pull_interval_s * scale

    def _push_pull(self, ctx: Context) -> None:
        slot = self.table.random_member(ctx.rng, (self.me,))
        if slot is not None:
            self._sync(ctx, self.roster.ids[slot], reply=False)
        ctx.set_timer("push_pull", self._push_pull_interval())

    def _rejoin(self, ctx: Context) -> None:
        """Re-contact a seed and a dead member: the way back after a partition (memberlist#222)."""
        if self.seeds:
            self._sync(ctx, self.seeds[int(ctx.rng.random() * len(self.seeds))], reply=False)
        slot = self.table.random_member(ctx.rng, (self.me,), (DEAD,))
        if slot is not None:
            self._sync(ctx, self.roster.ids[slot], reply=False)
        ctx.set_timer("rejoin", self.config.rejoin_interval_s)


_HANDLERS = {Ping: SwimNode._on_ping, Ack: SwimNode._on_ack, PingReq: SwimNode._on_ping_req,
             Nack: SwimNode._on_nack, Gossip: SwimNode._on_gossip, Sync: SwimNode._on_sync}
