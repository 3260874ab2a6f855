"""Topologies: node counts, connectivity, degree facts, seeded determinism."""

import numpy as np
import pytest

from meshlearn.errors import ConfigError, UsageError
from meshlearn.net.topology import TOPOLOGIES, Topology, fat_tree_hosts, make_topology

NODES = [f"n{i:02d}" for i in range(30)]
PARAMS = {
    "star": {},
    "ring": {},
    "k_hop_ring": {"k": 3},
    "erdos_renyi": {"p": 0.2},
    "barabasi_albert": {"m": 2},
    "random_geometric": {"radius": 0.35},
}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_generator_covers_all_nodes_and_is_connected(name):
    topo = make_topology(name, NODES, rng(), **PARAMS[name])
    assert topo.nodes == tuple(NODES)
    assert topo.is_connected()
    assert sum(topo.degree(n) for n in topo.nodes) == 2 * len(topo.edges)
    assert all(a < b for a, b in topo.edges)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_same_seed_same_topology(name):
    assert make_topology(name, NODES, rng(4), **PARAMS[name]) == make_topology(name, NODES, rng(4), **PARAMS[name])


@pytest.mark.parametrize("name", ["erdos_renyi", "barabasi_albert", "random_geometric"])
def test_different_seeds_differ(name):
    assert make_topology(name, NODES, rng(1), **PARAMS[name]) != make_topology(name, NODES, rng(2), **PARAMS[name])


def test_registry_has_every_generator():
    assert set(TOPOLOGIES.names()) == set(PARAMS) | {"fat_tree"}


def test_ring_and_k_hop_ring_degrees():
    ring = make_topology("ring", NODES, rng())
    assert all(ring.degree(n) == 2 for n in NODES) and len(ring.edges) == 30
    assert ring.has_edge("n29", "n00") and ring.has_edge("n00", "n29") and not ring.has_edge("n00", "n02")
    khop = make_topology("k_hop_ring", NODES, rng(), k=3)
    assert all(khop.degree(n) == 6 for n in NODES)
    assert khop.neighbors("n00") == ("n01", "n02", "n03", "n27", "n28", "n29")
    with pytest.raises(UsageError, match="2k < n"):
        make_topology("k_hop_ring", NODES[:6], rng(), k=3)


def test_star_degrees():
    topo = make_topology("star", NODES, rng(), center="n05")
    assert topo.degree("n05") == 29
    assert all(topo.degree(n) == 1 for n in NODES if n != "n05")
    assert make_topology("star", NODES, rng()).degree("n00") == 29
    with pytest.raises(UsageError, match="center"):
        make_topology("star", NODES, rng(), center="zz")


def test_barabasi_albert_edge_count_and_hubs():
    nodes = [f"v{i}" for i in range(500)]
    topo = make_topology("barabasi_albert", nodes, rng(3), m=3)
    assert len(topo.edges) == 3 * (500 - 3)
    assert min(topo.degree(n) for n in nodes) >= 3
    assert max(topo.degree(n) for n in nodes) > 30  # preferential attachment grows hubs


def test_erdos_renyi_extremes():
    full = make_topology("erdos_renyi", NODES, rng(), p=1.0)
    assert len(full.edges) == 30 * 29 // 2
    with pytest.raises(UsageError, match="raise p"):
        make_topology("erdos_renyi", NODES, rng(), p=0.01, max_tries=5)
    er = make_topology("erdos_renyi", [f"v{i}" for i in range(200)], rng(), p=0.1)
    assert abs(len(er.edges) / (200 * 199 / 2) - 0.1) < 0.01


def test_random_geometric_extremes():
    full = make_topology("random_geometric", NODES, rng(), radius=1.5)
    assert len(full.edges) == 30 * 29 // 2
    with pytest.raises(UsageError, match="raise radius"):
        make_topology("random_geometric", NODES, rng(), radius=0.01, max_tries=3)


def test_fat_tree_k4():
    hosts = [f"h{i}" for i in range(16)]
    topo = make_topology("fat_tree", hosts, rng(), k=4)
    switches = [n for n in topo.nodes if n not in hosts]
    assert fat_tree_hosts(4) == 16 and len(switches) == 20
    assert sum(s.startswith("core-") for s in switches) == 4
    assert all(topo.degree(h) == 1 for h in hosts)
    assert all(topo.degree(s) == 4 for s in switches)
    assert topo.neighbors("h0") == ("edge-0-0",) and topo.neighbors("h15") == ("edge-3-1",)
    assert topo.has_edge("agg-2-1", "core-3") and not topo.has_edge("agg-2-0", "core-3")
    assert topo.is_connected()
    assert make_topology("fat_tree", hosts, rng()) == topo  # k inferred from the host count


def test_fat_tree_wrong_host_count_names_the_required_count():
    with pytest.raises(UsageError, match="exactly 16 host"):
        make_topology("fat_tree", NODES, rng(), k=4)
    with pytest.raises(UsageError, match="even"):
        make_topology("fat_tree", NODES, rng())


def test_topology_validation():
    with pytest.raises(UsageError, match="sorted"):
        Topology(("a", "b"), frozenset({("b", "a")}))
    with pytest.raises(UsageError, match="not in the topology"):
        Topology(("a", "b"), frozenset({("a", "c")}))
    with pytest.raises(UsageError, match="unique"):
        Topology(("a", "a"), frozenset())
    topo = Topology.from_edges(["a", "b", "c"], [("b", "a"), ("a", "b")])
    assert topo.edges == frozenset({("a", "b")}) and not topo.is_connected()
    with pytest.raises(UsageError, match="unknown node"):
        topo.neighbors("z")


def test_make_topology_rejects_unknown_names_and_params():
    with pytest.raises(ConfigError) as info:
        make_topology("torus", NODES, rng())
    assert "ring" in info.value.choices
    with pytest.raises(ConfigError, match="topology.q") as info:
        make_topology("erdos_renyi", NODES, rng(), q=0.3)
    assert info.value.choices == ["p", "max_tries"]
    with pytest.raises(ConfigError, match="missing"):
        make_topology("erdos_renyi", NODES, rng())
