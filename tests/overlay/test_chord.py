"""Chord: ring arithmetic, the converged state, the protocol converging to it, lookups, packets."""

from bisect import bisect_left

import numpy as np
import pytest

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.overlay.chord.node import (
    ChordNode,
    ChordSettings,
    bootstrap_ring,
    chord_id,
    in_half_open,
    in_open,
    ring_peers,
)
from meshlearn.overlay.chord.packets import (
    FailureNotice,
    FailureReport,
    FailureWalk,
    FindSuccessor,
    FoundSuccessor,
    GetNeighbors,
    Neighbors,
    Notify,
    Ping,
    Pong,
    Will,
)
from meshlearn.overlay.simnet import crash_at, overlay_simulator
from meshlearn.wire import Packet, decode_payload, encode_payload

BITS = 16


def true_successor(ids: list[int], key: int, bits: int = BITS) -> int:
    return ids[bisect_left(ids, key % (1 << bits)) % len(ids)]


# ----- ring arithmetic and identifiers ---------------------------------------------------------
def test_ring_intervals_wrap_and_treat_equal_ends_as_whole_ring():
    mask = 0xFF
    assert in_half_open(10, 5, 10, mask) and not in_half_open(5, 5, 10, mask)
    assert in_half_open(2, 250, 3, mask) and in_half_open(255, 250, 3, mask) and not in_half_open(100, 250, 3, mask)
    assert in_half_open(7, 7, 7, mask) and in_half_open(8, 7, 7, mask)  # (a, a] is everything
    assert in_open(6, 5, 10, mask) and not in_open(10, 5, 10, mask) and not in_open(5, 5, 10, mask)
    assert in_open(8, 7, 7, mask) and not in_open(7, 7, 7, mask)


def test_ids_are_stable_sha1_prefixes_and_collisions_are_refused():
    assert chord_id("n1") == chord_id("n1") < 2**32
    assert chord_id("n1", 8) == chord_id("n1") >> 24
    with pytest.raises(UsageError, match="same 4-bit id"):
        ring_peers([f"n{i}" for i in range(40)], bits=4)
    with pytest.raises(UsageError, match="bits"):
        chord_id("n1", 40)


def test_bootstrap_ring_matches_the_chord_definition():
    peers = ring_peers([f"n{i}" for i in range(40)], BITS)
    states = bootstrap_ring(peers, bits=BITS, successors=5)
    ring = sorted(peers)
    ids = [p[0] for p in ring]
    for k, (ident, name) in enumerate(ring):
        st = states[name]
        assert st.pred == ring[k - 1]
        assert st.succs == tuple(ring[(k + j) % len(ring)] for j in range(1, 6))
        for i, finger in enumerate(st.fingers):
            assert finger[0] == true_successor(ids, ident + 2**i)


def test_bootstrap_ring_of_tiny_rings():
    one = bootstrap_ring([(5, "a")], bits=8, successors=3)["a"]
    assert one.pred is None and one.succs == ((5, "a"),) and set(one.fingers) == {(5, "a")}
    two = bootstrap_ring([(5, "a"), (200, "b")], bits=8, successors=3)
    assert two["a"].succs == ((200, "b"),) and two["a"].pred == (200, "b")
    with pytest.raises(UsageError):
        bootstrap_ring([(5, "a"), (5, "b")], bits=8)


# ----- the protocol ----------------------------------------------------------------------------
def _converged(nodes, live_names, successors):
    want = bootstrap_ring(ring_peers(live_names, BITS), bits=BITS, successors=successors)
    return [n.node_id for n in nodes if n.node_id in want and n.state() != want[n.node_id]]


class LateChord(ChordNode):
    """Joins ``delay`` seconds after the run starts."""

    def __init__(self, name, delay, **kw):
        super().__init__(name, **kw)
        self.delay = delay

    def on_start(self, ctx):
        ctx.set_timer("late", self.delay)

    def _t_late(self, ctx):
        super().on_start(ctx)


@pytest.fixture(scope="module")
def joined_ring():
    """50 nodes joining through n0 one every 0.2 s, run until the ring is exactly the bootstrap state."""
    names = [f"n{i}" for i in range(50)]
    cfg = ChordSettings(bits=BITS, successors=4, stabilize_s=0.5, fix_fingers_s=0.1, check_predecessor_s=0.5)
    nodes = [LateChord(n, 0.2 * k, settings=cfg, bootstrap=None if n == "n0" else "n0") for k, n in enumerate(names)]
    sim = overlay_simulator(nodes, seed=3)
    t = 10.0
    while _converged(nodes, names, 4) and t < 120:
        sim.run(until=t)
        t += 5.0
    return sim, nodes, names, t


