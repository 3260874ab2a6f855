"""Placement under churn, in virtual time: the four placement arms on one trace of joins and crashes.

What is simulated is *who hosts which blocks when*, at the level the issue-13 bars are stated:
servers crash and join (a Poisson trace, or one crash), each arm learns of it as its membership
mechanism would, re-places by its rule (``placement.py``), and a server that takes a new span
serves nothing until its blocks are loaded (``load_s_per_block`` each). The request path and the
overlay's own packets are not simulated here; the membership delay is a parameter:

* ``repair`` (ours): every server learns a crash after ``detect_heartbeats`` membership heartbeats
  (SWIM's probe + suspicion) and a join after one, and all apply the same plan at once;
* ``petals``: a crashed server's record stays in the DHT until it expires (re-announced every
  ``petals_announce_s``, expires after ``petals_expire_s``); joiners wait U(0, 10 s) and take the
  weakest window of what they see; every server re-checks U(0, ``petals_check_max_s``) and moves
  when ``petals_should_move`` says so;
* ``central``: knows everything at once and re-optimises from scratch at every event;
* ``static``: the hand-written assignment of every server that will ever exist, never changed.

Measured per arm: time until every block is back to its replica target after each crash, the
time-average of the served bottleneck relative to ``central``'s optimum for the live set, block
migrations per churn event, and oscillations (a server going back to a span it left < 60 s before).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.swarm.placement import (Server, block_throughput, bottleneck, central, petals_best_start,
                                       petals_should_move, repair, replicas, static)

__all__ = ["ChurnSettings", "Event", "Optimum", "make_servers", "churn_trace", "simulate", "ARMS"]

ARMS = ("repair", "petals", "central", "static")


@dataclass(frozen=True)
class ChurnSettings:
    servers: int = 64
    blocks: int = 32
    capacity: tuple[int, int] = (1, 3)  # blocks a server's memory holds, drawn uniformly (inclusive)
    target: int = 3
    sites: int = 3
    heartbeat_s: float = 1.0
    detect_heartbeats: int = 2
    load_s_per_block: float = 0.1
    petals_announce_s: float = 60.0
    petals_expire_s: float = 120.0
    petals_check_max_s: float = 240.0
    petals_join_wait_s: float = 10.0
    oscillation_s: float = 60.0
    central_restarts: int = 3
    repair_moves: int = 2  # repair: improving moves per membership change, beyond filling deficits
    repair_gain: float = 1.02  # repair: a move must raise the bottleneck by more than this factor
    seed: int = 0


@dataclass(frozen=True)
class Event:
    t: float
    kind: str  # "crash" | "join"
    server: Server


def make_servers(n: int, rng: np.random.Generator, *, capacity: tuple[int, int] = (1, 3), sites: int = 3,
                 prefix: str = "s") -> list[Server]:
    """Heterogeneous servers: rates 1–4 requests/s through a block, ``capacity`` blocks of memory, over sites."""
    low, high = capacity
    return [Server(f"{prefix}{i:04d}", float(rng.uniform(1.0, 4.0)), int(rng.integers(low, high + 1)),
                   f"site{i % sites}") for i in range(n)]


def churn_trace(cfg: ChurnSettings, initial: list[Server], events: int, rate_per_s: float,
                rng: np.random.Generator) -> list[Event]:
    """Poisson churn: each event is a crash of a random live server or a join of a new one (even odds)."""
    live, out, t = [s.id for s in initial], [], 30.0
    fresh = iter(make_servers(events, rng, capacity=cfg.capacity, sites=cfg.sites, prefix="j"))
    by_id = {s.id: s for s in initial}
    for _ in range(events):
        t += float(rng.exponential(1.0 / rate_per_s))
        if rng.random() < 0.5 and len(live) > cfg.servers // 2:
            victim = live.pop(int(rng.integers(len(live))))
            out.append(Event(t, "crash", by_id[victim]))
        else:
            joiner = next(fresh)
            by_id[joiner.id] = joiner
            live.append(joiner.id)
            out.append(Event(t, "join", joiner))
    return out


@dataclass
class _Swarm:
    """One arm's world: who is alive, what each live server hosts and from when it serves it."""

    cfg: ChurnSettings
    servers: dict[str, Server]
    start: dict[str, int] = field(default_factory=dict)
    ready_at: dict[str, float] = field(default_factory=dict)
    left: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # spans a server left, and when
    migrations: int = 0
    oscillations: int = 0
    snapshots: list[tuple[float, dict, dict, dict]] = field(default_factory=list)  # (t, start, ready_at, servers)

    def place(self, sid: str, start: int, t: float, *, migrate: bool) -> None:
        """``sid`` takes the span at ``start``; it serves it once loaded. ``migrate``: it left another span."""
        if self.start.get(sid) == start:
            return
        if any(st == start and t - when < self.cfg.oscillation_s for when, st in self.left.get(sid, ())):
            self.oscillations += 1
        if sid in self.start:
            self.left.setdefault(sid, []).append((t, self.start[sid]))
        self.migrations += migrate
        self.start[sid] = start
        self.ready_at[sid] = t + self.servers[sid].span_len(self.cfg.blocks) * self.cfg.load_s_per_block

    def crash(self, sid: str) -> tuple[int | None, Server]:
        self.ready_at.pop(sid, None)
        return self.start.pop(sid, None), self.servers.pop(sid)

    def snapshot(self, t: float) -> None:
        self.snapshots.append((t, dict(self.start), dict(self.ready_at), dict(self.servers)))


