"""How a request crosses the swarm: the cheapest chain of servers over the blocks, and resuming it.

Pure functions of a view (no I/O, no clock): a client calls :func:`route` with the placement it
knows, the servers' sites and rates, the latency between sites and each server's queue, and gets a
chain of :class:`Hop` s, each running a contiguous run of blocks on one server. Costs, in seconds:

    latency(site of the previous hop (the client's for the first), site of the server)
    + blocks run there × (1 + queue) / (rate / span length)        the server's time per request
    + latency(site of the last server, the client's site)          the answer's way home

The search is Dijkstra over states (boundary, site): a hop may leave a server before the end of
its span (to switch to a faster or nearer one). A :class:`Journey` is one request's progress: it
holds the activation at the last boundary it reached, so when a server fails mid-request the
client bans it and routes again *from that boundary*, never from the start; it never trusts a
server twice in one request.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Callable

from meshlearn.errors import UsageError
from meshlearn.swarm.placement import Server

__all__ = ["Hop", "route", "Journey"]

Latency = Callable[[str, str], float]


@dataclass(frozen=True)
class Hop:
    """Run blocks ``[start, end)`` on ``server``."""

    server: str
    start: int
    end: int


def route(placement: dict[str, int], servers: dict[str, Server], blocks: int, *, site: str, latency: Latency,
          queue: dict[str, float] | None = None, banned: frozenset[str] | set[str] = frozenset(),
          begin: int = 0) -> list[Hop] | None:
    """The cheapest chain from boundary ``begin`` to the model's output for a client at ``site``,
    avoiding ``banned`` servers; None when some block has no usable host (wait for placement)."""
    if not 0 <= begin < blocks:
        raise UsageError(f"begin must be a boundary in [0, {blocks}), got {begin}")
    hosts = _hosts(placement, servers, blocks, banned)
    best: dict[tuple[int, str], float] = {(begin, site): 0.0}
    back: dict[tuple[int, str], tuple[tuple[int, str], Hop]] = {}
    frontier = [(0.0, begin, site)]
    while frontier:
        cost, b, where = heapq.heappop(frontier)
        if cost > best.get((b, where), float("inf")):
            continue
        if b == blocks:
            return _chain(back, (b, where), (begin, site))
        for hop, step in _hops(b, where, hosts, servers, blocks, latency, queue or {}):
            state = (hop.end, servers[hop.server].site)
            total = cost + step + (latency(state[1], site) if hop.end == blocks else 0.0)
            if total < best.get(state, float("inf")):
                best[state], back[state] = total, ((b, where), hop)
                heapq.heappush(frontier, (total, *state))
    return None


def _hosts(placement, servers, blocks, banned) -> list[list[str]]:
    """For each block, the live servers hosting it (sorted, so equal costs break ties the same way)."""
    out: list[list[str]] = [[] for _ in range(blocks)]
    for sid in sorted(placement):
        if sid in banned or sid not in servers:
            continue
        start = placement[sid]
        for b in range(start, min(blocks, start + servers[sid].span_len(blocks))):
            out[b].append(sid)
    return out


def _hops(b, where, hosts, servers, blocks, latency, queue):
    """Every hop that starts at boundary ``b``: a host of block b, running 1 .. rest-of-span blocks."""
    for sid in hosts[b]:
        server = servers[sid]
        per_block = server.span_len(blocks) * (1.0 + queue.get(sid, 0.0)) / server.rate
        end = b
        while end < blocks and sid in hosts[end]:
            end += 1
            yield Hop(sid, b, end), latency(where, server.site) + (end - b) * per_block


def _chain(back, state, origin) -> list[Hop]:
    """Walk the best predecessors back from ``state`` to ``origin`` (boundaries only grow: no cycles)."""
    hops = []
    while state != origin:
        state, hop = back[state]
        hops.append(hop)
    return hops[::-1]


@dataclass
class Journey:
    """One request's way through the swarm: where it is, what it holds, whom it no longer trusts."""

    blocks: int
    held: Any  # the activation at ``boundary`` (the input, at first)
    boundary: int = 0
    banned: set[str] = field(default_factory=set)
    hops: list[Hop] = field(default_factory=list)  # completed hops, in order
    reroutes: int = 0

    @property
    def done(self) -> bool:
        return self.boundary == self.blocks

    def completed(self, hop: Hop, activation: Any) -> None:
        """``hop`` answered: its output is what the request holds now."""
        if hop.start != self.boundary or not self.boundary < hop.end <= self.blocks:
            raise UsageError(f"hop {hop} does not continue from boundary {self.boundary}")
        self.held, self.boundary = activation, hop.end
        self.hops.append(hop)

    def failed(self, server: str) -> None:
        """``server`` died, timed out or answered garbage: never use it again for this request; the
        next route starts from ``boundary`` with ``held``."""
        self.banned.add(server)
        self.reroutes += 1

    def next_route(self, placement: dict[str, int], servers: dict[str, Server], *, site: str, latency: Latency,
                   queue: dict[str, float] | None = None) -> list[Hop] | None:
        return route(placement, servers, self.blocks, site=site, latency=latency, queue=queue,
                     banned=frozenset(self.banned), begin=self.boundary) if not self.done else []