def test_join_and_stabilize_converge_to_the_bootstrap_state(joined_ring):
    sim, nodes, names, t = joined_ring
    assert _converged(nodes, names, 4) == []
    assert t < 120


def test_lookups_reach_the_true_successor(joined_ring):
    sim, nodes, names, _ = joined_ring
    ids = sorted(n.id for n in nodes)
    rng = np.random.default_rng(0)
    asks = []
    for _ in range(100):
        node = nodes[rng.integers(len(nodes))]
        key = int(rng.integers(1 << BITS))
        asks.append((node, key, node.lookup(sim.context(node.node_id), key)))
    sim.run(until=sim.loop.now + 1.0)
    for node, key, req in asks:
        succ, hops = node.lookups[req]
        assert succ[0] == true_successor(ids, key)
        assert hops <= BITS


def test_ring_repairs_after_crashes(joined_ring):
    sim, nodes, names, _ = joined_ring
    ring = sorted(ring_peers(names, BITS))
    victims = [ring[k][1] for k in (5, 6, 7, 20, 33)]  # three ring-adjacent nodes (r = 4 survives them)
    now = sim.loop.now
    for v in victims:
        crash_at(sim, v, now + 0.05)
    live = [n for n in names if n not in victims]
    sim.run(until=now + 30.0)
    assert _converged([n for n in nodes if n.node_id in live], live, 4) == []


# ----- packets ---------------------------------------------------------------------------------
PEER, OTHER = (0xDEADBEEF, "n42"), (7, "nœud-7")
PACKETS = [
    FindSuccessor(1, 2**32 - 1, PEER, 3),
    FoundSuccessor(9, 12, OTHER, 0),
    GetNeighbors(77),
    Neighbors(5, PEER, (PEER, OTHER)),
    Neighbors(6, None, ()),
    Notify(OTHER),
    Ping(3, 99),
    Pong(3),
    Will(4, (PEER, OTHER, (1, "x"))),
    FailureReport(PEER, 1, 7),
    FailureNotice(PEER, None),
    FailureNotice(PEER, OTHER),
    FailureWalk(PEER, OTHER, 10, 5, 8, 1, 2),
    FailureWalk(PEER, None, 10, 5, 0, 0, 0),
]


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: f"{type(p).__name__}")
def test_packets_round_trip_with_exact_sizes(packet):
    data = encode_payload(packet)
    assert packet.wire_size == len(data)
    assert 0x90 <= data[0] <= 0x9F
    assert decode_payload(data) == packet


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: f"{type(p).__name__}")
def test_malformed_packets_raise_protocol_errors(packet):
    data = packet.encode()
    with pytest.raises(ProtocolError):
        decode_payload(data[:-1])
    with pytest.raises(ProtocolError):
        decode_payload(data + b"\x00")
    with pytest.raises(ProtocolError):
        type(packet).decode(bytes([0x80]) + data[1:])


def test_bad_peer_encodings_are_rejected():
    good = Notify((5, "ab")).encode()
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_payload(good[:-2] + b"\xff\xfe")
    with pytest.raises(ProtocolError, match="empty name"):
        decode_payload(bytes([0x94, 0, 0, 0, 5, 0]))
    with pytest.raises(ProtocolError, match="missing"):
        decode_payload(bytes([0x94, 0, 0, 0, 0, 0]))


def test_packets_are_immutable_and_compare_by_type():
    ping = Ping(1, 2)
    with pytest.raises(AttributeError):
        ping.seq = 5
    assert ping != Pong(1) and GetNeighbors(1) != Pong(1) and Pong(1) == Pong(1)
    assert ping.seq == 1 and ping.sender_id == 2


def test_a_node_drops_packets_it_does_not_handle():
    class Alien(Packet):
        __slots__ = ()
        kind = "alien"

    node = ChordNode("n1", settings=ChordSettings(bits=BITS))
    sim = overlay_simulator([node], seed=0)
    sim.run(until=0.1)
    node.on_message(sim.context("n1"), "n2", Alien())
    assert node.dropped == 1
