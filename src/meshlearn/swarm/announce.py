"""Servers that announce what they hold, place themselves, and re-place when others fail (sans-I/O).

An :class:`AnnouncingServer` is a :class:`~meshlearn.swarm.nodes.SwarmServer` that also keeps a
:class:`~meshlearn.swarm.directory.Directory` of the swarm and gossips it::

    every announce_s:  seq += 1; send sw.dir {entries: [own announcement]} to every known member
                       (a heartbeat) and sw.dir {entries: every fresh entry} to `fanout` random
                       ones (the seeds at first), so joiners learn the whole swarm
    on sw.dir:         offer each entry (the sender's own entry is checked against the sender)
    on sw.ask:         answer sw.dir (how clients and joiners learn the swarm)
    every announce_s:  expire entries silent for ttl_s (a server missed ~3 heartbeats)

Direct heartbeats cost O(members) messages per server per period: right for tens of servers on a
few machines; at thousands, SWIM's membership (``meshlearn.overlay.swim``) is the scalable failure
detector and the directory would ride on its piggybacked broadcasts (the scale simulation models
that detector's delay instead).

**Self-placement.** A server built without a span (``start=None``) announces itself as a joiner
(an empty span and its capacity), asks its seeds for the directory every period, and after
``settle_s`` takes the span that :func:`~meshlearn.swarm.placement.repair` gives it in the plan
computed from its view: the placed servers where they are, every joiner placed one at a time in
an order all agree on. Servers that start together see the same joiners, compute the same plan and
so never pick the same blocks. It does not place itself before it has heard from a seed (up to
``settle_max_s``). Whenever its view loses a server or shows a block below ``target`` replicas
(servers that placed themselves on stale views), it recomputes the plan (filling blocks below
``target``, no improving moves) and moves if the plan moves it. Taking a span is a
:class:`~meshlearn.swarm.tasks.LoadSpan` task: the workspace makes the blocks ready (loads them from
the model file in a process; the simulator's stack holds every block already); the server announces
the span only when the load is done, and serves the old span until then.

**Metrics**: each period the server records ``swarm.span_start`` / ``span_end`` / ``rate`` / ``served`` /
``refused`` / ``members`` / ``min_replicas`` / ``moves`` (per node, the period as the round): a process
streams them into its run store (``swarm serve --runs-dir``).

**Throughput** is measured, not declared: an exponential average of the time its executor took per
request through its span (``rate`` is only the first guess, before any request).

**Trust.** A server announces the digests its workspace computed over the blocks it loaded, so one
holding other weights (another model version, a damaged file) is refused by every directory that
knows the model file's digests. A deliberate liar can copy the right digests; what catches it is the
client's check of every answer (it is banned after its first bad one). Entries relayed by a third
server are accepted if their digests match the model's; only the owner's own entry is bound to the
authenticated sender. An insider can therefore relay a
made-up newer entry for another server (a denial of service: clients then ban that server after its
refusals); signing entries with per-node keys would close it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshlearn.node import Context, Node
from meshlearn.swarm.directory import Announcement, Directory
from meshlearn.swarm.generate import GenerationClient
from meshlearn.swarm.nodes import SwarmClient, SwarmServer
from meshlearn.swarm.placement import Server, repair
from meshlearn.swarm.tasks import LoadSpan
from meshlearn.wire import Message

__all__ = ["ASK", "DIR", "AnnouncingServer", "DirectoryClient", "DirectoryGenerator", "FollowsDirectory",
           "StatusProbe"]

DIR, ASK = "sw.dir", "sw.ask"


class AnnouncingServer(SwarmServer):
    """A swarm server in a self-organising swarm (see the module docstring). ``start=None``: place
    itself; ``movable=False``: keep the span it was given (an operator's choice) and only announce it;
    ``span``: how many blocks it holds; ``addr``/``learn``: see :func:`_take`."""

    def __init__(self, node_id: str, start: int | None, span: int, *, blocks: int, seeds: Sequence[str] = (),
                 rate: float = 1.0, site: str = "A", digests: Sequence[str] | None = None, target: int = 2,
                 announce_s: float = 1.0, ttl_s: float = 3.5, settle_s: float = 1.5, settle_max_s: float = 15.0,
                 fanout: int = 2, addr: str = "", learn: Callable[[str, str], None] | None = None,
                 movable: bool = True, **server_kw):
        super().__init__(node_id, 0, 0, **server_kw)  # hosts nothing until its span is loaded
        self.addr, self.learn, self.movable = addr, learn, movable
        self.span, self.blocks, self.site, self.target = span, blocks, site, target
        self.seeds = [s for s in seeds if s != node_id]
        self.wanted = start  # the span start it is loading or holds (None: not placed yet)
        self.rate, self.seq = float(rate), 0
        self.announce_s, self.settle_s, self.settle_max_s, self.fanout = announce_s, settle_s, settle_max_s, fanout
        self.directory = Directory(blocks, digests=digests, ttl_s=ttl_s)
        self.loading: int | None = None  # task id of the span being loaded
        self.held_digests: tuple[str, ...] = ()  # of the blocks it holds, computed by the workspace
        self.submitted: dict[int, float] = {}  # request task id -> when it was submitted
        self.moves = 0
        self.short_ticks = 0  # consecutive periods whose view had a block below target
        self.ticks = 0  # announce periods so far (the run store's "round")

    # ----- life cycle ---------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        super().on_start(ctx)
        for seed in self.seeds:
            ctx.send(seed, Message.make(ASK))
        if self.wanted is None:
            ctx.set_timer("settle", self.settle_s)
        else:
            self._load(ctx, self.wanted)
        ctx.set_timer("announce", self.announce_s * ctx.rng.random())

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "settle":
            if self.seeds and not set(self.seeds) & set(self.directory.entries) and ctx.now < self.settle_max_s:
                ctx.set_timer("settle", self.settle_s)  # no seed heard yet: placing now would be blind
                return
            start = self._planned_start()
            ctx.log(f"placing itself on blocks {start}:{start + self.span}; view: "
                    f"{len(self.directory.placement())} placed, {len(self.directory.joiners())} joining")
            self._load(ctx, start)
        elif name == "announce":
            self._tick(ctx)
            ctx.set_timer("announce", self.announce_s)
        else:
            super().on_timer(ctx, name)

    def _tick(self, ctx: Context) -> None:
        self._report(ctx)
        short = min(self.directory.replicas()) < self.target
        self.short_ticks = self.short_ticks + 1 if short else 0
        if self.directory.expire(ctx.now) or self.short_ticks >= 2:  # a gap seen twice: not a view in flux
            self._replan(ctx)
        members = sorted(set(self.directory.entries) - {self.node_id}) or self.seeds
        self.seq += 1
        own = self._own()
        self.directory.offer(own, ctx.now)
        for member in members:
            ctx.send(member, Message.make(DIR, entries=[own.to_meta()]))
        if self.end == self.start:  # not placed yet: keep asking for the whole view
            for seed in self.seeds:
                ctx.send(seed, Message.make(ASK))
        for i in ctx.rng.permutation(len(members))[:self.fanout] if members else ():
            ctx.send(members[int(i)], self._dir_message())

    def _report(self, ctx: Context) -> None:
        """One row per period for the run store: what it hosts, how fast, how big its view is."""
        self.ticks += 1
        reps = self.directory.replicas()
        for key, value in (("span_start", self.start), ("span_end", self.end), ("rate", self.rate),
                           ("served", self.served + self.steps_served), ("refused", self.refused),
                           ("members", len(self.directory.entries)), ("min_replicas", min(reps)),
                           ("moves", self.moves)):
            ctx.record(f"swarm.{key}", float(value), round=self.ticks, per_node=True)

    # ----- placement ----------------------------------------------------------------------
    def _me(self) -> Server:
        return Server(self.node_id, self.rate * self.span, self.span, self.site)

    def _planned_start(self) -> int:
        current = {s: a for s, a in self.directory.placement().items() if s != self.node_id}
        others = {**self.directory.servers(), **self.directory.joiners()}
        servers = {**{s: v for s, v in others.items() if s != self.node_id}, self.node_id: self._me()}
        if self.wanted is not None:
            current[self.node_id] = self.wanted
        return repair(current, servers, self.blocks, target=self.target, max_moves=0)[self.node_id]

    def _replan(self, ctx: Context) -> None:
        if self.wanted is None or self.loading is not None or not self.movable:
            return
        start = self._planned_start()
        if start != self.wanted:
            ctx.log(f"moving from blocks {self.start}:{self.end} to {start}:{start + self.span} "
                    "(a block fell below its replica target)")
            self.moves += 1
            self._load(ctx, start)

    def _load(self, ctx: Context, start: int) -> None:
        self.wanted = start
        self.loading = ctx.submit(LoadSpan(start, start + self.span))

    # ----- messages -----------------------------------------------------------------------
    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        if msg.kind == ASK:
            ctx.send(src, self._dir_message())
        elif msg.kind == DIR:
            self._merge(ctx, src, msg.meta.get("entries"))
        else:
            before = set(self.pending)
            super().on_message(ctx, src, msg)
            for task_id in set(self.pending) - before:
                self.submitted[task_id] = ctx.now

    def _merge(self, ctx: Context, src: str, entries) -> None:
        if not isinstance(entries, list):
            self.directory.rejected["malformed"] += 1
            return
        for entry in entries:
            if isinstance(entry, dict) and entry.get("server") != self.node_id:
                _take(self.directory, entry, ctx.now, src, self.learn)

    def _own(self) -> Announcement:
        return Announcement(self.node_id, self.start, self.end, self.rate, self.seq, self.site, self.held_digests,
                            self.span, self.addr)

    def _dir_message(self) -> Message:
        entries = [a.to_meta() for a in self.directory.entries.values()]
        return Message.make(DIR, entries=entries)

    def on_crash(self) -> None:
        super().on_crash()
        self.submitted.clear()
        self.loading = None

    # ----- executor -----------------------------------------------------------------------
    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id == self.loading:
            self.loading = None
            if self.end > self.start and self.start != self.wanted:
                self.sessions.clear()  # generation caches of the old span: their clients replay elsewhere
            self.start, self.end = self.wanted, self.wanted + self.span
            self.held_digests = tuple(result or ())
            self.seq += 1
            self.directory.offer(self._own(), ctx.now)
            return
        began = self.submitted.pop(task_id, None)
        if began is not None and ctx.now > began:
            self.rate = 0.8 * self.rate + 0.2 / (ctx.now - began)
        super().on_task_done(ctx, task_id, result)


def _take(directory: Directory, entry: dict, now: float, src: str, learn) -> None:
    """Offer one gossiped entry (bound to the sender when it is the sender's own); tell the driver where
    an accepted server listens (``learn(server, "HOST:PORT")``: a process adds it to its address book)."""
    if directory.offer(entry, now, src=src if entry.get("server") == src else None) is None and learn is not None:
        ann = directory.entries[entry["server"]]
        if ann.addr:
            learn(ann.server, ann.addr)


class FollowsDirectory:
    """Mixin for a client node (before :class:`~meshlearn.swarm.nodes.SwarmClient` or
    :class:`~meshlearn.swarm.generate.GenerationClient` in the bases): it learns the placement from the
    swarm instead of being given one. It asks its seeds (sw.ask) at start and every ``refresh_s`` (and two
    servers it knows), keeps its own checked :class:`Directory`, and updates in place the ``placement`` and
    ``servers`` dicts the client routes with."""

    def __init__(self, node_id: str, seeds: Sequence[str], blocks: int, *args, digests: Sequence[str] | None = None,
                 refresh_s: float = 1.0, ttl_s: float = 3.5, learn: Callable[[str, str], None] | None = None, **kw):
        super().__init__(node_id, {}, {}, blocks, *args, **kw)
        self.seeds, self.refresh_s, self.learn = list(seeds), refresh_s, learn
        self.directory = Directory(blocks, digests=digests, ttl_s=ttl_s)

    def on_start(self, ctx: Context) -> None:
        self._ask(ctx)
        ctx.set_timer("refresh", self.refresh_s)
        super().on_start(ctx)

    def _ask(self, ctx: Context) -> None:
        known = sorted(self.directory.entries)
        for seed in self.seeds + [known[int(i)] for i in ctx.rng.permutation(len(known))[:2]]:
            ctx.send(seed, Message.make(ASK))

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "refresh":
            self.directory.expire(ctx.now)
            self._sync_view()
            self._ask(ctx)
            ctx.set_timer("refresh", self.refresh_s)
        else:
            super().on_timer(ctx, name)

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        if msg.kind != DIR:
            super().on_message(ctx, src, msg)
            return
        entries = msg.meta.get("entries")
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict):
                _take(self.directory, entry, ctx.now, src, self.learn)
        self._sync_view()

    def _sync_view(self) -> None:
        self.placement.clear()
        self.placement.update(self.directory.placement())
        self.servers.clear()
        self.servers.update(self.directory.servers())


class DirectoryClient(FollowsDirectory, SwarmClient):
    """Stateless requests (``SwarmClient``) over the placement the swarm announces:
    ``DirectoryClient(id, seeds, blocks, inputs, digests=..., site=..., latency=...)``."""


class DirectoryGenerator(FollowsDirectory, GenerationClient):
    """Generation (``GenerationClient``) over the placement the swarm announces:
    ``DirectoryGenerator(id, seeds, blocks, prompt, tokens, digests=..., site=..., latency=...)``."""


class StatusProbe(Node):
    """Asks its seeds for the directory, then every server it learns of, and stops after ``wait_s``:
    ``directory`` then holds what the swarm announces (what ``meshlearn swarm status`` prints)."""

    def __init__(self, node_id: str, seeds: Sequence[str], blocks: int, *, digests: Sequence[str] | None = None,
                 wait_s: float = 1.5, learn: Callable[[str, str], None] | None = None):
        super().__init__(node_id)
        self.seeds, self.wait_s, self.learn = list(seeds), wait_s, learn
        self.directory = Directory(blocks, digests=digests, ttl_s=max(wait_s, 1.0) * 10)
        self.asked: set[str] = set()

    def on_start(self, ctx: Context) -> None:
        self._ask(ctx, self.seeds)
        ctx.set_timer("done", self.wait_s)

    def _ask(self, ctx: Context, servers) -> None:
        for server in sorted(set(servers) - self.asked):
            self.asked.add(server)
            ctx.send(server, Message.make(ASK))

    def on_message(self, ctx: Context, src: str, msg: Message) -> None:
        entries = msg.meta.get("entries") if msg.kind == DIR else None
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict):
                _take(self.directory, entry, ctx.now, src, self.learn)
        self._ask(ctx, [s for s, a in self.directory.entries.items() if a.addr or s in self.seeds])

    def on_timer(self, ctx: Context, name: str) -> None:
        ctx.stop()
