"""The swarm at scale, in virtual time: 10,000 servers in 3 sites, crashes, re-placement, real requests.

What runs is the request path of issue 13 end to end: :class:`~meshlearn.swarm.nodes.SwarmServer` and
:class:`~meshlearn.swarm.nodes.SwarmClient` nodes in the simulator, each hop a real
:class:`~meshlearn.swarm.tasks.SpanTask` on the caller's workspace (the model lives in the caller:
``swarm.blocks`` is the one torch module), so every answer can be compared bitwise with the unsplit
model. Around the nodes, this module is the harness:

* **servers**: heterogeneous (``rate`` requests/s through a block, memory for 1-3 blocks), spread over
  ``sites`` sites; a task of k blocks takes k / rate seconds (the device's FLOP rate);
* **network**: :class:`SiteNetwork`, one link per directed pair that talks, its latency from the two
  sites (a few ms inside a site, tens of ms between sites);
* **crashes**: Poisson, ``crash_per_min`` of the live servers per minute, from a fault schedule
  (``FaultSchedule`` churn without recovery), as ``Crash`` faults;
* **membership**: a crash is known ``detect_s`` later (SWIM + Lifeguard: docs/benchmarks.md measured
  first DEAD 13.7 s, every member 14.4 s after a crash at 1,000 members); then every server computes
  the same plan (:func:`~meshlearn.swarm.placement.repair` with a bounded mover search) and a server
  that takes a new span keeps serving its old one until the new blocks are loaded
  (``load_s_per_block`` each);
* **clients**: the view a client routes on is a :class:`NearestHosts` entry per site: for each block,
  the ``candidates`` cheapest live hosts for that site (what a client asks the swarm's directory
  for), refreshed in place when the view changes. Only servers in some client's route do any work,
  which is what makes 10,000 node objects cheap.

Measured: requests completed / sent, answers bitwise equal to ``reference(x)`` (once per distinct
input), reroutes, the longest stall at one boundary, crashes (and how many hit a routed server),
migrations, oscillations, re-plan time, wall time.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from meshlearn.errors import UsageError
from meshlearn.executors import InlineExecutor
from meshlearn.net import Crash, DeviceProfile, Link, LinkSpec, Network, pair_rng
from meshlearn.net.faults import ChurnSpec, FaultSchedule
from meshlearn.overlay.simnet import SIM_CLUSTER_KEY
from meshlearn.sim.runtime import Simulator
from meshlearn.swarm.nodes import SwarmClient, SwarmServer
from meshlearn.swarm.placement import Server, replicas, repair
from meshlearn.wire import FrameCodec

__all__ = ["ScaleSettings", "SiteNetwork", "NearestHosts", "PacedClient", "make_scale_servers", "crash_trace",
           "simulate_scale"]


class ScaleSettings(BaseModel):
    """One scale run (defaults: the issue-13 bar: 10,000 servers, 3 sites, 1 % crashing per minute, 5 min)."""

    model_config = ConfigDict(extra="forbid")

    servers: int = Field(10_000, ge=2, description="servers at the start")
    sites: int = Field(3, ge=1, description="sites the servers and clients are spread over")
    inter_site_ms: list[float] = Field([10.0, 40.0, 30.0], description="one-way latency of each pair of sites "
                                       "(0-1, 0-2, ..., 1-2, ...), milliseconds")
    intra_site_ms: float = Field(0.5, ge=0, description="one-way latency inside a site, milliseconds")
    rate: tuple[float, float] = Field((20.0, 80.0), description="requests/s one server runs through one block, "
                                      "drawn uniformly")
    capacity: tuple[int, int] = Field((1, 3), description="blocks a server's memory holds, drawn uniformly")
    duration_s: float = Field(300.0, gt=0, description="virtual time the clients send requests over")
    crash_per_min: float = Field(0.01, ge=0, description="share of the live servers crashing per minute (Poisson)")
    detect_s: float = Field(14.4, ge=0, description="crash -> every server's membership view knows (SWIM)")
    load_s_per_block: float = Field(1.0, ge=0, description="seconds a server needs to load one new block")
    target: int = Field(3, ge=1, description="replicas per block the placement keeps")
    max_moves: int = Field(2, ge=0, description="improving moves per membership change")
    gain: float = Field(1.02, ge=1.0, description="a move must raise the bottleneck by more than this factor")
    movers: int = Field(64, ge=1, description="servers an improving move is searched among")
    clients_per_site: int = Field(2, ge=1, description="clients in each site")
    interval_s: float = Field(0.5, gt=0, description="a client sends its next request this long after the last")
    candidates: int = Field(6, ge=1, description="hosts per block in a client's directory view")
    timeout_s: float = Field(1.0, gt=0, description="a client gives up on a hop after this long")
    ban_s: float = Field(20.0, ge=0, description="a server that failed a client is avoided this long")

    @model_validator(mode="after")
    def _pairs(self) -> "ScaleSettings":
        need = self.sites * (self.sites - 1) // 2
        if len(self.inter_site_ms) != need:
            raise ValueError(f"inter_site_ms needs {need} latencies for {self.sites} sites, "
                             f"got {len(self.inter_site_ms)}")
        if not (0 < self.rate[0] <= self.rate[1] and 1 <= self.capacity[0] <= self.capacity[1]):
            raise ValueError(f"rate and capacity must be (low, high) with 0 < low <= high, got {self.rate}, "
                             f"{self.capacity}")
        return self

    def latency(self) -> np.ndarray:
        """One-way latency between sites, seconds (a symmetric matrix)."""
        lat = np.full((self.sites, self.sites), self.intra_site_ms / 1e3)
        for (i, j), ms in zip(itertools.combinations(range(self.sites), 2), self.inter_site_ms):
            lat[i, j] = lat[j, i] = ms / 1e3
        return lat


def site_name(i: int) -> str:
    return f"site{i}"


def make_scale_servers(cfg: ScaleSettings, rng: np.random.Generator) -> list[Server]:
    """Heterogeneous servers, round-robin over the sites."""
    rates = rng.uniform(*cfg.rate, size=cfg.servers)
    caps = rng.integers(cfg.capacity[0], cfg.capacity[1] + 1, size=cfg.servers)
    return [Server(f"s{i:05d}", float(rates[i]), int(caps[i]), site_name(i % cfg.sites)) for i in range(cfg.servers)]


def crash_trace(cfg: ScaleSettings, ids: list[str], rng: np.random.Generator) -> list[Crash]:
    """Poisson crashes over ``duration_s`` from a fault schedule: every server fails at ``crash_per_min``
    per minute (exponential lifetimes: ``crash_per_min`` of the live servers per minute) and stays down."""
    if cfg.crash_per_min <= 0:
        return []
    churn = ChurnSpec(rate_per_node_per_s=cfg.crash_per_min / 60.0, mean_downtime_s=1e12)
    return [e for e in FaultSchedule(churn=churn).expand(ids, rng, cfg.duration_s) if isinstance(e, Crash)]


class SiteNetwork(Network):
    """Links per directed pair (made when the pair first talks), their latency set by the two sites."""

    def __init__(self, site_of: dict[str, int], latency: np.ndarray, seed_seq: np.random.SeedSequence,
                 bandwidth_bps: float = 1e9):
        super().__init__(None, LinkSpec(), {}, seed_seq)
        self.site_of = site_of
        self.specs = {(i, j): LinkSpec(latency_s=float(latency[i, j]), jitter_s=float(latency[i, j]) * 0.1,
                                       bandwidth_bps=bandwidth_bps) for i in range(len(latency))
                      for j in range(len(latency))}

    def link(self, src: str, dst: str) -> Link:
        link = self.links.get((src, dst))
        if link is None:
            spec = self.specs[(self.site_of[src], self.site_of[dst])]
            link = self.links[(src, dst)] = Link(spec, pair_rng(self.seed_seq, src, dst))
        return link


class NearestHosts:
    """Per site, the view its clients route on: each block's ``k`` cheapest live hosts (for a client
    there: latency to the host's site + span length / rate, as :func:`~meshlearn.swarm.routing.route`
    costs it; ties by id). The dicts are the clients' own ``placement`` / ``servers``, updated in place."""

    def __init__(self, servers: list[Server], blocks: int, latency: np.ndarray, k: int):
        self.ids = [s.id for s in servers]
        self.by_id = {s.id: s for s in servers}
        self.index = {s.id: i for i, s in enumerate(servers)}
        self.blocks, self.k, self.latency = blocks, k, latency
        self.site = np.array([int(s.site.removeprefix("site")) for s in servers])
        self.lens = np.array([s.span_len(blocks) for s in servers])
        self.per_block = self.lens / np.array([s.rate for s in servers])
        self.start = np.full(len(servers), -1)  # -1: not in the served view
        self.views = [({}, {}) for _ in range(len(latency))]  # per site: (placement, servers)
        self.ever: set[str] = set()  # every server that was ever in some site's view

    def serve(self, sid: str, start: int | None) -> None:
        """``sid`` now serves from ``start`` (None: gone from the view)."""
        self.start[self.index[sid]] = -1 if start is None else start

    def refresh(self) -> None:
        live = np.flatnonzero(self.start >= 0)
        starts, ends = self.start[live], self.start[live] + self.lens[live]
        for site, (placement, servers) in enumerate(self.views):
            cost = self.latency[site, self.site[live]] + self.per_block[live]
            chosen: set[int] = set()
            for b in range(self.blocks):
                hosts = np.flatnonzero((starts <= b) & (b < ends))
                chosen.update(live[hosts[np.lexsort((live[hosts], cost[hosts]))[:self.k]]].tolist())
            placement.clear()
            placement.update({self.ids[i]: int(self.start[i]) for i in sorted(chosen)})
            servers.clear()
            servers.update({sid: self.by_id[sid] for sid in placement})
            self.ever.update(placement)


