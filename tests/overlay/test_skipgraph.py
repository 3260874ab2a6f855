"""Skip Graph: the converged structure, protocol joins / leaves / repair reaching it, search, packets."""

import math

import numpy as np
import pytest

from meshlearn.errors import ProtocolError
from meshlearn.overlay.simnet import crash_at, overlay_simulator
from meshlearn.overlay.skipgraph.node import (
    Peer, SkipGraphNode, SkipGraphSettings, bootstrap_skipgraph, prefix_len, random_mvecs,
)
from meshlearn.overlay.skipgraph.packets import (
    FIND, INSERT, JOIN, LEFT, RIGHT, Ack, Adopt, Aggregate, Found, Linked, Ping, Pong, Route, SetNeighbor, Walk,
    WalkEnd,
)
from meshlearn.wire import decode_payload, encode_payload


def _members(n: int, seed: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng(seed)
    return [int(k) for k in rng.choice(10**6, size=n, replace=False)], random_mvecs(n, rng)


def _joining(n: int, seed: int, spacing: float, keepalive: float | None = 1.0) -> list[SkipGraphNode]:
    keys, mvecs = _members(n, seed)
    settings = SkipGraphSettings(keepalive_s=keepalive)
    return [SkipGraphNode(f"n{i}", k, m, introducer=None if i == 0 else "n0", join_delay_s=spacing * i,
                          settings=settings) for i, (k, m) in enumerate(zip(keys, mvecs))]


def _wrong(nodes: list[SkipGraphNode], *, leaves: bool = True) -> list[str]:
    """Members whose pointers differ from the converged structure over ``nodes``."""
    view = bootstrap_skipgraph([(x.me, x.mvec) for x in nodes])
    want = lambda k: (view.left[k], view.right[k], view.lefts[k], view.rights[k])  # noqa: E731
    cut = 4 if leaves else 2
    return [x.node_id for x in nodes if x.snapshot()[:cut] != want(x.key)[:cut]]


def test_bootstrap_levels_hold_the_nearest_members_sharing_each_prefix():
    keys, mvecs = _members(60, 1)
    view = bootstrap_skipgraph([(Peer(k, f"n{k}"), m) for k, m in zip(keys, mvecs)], leaf_size=3)
    mv = dict(zip(keys, mvecs))
    for k in keys:
        for lvl in range(view.levels(k)):
            same = [j for j in keys if j != k and prefix_len(mv[j], mv[k]) >= lvl]
            left = max((j for j in same if j < k), default=None)
            right = min((j for j in same if j > k), default=None)
            assert (view.left[k][lvl], view.right[k][lvl]) == (left, right)
        top = view.levels(k) - 1
        assert view.left[k][top] is None and view.right[k][top] is None  # alone at the top level
        assert all(view.left[k][lvl] or view.right[k][lvl] for lvl in range(top))
    order = sorted(keys)
    assert view.rights[order[0]] == tuple(order[1:4]) and view.lefts[order[5]] == tuple(order[2:5][::-1])


def test_sequential_protocol_joins_produce_exactly_the_converged_structure():
    nodes = _joining(50, 2, spacing=0.3)
    sim = overlay_simulator(nodes, seed=3)
    sim.run(until=0.3 * 50 + 1)
    assert all(x.joined for x in nodes)
    assert _wrong(nodes, leaves=False) == []  # level lists exact right after the joins
    sim.run(until=0.3 * 50 + 8)  # a few keep-alives refresh the leaf lists
    assert _wrong(nodes) == []


def test_concurrent_joins_converge_through_stabilization():
    nodes = _joining(40, 4, spacing=0.0005)  # joins overlap: interleaved lists at first
    sim = overlay_simulator(nodes, seed=4)
    sim.run(until=20)
    assert all(x.joined for x in nodes)
    assert _wrong(nodes) == []


def test_search_finds_every_key_in_logarithmic_hops():
    n = 2000
    rng = np.random.default_rng(5)
    mvecs = random_mvecs(n, rng)
    view = bootstrap_skipgraph([(Peer(3 * i, f"s{i}"), m) for i, m in enumerate(mvecs)])
    nodes = [SkipGraphNode(f"s{i}", 3 * i, m, settings=SkipGraphSettings(keepalive_s=None))
             for i, m in enumerate(mvecs)]
    for x in nodes:
        x.load(view)
    sim = overlay_simulator(nodes, seed=5)
    asks = [(nodes[a], int(b)) for a, b in rng.integers(0, n, size=(300, 2))]
    reqs = [(x, x.search(sim.context(x.node_id), 3 * b), b) for x, b in asks]
    missing = nodes[7].search(sim.context("s7"), 3 * 1234 + 1)  # no such key: ends next to its place
    sim.run(until=1)
    hops = [x.results[r][1] for x, r, _ in reqs]
    assert all(x.results[r][0].key == 3 * b for x, r, b in reqs)
    assert nodes[7].results[missing][0].key in (3 * 1234, 3 * 1235)
    assert np.mean(hops) <= math.log2(n) and max(hops) <= 3 * math.log2(n)


def test_repair_restores_the_level_lists_after_crashes():
    nodes = _joining(50, 6, spacing=0.2)
    sim = overlay_simulator(nodes, seed=6)
    sim.run(until=15)
    order = sorted(range(1, 50), key=lambda i: nodes[i].key)
    dead = {order[10], order[11], order[12], order[30], order[40]}  # three adjacent keys among them
    for i in dead:
        crash_at(sim, f"n{i}", 15.5)
    alive = [x for i, x in enumerate(nodes) if i not in dead]
    sim.run(until=16)
    assert _wrong(alive)  # not yet detected
    sim.run(until=30)
    assert _wrong(alive) == []
    reqs = [(x, x.search(sim.context(x.node_id), y.key), y.key) for x in alive[:10] for y in alive[::7]]
    sim.run(until=31)
    assert all(x.results[r][0].key == k for x, r, k in reqs)


def test_graceful_leaves_relink_neighbours_without_keepalive():
    nodes = _joining(40, 7, spacing=0.2, keepalive=None)
    sim = overlay_simulator(nodes, seed=7)
    sim.run(until=10)
    gone = [3, 11, 25, 26]
    for j, i in enumerate(gone):
        sim.loop.call_at(11 + 0.1 * j, lambda x: x.leave(sim.context(x.node_id)), nodes[i])
    sim.run(until=12)
    stay = [x for i, x in enumerate(nodes) if i not in gone]
    assert _wrong(stay, leaves=False) == []
    assert sum(nodes[i].sent["sg.set_neighbor"] for i in gone) <= 2 * sum(nodes[i].levels for i in gone)


def test_find_walk_reports_the_nearest_member_with_a_prefix():
    nodes = _joining(30, 8, spacing=0.2, keepalive=None)
    sim = overlay_simulator(nodes, seed=8)
    sim.run(until=7)
    x = nodes[5]
    reqs = {side: x.find(sim.context(x.node_id), side, 1, 0) for side in (LEFT, RIGHT)}
    sim.run(until=8)
    zeros = sorted(y.key for y in nodes if y.mvec >> 63 == 0 and y is not x)
    want = {LEFT: max((k for k in zeros if k < x.key), default=None),
            RIGHT: min((k for k in zeros if k > x.key), default=None)}
    got = {side: (x.results[r][0].key if x.results[r][0] else None) for side, r in reqs.items()}
    assert got == want


PEER = Peer(42, "node-42")
PACKETS = [
    Route(JOIN, 7, 3, 99, 2**63 + 5, PEER), Found(1, 2, PEER, 12345),
    Walk(INSERT, RIGHT, 4, 255, 1, 9, 2**64 - 1, None, PEER), Walk(FIND, LEFT, 1, 1, 0, 9, 0, 17, PEER),
    Linked(0, None, PEER, (PEER, Peer(1, "a")), ()), Linked(3, PEER, None), WalkEnd(FIND, LEFT, 2, 5, 77),
    SetNeighbor(2, RIGHT, None, 5), SetNeighbor(0, LEFT, PEER, None), Ping(3, 2, 0, 1, 4, 77),
    Pong(3, 99, (PEER,), (None, PEER)), Aggregate(4, 5, 1, 2**70 + 3, ((0, 10, 2**40), (12, 1, 2**39))),
    Ack(1, 4, 5), Adopt(9, 3),
]


@pytest.mark.parametrize("pkt", PACKETS, ids=lambda p: type(p).__name__)
def test_packets_round_trip_with_exact_wire_size(pkt):
    data = encode_payload(pkt)
    assert pkt.wire_size == len(data)
    back = decode_payload(data)
    assert type(back) is type(pkt)
    assert all(getattr(back, f) == getattr(pkt, f) for f in type(pkt).__slots__)


@pytest.mark.parametrize("pkt", PACKETS, ids=lambda p: type(p).__name__)
def test_malformed_packets_raise_protocol_errors(pkt):
    data = encode_payload(pkt)
    for bad in (data[:-1], data + b"\0", data[:1]):
        with pytest.raises(ProtocolError):
            decode_payload(bad)


def test_out_of_range_fields_raise_protocol_errors():
    with pytest.raises(ProtocolError, match="walk mode"):
        decode_payload(bytes([0xA2, 9]) + encode_payload(PACKETS[2])[2:])
    with pytest.raises(ProtocolError, match="flag"):
        decode_payload(bytes([0xA3, 0, 7]))
    with pytest.raises(ProtocolError, match="ack op"):
        decode_payload(bytes([0xA9, 8, 0, 0, 0, 1, 0, 0, 0, 1]))
    with pytest.raises(ProtocolError, match="runs"):
        decode_payload(encode_payload(PACKETS[11])[:-16] + bytes(15))
