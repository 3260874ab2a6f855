"""Topologies: who can talk to whom, as immutable data, and seeded generators for common shapes.

A ``Topology`` is an undirected simple graph over named nodes; edges are stored as sorted name
pairs. Generators live in ``TOPOLOGIES`` and are called as ``gen(nodes, rng, **params)``; every
random choice uses ``rng`` so the same seed gives the same graph. ``make_topology`` is the entry
point used by configs.
"""

from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from meshlearn.errors import ConfigError, UsageError
from meshlearn.registry import Registry

__all__ = [
    "Topology",
    "TOPOLOGIES",
    "make_topology",
    "star",
    "ring",
    "k_hop_ring",
    "erdos_renyi",
    "barabasi_albert",
    "random_geometric",
    "fat_tree",
    "fat_tree_hosts",
]

TopologyFactory = Callable[..., "Topology"]
TOPOLOGIES: Registry[TopologyFactory] = Registry("topologies")


@dataclass(frozen=True)
class Topology:
    """An undirected graph over named nodes; ``edges`` holds sorted ``(a, b)`` pairs, ``a < b``."""

    nodes: tuple[str, ...]
    edges: frozenset[tuple[str, str]]
    _adj: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(set(self.nodes)) != len(self.nodes):
            raise UsageError("topology node names must be unique")
        known = set(self.nodes)
        adj: dict[str, list[str]] = {n: [] for n in self.nodes}
        for a, b in self.edges:
            if a not in known or b not in known:
                raise UsageError(f"edge {(a, b)} names a node that is not in the topology")
            if not a < b:
                raise UsageError(f"edge {(a, b)} must be a sorted pair of two different nodes")
            adj[a].append(b)
            adj[b].append(a)
        order = {n: i for i, n in enumerate(self.nodes)}
        object.__setattr__(self, "_adj", {n: tuple(sorted(v, key=order.__getitem__)) for n, v in adj.items()})

    @classmethod
    def from_edges(cls, nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> "Topology":
        """Build from unordered pairs (duplicates and either orientation accepted)."""
        return cls(tuple(nodes), frozenset(_pair(a, b) for a, b in edges))

    def __contains__(self, node: object) -> bool:
        return node in self._adj

    def neighbors(self, node: str) -> tuple[str, ...]:
        """Neighbours of ``node``, in node order."""
        try:
            return self._adj[node]
        except KeyError:
            raise UsageError(f"unknown node {node!r}; the topology has {len(self.nodes)} nodes") from None

    def degree(self, node: str) -> int:
        return len(self.neighbors(node))

    def has_edge(self, a: str, b: str) -> bool:
        return a != b and _pair(a, b) in self.edges

    def is_connected(self) -> bool:
        """True when every node can reach every other (an empty graph counts as connected)."""
        if not self.nodes:
            return True
        seen, queue = {self.nodes[0]}, deque([self.nodes[0]])
        while queue:
            for nb in self._adj[queue.popleft()]:
                if nb not in seen:
                    seen.add(nb)
                    queue.append(nb)
        return len(seen) == len(self.nodes)


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _from_index_pairs(nodes: list[str], pairs: Iterable[tuple[int, int]]) -> Topology:
    return Topology.from_edges(nodes, ((nodes[i], nodes[j]) for i, j in pairs))


def _need(nodes: list[str], at_least: int, name: str) -> None:
    if len(nodes) < at_least:
        raise UsageError(f"{name} needs at least {at_least} nodes, got {len(nodes)}")


@TOPOLOGIES.register("star")
def star(nodes: list[str], rng: np.random.Generator, center: str | None = None) -> Topology:
    """Every node linked to ``center`` (default: the first node)."""
    _need(nodes, 1, "star")
    center = nodes[0] if center is None else center
    if center not in nodes:
        raise UsageError(f"star center {center!r} is not one of the nodes")
    return Topology.from_edges(nodes, ((center, n) for n in nodes if n != center))


@TOPOLOGIES.register("ring")
def ring(nodes: list[str], rng: np.random.Generator) -> Topology:
    """Each node linked to the next, the last to the first."""
    return k_hop_ring(nodes, rng, k=1) if len(nodes) >= 3 else _path(nodes)


def _path(nodes: list[str]) -> Topology:
    return Topology.from_edges(nodes, zip(nodes, nodes[1:]))


@TOPOLOGIES.register("k_hop_ring")
def k_hop_ring(nodes: list[str], rng: np.random.Generator, k: int = 1) -> Topology:
    """Ring where each node links to the ``k`` nearest on each side (degree ``2k``; needs n > 2k)."""
    n = len(nodes)
    if k < 1 or 2 * k >= n:
        raise UsageError(f"k_hop_ring needs 1 <= k and 2k < n nodes; got k={k}, n={n} (degree would be 2k)")
    return _from_index_pairs(nodes, ((i, (i + h) % n) for i in range(n) for h in range(1, k + 1)))


def _retry_connected(build: Callable[[], Topology], name: str, max_tries: int, hint: str) -> Topology:
    for _ in range(max_tries):
        topo = build()
        if topo.is_connected():
            return topo
    raise UsageError(f"{name}: no connected graph in {max_tries} tries; {hint}")


@TOPOLOGIES.register("erdos_renyi")
def erdos_renyi(nodes: list[str], rng: np.random.Generator, p: float, max_tries: int = 100) -> Topology:
    """G(n, p): each pair linked with probability ``p``; redrawn until connected."""
    if not 0.0 <= p <= 1.0:
        raise UsageError(f"erdos_renyi p must be in [0, 1], got {p}")

    def build() -> Topology:
        pairs = []
        for i in range(len(nodes) - 1):
            js = np.flatnonzero(rng.random(len(nodes) - i - 1) < p) + i + 1
            pairs.extend((i, int(j)) for j in js)
        return _from_index_pairs(nodes, pairs)

    return _retry_connected(build, "erdos_renyi", max_tries, "raise p (about ln(n)/n is the threshold)")


@TOPOLOGIES.register("barabasi_albert")
def barabasi_albert(nodes: list[str], rng: np.random.Generator, m: int = 2) -> Topology:
    """Preferential attachment: starts from a star on ``m+1`` nodes, each later node adds ``m`` edges.

    Edge count is ``m * (n - m)`` (same construction as networkx).
    """
    n = len(nodes)
    if not 1 <= m < n:
        raise UsageError(f"barabasi_albert needs 1 <= m < n nodes; got m={m}, n={n}")
    pairs = [(0, j) for j in range(1, m + 1)]
    ends = np.zeros(2 * m * (n - m), dtype=np.int64)  # endpoint list: degree-proportional urn
    ends[: 2 * m] = np.ravel(pairs)
    filled = 2 * m
    for new in range(m + 1, n):
        targets: set[int] = set()
        while len(targets) < m:
            targets.update(int(t) for t in ends[rng.integers(0, filled, m - len(targets))])
        for t in sorted(targets):
            pairs.append((t, new))
            ends[filled : filled + 2] = (t, new)
            filled += 2
    return _from_index_pairs(nodes, pairs)


@TOPOLOGIES.register("random_geometric")
def random_geometric(
    nodes: list[str], rng: np.random.Generator, radius: float, max_tries: int = 100
) -> Topology:
    """Nodes at uniform points of the unit square, linked within ``radius``; redrawn until connected."""
    if not radius > 0:
        raise UsageError(f"random_geometric radius must be > 0, got {radius}")

    def build() -> Topology:
        pos = rng.random((len(nodes), 2))
        pairs = []
        for i in range(len(nodes) - 1):
            d2 = ((pos[i + 1 :] - pos[i]) ** 2).sum(axis=1)
            pairs.extend((i, int(j)) for j in np.flatnonzero(d2 <= radius * radius) + i + 1)
        return _from_index_pairs(nodes, pairs)

    return _retry_connected(build, "random_geometric", max_tries, "raise radius")


def fat_tree_hosts(k: int) -> int:
    """Hosts of a k-ary fat tree: ``k**3 // 4``."""
    return k**3 // 4


@TOPOLOGIES.register("fat_tree")
def fat_tree(nodes: list[str], rng: np.random.Generator, k: int | None = None) -> Topology:
    """k-ary fat tree (k even) whose ``nodes`` are the ``k**3/4`` hosts; ``k`` defaults to the fitting one.

    Adds ``(k/2)**2`` core switches ``core-i`` and per pod ``p`` the switches ``agg-p-i`` and
    ``edge-p-i`` (``i < k/2``). Host ``h`` hangs off edge switch ``h // (k/2)`` in node order.
    """
    k = _fat_tree_k(len(nodes)) if k is None else k
    if k < 2 or k % 2:
        raise UsageError(f"fat_tree k must be an even number >= 2, got {k}")
    if len(nodes) != fat_tree_hosts(k):
        raise UsageError(f"fat_tree k={k} needs exactly {fat_tree_hosts(k)} host nodes, got {len(nodes)}")
    half = k // 2
    core = [f"core-{i}" for i in range(half * half)]
    agg = [[f"agg-{p}-{i}" for i in range(half)] for p in range(k)]
    edge = [[f"edge-{p}-{i}" for i in range(half)] for p in range(k)]
    switches = core + [s for p in range(k) for s in agg[p] + edge[p]]
    clash = set(switches) & set(nodes)
    if clash:
        raise UsageError(f"fat_tree host names clash with switch names: {sorted(clash)[:5]}")
    links = [(nodes[h], edge[h // (half * half)][(h // half) % half]) for h in range(len(nodes))]
    for p in range(k):
        links += [(e, a) for e in edge[p] for a in agg[p]]
        links += [(agg[p][i], core[i * half + j]) for i in range(half) for j in range(half)]
    return Topology.from_edges(list(nodes) + switches, links)


def _fat_tree_k(n_hosts: int) -> int:
    k = round((4 * n_hosts) ** (1 / 3))
    if fat_tree_hosts(k) != n_hosts or k % 2:
        raise UsageError(f"fat_tree needs k**3/4 hosts for an even k (16, 54, 128, ...), got {n_hosts}")
    return k


def make_topology(name: str, nodes: Iterable[str], rng: np.random.Generator, **params) -> Topology:
    """Build the registered topology ``name`` over ``nodes``; unknown parameters raise ConfigError."""
    if name not in TOPOLOGIES.names():
        raise ConfigError("topology.name", f"unknown topology {name!r}", TOPOLOGIES.names())
    factory = TOPOLOGIES.get(name)
    signature = inspect.signature(factory)
    valid = list(signature.parameters)[2:]
    for key in params:
        if key not in valid:
            raise ConfigError(f"topology.{key}", f"unknown parameter for {name}", valid)
    nodes = list(nodes)
    try:
        signature.bind(nodes, rng, **params)
    except TypeError as exc:
        raise ConfigError("topology", f"{name}: {exc}", valid) from None
    return factory(nodes, rng, **params)