class PacedClient(SwarmClient):
    """A SwarmClient that sends request i at ``offset_s + i x interval_s`` (or at once, if the last took
    longer) and notes when each request was sent and answered."""

    def __init__(self, *args: Any, interval_s: float, offset_s: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.interval_s, self.offset_s = interval_s, offset_s
        self.sent_at: dict[int, float] = {}
        self.done_at: dict[int, float] = {}

    def _next_request(self, ctx) -> None:
        if self.req >= 0 and self.req in self.outputs:
            self.done_at[self.req] = ctx.now
        due = self.offset_s + (self.req + 1) * self.interval_s
        if due > ctx.now and self.req + 1 < len(self.inputs):
            ctx.set_timer("pace", due - ctx.now)
            return
        self._send_next(ctx)

    def _send_next(self, ctx) -> None:
        self.sent_at[self.req + 1] = ctx.now
        super()._next_request(ctx)

    def on_timer(self, ctx, name: str) -> None:
        if name == "pace":
            self._send_next(ctx)
        else:
            super().on_timer(ctx, name)

    @property
    def finished(self) -> bool:
        return self.req >= len(self.inputs)


@dataclass
class _Membership:
    """The shared membership view and the plan every server computes from it (the harness's side)."""

    cfg: ScaleSettings
    blocks: int
    sim: Simulator
    servers: dict[str, Server]  # live in the view
    nodes: dict[str, SwarmServer]
    directory: NearestHosts
    plan: dict[str, int] = field(default_factory=dict)
    left: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    migrations: int = 0
    oscillations: int = 0
    replans: int = 0
    replan_s: float = 0.0
    floor: int = 1 << 30  # fewest replicas any block had in a plan, after the first

    def begin(self) -> None:
        self.plan = repair({}, self.servers, self.blocks, target=self.cfg.target, max_moves=0)
        for sid, start in self.plan.items():
            self._serve(sid, start)
        self.directory.refresh()

    def _serve(self, sid: str, start: int) -> None:
        node = self.nodes[sid]
        node.start, node.end = start, start + self.servers[sid].span_len(self.blocks)
        self.directory.serve(sid, start)

    def crashed(self, sid: str) -> None:
        """The view learns of the crash: drop the server, re-plan, tell clients."""
        self.servers.pop(sid, None)
        self.plan.pop(sid, None)
        self.directory.serve(sid, None)
        self._replan()
        self.directory.refresh()

    def _replan(self) -> None:
        now = self.sim.now
        recent = {s: {st for when, st in left if now - when < 60.0} for s, left in self.left.items()}
        t0 = time.perf_counter()
        new = repair(self.plan, self.servers, self.blocks, target=self.cfg.target, max_moves=self.cfg.max_moves,
                     gain=self.cfg.gain, recent=recent, movers=self.cfg.movers)
        self.replan_s += time.perf_counter() - t0
        self.replans += 1
        self.floor = min(self.floor, int(replicas(new, self.servers, self.blocks).min()))
        for sid, start in new.items():
            if self.plan.get(sid) != start:
                self._move(sid, self.plan[sid], start, now)
        self.plan = new

    def _move(self, sid: str, old: int, start: int, now: float) -> None:
        if any(st == start and now - when < 60.0 for when, st in self.left.get(sid, ())):
            self.oscillations += 1
        self.left.setdefault(sid, []).append((now, old))
        self.migrations += 1
        delay = self.servers[sid].span_len(self.blocks) * self.cfg.load_s_per_block
        self.sim.loop.call_at(now + delay, self._loaded, (sid, start))

    def _loaded(self, item: tuple[str, int]) -> None:
        sid, start = item
        if sid in self.servers and self.plan.get(sid) == start:
            self._serve(sid, start)
            self.directory.refresh()


def simulate_scale(cfg: ScaleSettings, workspace: Any, blocks: int, inputs: list[np.ndarray],
                   reference: Callable[[np.ndarray], np.ndarray], *, seed: int = 0, flops_per_block: float = 1.0,
                   progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run the scale simulation (see the module docstring). ``workspace`` runs SpanTask s (a
    ``SpanWorkspace`` whose ``flops_per_block`` is ``flops_per_block``), ``inputs`` are the distinct
    inputs clients draw from, ``reference(x)`` is the unsplit model's answer."""
    if blocks < 1 or not inputs:
        raise UsageError(f"need blocks >= 1 and at least one input, got {blocks} and {len(inputs)}")
    wall0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    world = _build(cfg, workspace, blocks, inputs, rng, seed, flops_per_block)
    built_s = time.perf_counter() - wall0
    _run(world, cfg, progress)
    sim_s = time.perf_counter() - wall0 - built_s
    return _results(world, cfg, inputs, reference, built_s, sim_s)


@dataclass
class _World:
    sim: Simulator
    membership: _Membership
    clients: list[PacedClient]
    picks: dict[str, list[int]]  # client -> which distinct input each request sends
    crashes: list[Crash]


def _build(cfg: ScaleSettings, workspace, blocks, inputs, rng, seed, flops_per_block) -> _World:
    servers = make_scale_servers(cfg, rng)
    latency = cfg.latency()
    nodes = {s.id: SwarmServer(s.id, 0, 0) for s in servers}
    directory = NearestHosts(servers, blocks, latency, cfg.candidates)
    clients, picks = _clients(cfg, blocks, inputs, directory, latency, rng)
    site_of = {s.id: int(s.site.removeprefix("site")) for s in servers}
    site_of.update({c.node_id: int(c.site.removeprefix("site")) for c in clients})
    devices = {s.id: DeviceProfile(flops=s.rate * flops_per_block, up_bps=1e9, down_bps=1e9) for s in servers}
    network = SiteNetwork(site_of, latency, np.random.SeedSequence([seed, 1]))
    sim = Simulator(network, seed=seed, executor=InlineExecutor(workspace), devices=devices,
                    frames=FrameCodec(SIM_CLUSTER_KEY), stop_on=())
    sim.add_nodes([*nodes.values(), *clients])
    membership = _Membership(cfg, blocks, sim, {s.id: s for s in servers}, nodes, directory)
    membership.begin()
    crashes = crash_trace(cfg, [s.id for s in servers], rng)
    sim.schedule_faults(crashes)
    for ev in crashes:
        sim.loop.call_at(ev.time + cfg.detect_s, membership.crashed, ev.node)
    return _World(sim, membership, clients, picks, crashes)


def _clients(cfg, blocks, inputs, directory, latency, rng) -> tuple[list[PacedClient], dict[str, list[int]]]:
    per_client = max(1, int(cfg.duration_s / cfg.interval_s))
    lat = lambda a, b: float(latency[int(a.removeprefix("site")), int(b.removeprefix("site"))])  # noqa: E731
    clients, picks = [], {}
    for site in range(cfg.sites):
        placement, servers = directory.views[site]
        for j in range(cfg.clients_per_site):
            cid = f"client{site}.{j}"
            picks[cid] = rng.integers(len(inputs), size=per_client).tolist()
            clients.append(PacedClient(cid, placement, servers, blocks, [inputs[i] for i in picks[cid]],
                                       site=site_name(site), latency=lat, timeout_s=cfg.timeout_s, ban_s=cfg.ban_s,
                                       interval_s=cfg.interval_s, offset_s=float(rng.uniform(0, cfg.interval_s))))
    return clients, picks


def _run(world: _World, cfg: ScaleSettings, progress) -> None:
    """Run until every client has its answers (crashes stop at ``duration_s``; the tail drains)."""
    sim, horizon = world.sim, cfg.duration_s + 600.0
    step = cfg.duration_s / 20
    while not all(c.finished for c in world.clients) and sim.now < horizon:
        sim.run(until=sim.now + step)
        if progress is not None:
            progress(min(1.0, sim.now / cfg.duration_s))


def _results(world: _World, cfg: ScaleSettings, inputs, reference, built_s: float, sim_s: float) -> dict:
    expected = [np.asarray(reference(x)) for x in inputs]
    sent = sum(len(c.inputs) for c in world.clients)
    done = sum(len(c.outputs) for c in world.clients)
    equal = sum(_same(c.outputs[i], expected[world.picks[c.node_id][i]])
                for c in world.clients for i in c.outputs)
    latencies = [c.done_at[i] - c.sent_at[i] for c in world.clients for i in c.done_at]
    m = world.membership
    routed = m.directory.ever
    hit = sum(ev.node in routed for ev in world.crashes)
    return {"servers": cfg.servers, "sites": cfg.sites, "requests_sent": sent, "requests_completed": done,
            "completed_fraction": round(done / sent, 6) if sent else 1.0, "answers_equal": equal,
            "all_equal": equal == done == sent, "reroutes": sum(c.reroutes for c in world.clients),
            "longest_stall_s": round(max(c.longest_wait for c in world.clients), 4),
            "latency_mean_s": round(float(np.mean(latencies)), 4) if latencies else None,
            "latency_p99_s": round(float(np.quantile(latencies, 0.99)), 4) if latencies else None,
            "crashes": len(world.crashes), "crashes_of_routed_servers": hit, "servers_routed": len(routed),
            "migrations": m.migrations, "oscillations": m.oscillations, "replans": m.replans,
            "replan_ms_mean": round(1e3 * m.replan_s / max(1, m.replans), 2),
            "min_replicas_after_crashes": m.floor if m.replans else None, "replica_target": cfg.target,
            "virtual_s": round(world.sim.now, 2), "events": world.sim.loop.events_run,
            "build_wall_s": round(built_s, 2), "sim_wall_s": round(sim_s, 2)}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise: same dtype, same shape, same bytes."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