def simulate(arm: str, cfg: ChurnSettings, initial: list[Server], trace: list[Event], until: float,
             optimum: "Optimum | None" = None) -> dict:
    """Run ``arm`` on ``trace`` up to ``until`` s; returns its metrics (see the module docstring)."""
    if arm not in ARMS:
        raise UsageError(f"unknown placement arm {arm!r} (valid: {', '.join(ARMS)})")
    rng = np.random.default_rng(cfg.seed)
    everyone = {s.id: s for s in initial} | {e.server.id: e.server for e in trace}
    world = _World(arm, cfg, _Swarm(cfg, {s.id: s for s in initial}), everyone, rng)
    world.begin()
    for ev in trace:
        world.at(ev.t, ev.kind, ev.server)
    while world.queue and world.queue[0][0] <= until:
        t, _, what, data = heapq.heappop(world.queue)
        world.step(t, what, data)
        world.swarm.snapshot(t)
    return _metrics(cfg, world.swarm, trace, until, optimum or Optimum(cfg))


class _World:
    """The event loop of one arm: trace events, membership views, Petals' timers."""

    def __init__(self, arm: str, cfg: ChurnSettings, swarm: _Swarm, everyone: dict[str, Server], rng):
        self.arm, self.cfg, self.swarm, self.everyone, self.rng = arm, cfg, swarm, everyone, rng
        self.queue: list[tuple[float, int, str, object]] = []
        self._seq = 0
        self.ghosts: dict[str, tuple[int, Server]] = {}  # Petals: crashed servers whose record has not expired

    def at(self, t: float, what: str, data: object = None) -> None:
        self._seq += 1
        heapq.heappush(self.queue, (t, self._seq, what, data))

    def begin(self) -> None:
        for sid, start in self._initial().items():
            self.swarm.place(sid, start, 0.0, migrate=False)
            self.swarm.ready_at[sid] = 0.0
        self.swarm.snapshot(0.0)
        if self.arm == "petals":
            for sid in sorted(self.swarm.servers):
                self.at(float(self.rng.uniform(0, self.cfg.petals_check_max_s)), "petals_check", sid)

    def _initial(self) -> dict[str, int]:
        cfg, servers = self.cfg, self.swarm.servers
        if self.arm == "static":
            self.static = static(self.everyone, cfg.blocks)
            return {s: self.static[s] for s in servers}
        if self.arm == "petals":
            plan: dict[str, int] = {}
            for sid in sorted(servers):
                plan[sid] = petals_best_start(servers[sid], block_throughput(plan, servers, cfg.blocks))
            return plan
        if self.arm == "central":
            return central(servers, cfg.blocks, restarts=cfg.central_restarts)
        return repair({}, servers, cfg.blocks, target=cfg.target, max_moves=4 * len(servers), gain=1.0 + 1e-9)

    def step(self, t: float, what: str, data) -> None:
        getattr(self, f"_on_{what}")(t, data)

    def _on_crash(self, t: float, server: Server) -> None:
        start, _ = self.swarm.crash(server.id)
        if self.arm == "repair":
            self.at(t + self.cfg.detect_heartbeats * self.cfg.heartbeat_s, "view")
        elif self.arm == "central":
            self._replan(t, central(self.swarm.servers, self.cfg.blocks, restarts=self.cfg.central_restarts))
        elif self.arm == "petals" and start is not None:
            self.ghosts[server.id] = (start, server)
            announced = t - float(self.rng.uniform(0, self.cfg.petals_announce_s))
            self.at(announced + self.cfg.petals_expire_s, "petals_expire", server.id)

    def _on_join(self, t: float, server: Server) -> None:
        self.swarm.servers[server.id] = server
        if self.arm == "repair":
            self.at(t + self.cfg.heartbeat_s, "view")
        elif self.arm == "central":
            self._replan(t, central(self.swarm.servers, self.cfg.blocks, restarts=self.cfg.central_restarts))
        elif self.arm == "static":
            self.swarm.place(server.id, self.static[server.id], t, migrate=False)
        else:
            self.at(t + float(self.rng.uniform(0, self.cfg.petals_join_wait_s)), "petals_join", server.id)

    def _on_view(self, t: float, _) -> None:
        cfg = self.cfg
        recent = {s: {st for when, st in left if t - when < cfg.oscillation_s} for s, left in self.swarm.left.items()}
        self._replan(t, repair(self.swarm.start, self.swarm.servers, cfg.blocks, target=cfg.target,
                               max_moves=cfg.repair_moves, gain=cfg.repair_gain, recent=recent))

    def _replan(self, t: float, plan: dict[str, int]) -> None:
        for sid, start in plan.items():
            self.swarm.place(sid, start, t, migrate=sid in self.swarm.start)

    # ----- Petals: a DHT view with stale records, joins after a wait, periodic re-checks -----
    def _petals_view(self) -> tuple[dict[str, int], dict[str, Server]]:
        placement = {**self.swarm.start, **{s: st for s, (st, _) in self.ghosts.items()}}
        return placement, {**self.swarm.servers, **{s: srv for s, (_, srv) in self.ghosts.items()}}

    def _on_petals_expire(self, t: float, sid: str) -> None:
        self.ghosts.pop(sid, None)

    def _on_petals_join(self, t: float, sid: str) -> None:
        placement, servers = self._petals_view()
        rest = {s: v for s, v in placement.items() if s != sid}
        start = petals_best_start(servers[sid], block_throughput(rest, servers, self.cfg.blocks))
        self.swarm.place(sid, start, t, migrate=False)
        self.at(t + float(self.rng.uniform(0, self.cfg.petals_check_max_s)), "petals_check", sid)

    def _on_petals_check(self, t: float, sid: str) -> None:
        if sid not in self.swarm.start:
            return  # crashed (its timer dies with it)
        placement, servers = self._petals_view()
        start = petals_should_move(sid, placement, servers, self.cfg.blocks)
        if start is not None:
            self.swarm.place(sid, start, t, migrate=True)
        self.at(t + float(self.rng.uniform(0, self.cfg.petals_check_max_s)), "petals_check", sid)


class Optimum:
    """``central``'s bottleneck for a set of live servers, cached (the reference of every arm)."""

    def __init__(self, cfg: ChurnSettings):
        self.cfg, self._cache = cfg, {}

    def __call__(self, servers: dict[str, Server]) -> float:
        key = frozenset(servers)
        if key not in self._cache:
            plan = central(servers, self.cfg.blocks, restarts=self.cfg.central_restarts)
            self._cache[key] = bottleneck(plan, servers, self.cfg.blocks)
        return self._cache[key]


def _timeline(swarm: _Swarm, until: float):
    """``(t0, t1, served placement, servers)`` pieces: between snapshots, and at each load completion."""
    snaps = swarm.snapshots
    for i, (t, start, ready, servers) in enumerate(snaps):
        end = snaps[i + 1][0] if i + 1 < len(snaps) else until
        cuts = sorted({t, *(r for r in ready.values() if t < r < end), end})
        for a, b in zip(cuts, cuts[1:]):
            yield a, b, {s: v for s, v in start.items() if ready[s] <= a}, servers


def _metrics(cfg: ChurnSettings, swarm: _Swarm, trace: list[Event], until: float, optimum: Optimum) -> dict:
    pieces = [piece for piece in _timeline(swarm, until) if piece[1] > piece[0]]
    ratio_area = span = 0.0
    for a, b, served, servers in pieces:
        best = optimum(servers)
        ratio_area += (b - a) * (bottleneck(served, servers, cfg.blocks) / best if best > 0 else 1.0)
        span += b - a
    events = max(1, len(trace))
    return {"bottleneck_vs_central": round(ratio_area / span, 4) if span else None,
            "migrations": swarm.migrations, "migrations_per_event": round(swarm.migrations / events, 3),
            "oscillations": swarm.oscillations,
            "recovery_s": [_recovery(cfg, e.t, pieces, until) for e in trace if e.kind == "crash"]}


def _recovery(cfg: ChurnSettings, t: float, pieces: list, until: float) -> float | None:
    """Seconds after a crash at ``t`` until every block has its replicas back: as many as before the
    crash, or the target if it had more. None: not back by ``until``."""
    before = next((p for p in reversed(pieces) if p[0] < t), None)
    if before is None:
        return 0.0
    need = np.minimum(replicas(before[2], before[3], cfg.blocks), cfg.target)
    for a, b, served, servers in pieces:
        if b > t and np.all(replicas(served, servers, cfg.blocks) >= need):
            return round(max(a, t) - t, 3)
    return None
