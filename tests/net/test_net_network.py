"""Network: per-pair links, seeded independently of call order, partitions, device limits, counters."""

import math

import numpy as np
import pytest

from meshlearn.errors import UsageError
from meshlearn.net.devices import DeviceProfile
from meshlearn.net.link import LinkSpec
from meshlearn.net.network import Network
from meshlearn.net.topology import Topology

LOSSY = LinkSpec(latency_s=0.01, bandwidth_bps=1e7, jitter_s=0.01, loss={"model": "bernoulli", "p": 0.2})
RING = Topology.from_edges("abcd", [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")])


def net(seed: int = 42, topology=None, link=LOSSY, devices=None, **kw) -> Network:
    return Network(topology, link, devices or {}, np.random.SeedSequence(seed), **kw)


def sends(network: Network, pairs) -> dict:
    return {pair: [network.transmit(*pair, nbytes=50_000, now=float(t)) for t in range(5)] for pair in pairs}


def test_link_randomness_does_not_depend_on_call_order():
    pairs = [("a", "b"), ("c", "d"), ("b", "a")]
    forward, backward = sends(net(), pairs), sends(net(), pairs[::-1])
    assert forward == backward
    assert forward[("a", "b")] != forward[("b", "a")]  # each direction has its own stream
    assert sum(t.retransmissions for t in forward[("a", "b")]) > 0


def test_same_seed_same_transfers_other_seed_differs():
    pairs = [("a", "b")]
    assert sends(net(1), pairs) == sends(net(1), pairs)
    assert sends(net(1), pairs) != sends(net(2), pairs)


def test_spawned_children_get_different_links():
    a, b = np.random.SeedSequence(7).spawn(2)
    na, nb = Network(None, LOSSY, {}, a), Network(None, LOSSY, {}, b)
    assert sends(na, [("a", "b")]) != sends(nb, [("a", "b")])


def test_topology_edges_and_partitions_gate_delivery():
    network = net(topology=RING, link=LinkSpec())
    assert network.transmit("a", "b", 100, 0.0) is not None
    assert network.transmit("a", "c", 100, 0.0) is None  # not neighbours
    assert network.transmit_datagram("a", "c", 100, 0.0) is None
    network.partition([["a", "d"]])  # b, c: the implicit second group
    assert network.transmit("a", "b", 100, 0.0) is None
    assert network.transmit("a", "d", 100, 0.0) is not None
    assert network.transmit("b", "c", 100, 0.0) is not None
    network.heal()
    assert network.transmit("a", "b", 100, 0.0) is not None
    with pytest.raises(UsageError, match="unknown node"):
        network.transmit("a", "z", 100, 0.0)
    with pytest.raises(UsageError, match="itself"):
        network.transmit("a", "a", 100, 0.0)
    with pytest.raises(UsageError, match="two partition groups"):
        network.partition([["a"], ["a", "b"]])
    with pytest.raises(UsageError, match="unknown node"):
        Network(RING, LinkSpec(), {}, np.random.SeedSequence(0), link_overrides={("a", "q"): LinkSpec()})


def test_effective_bandwidth_is_min_of_link_and_devices():
    devices = {"a": DeviceProfile(1e9, up_bps=1e6, down_bps=1e9), "b": DeviceProfile(1e9, 1e9, down_bps=5e5)}
    network = net(link=LinkSpec(latency_s=0.0, bandwidth_bps=1e8, mtu=1028), devices=devices)
    assert network.bandwidth("a", "b") == 5e5
    assert network.bandwidth("b", "a") == 1e8  # b up 1e9, a down 1e9: the link limits
    assert network.bandwidth("a", "x") == 1e6  # unknown device: no limit from it
    t = network.transmit("a", "b", 1000, now=0.0)
    assert t.arrival == pytest.approx(1028 * 8 / 5e5)


def test_byte_counters_count_only_delivered_bytes():
    dead = LinkSpec(loss={"model": "bernoulli", "p": 1.0})
    half = LinkSpec(mtu=1028, loss={"model": "trace", "pattern": [0, 1]})
    network = net(link=LinkSpec(), link_overrides={("c", "a"): dead, ("a", "d"): half})
    network.transmit("a", "b", 1000, 0.0)
    assert network.transmit("a", "c", 10, 0.0).delivered  # overrides are directed: a → c is fine
    failed = network.transmit("c", "a", 1000, 0.0)
    assert not failed.delivered and math.isinf(failed.arrival)
    d = network.transmit_datagram("a", "d", 3500, 0.0)  # 1000, 1000, 1000, 500: 2nd and 4th lost
    assert d.mask.tolist() == [True, False, True, False]
    assert network.bytes_sent == {"a": 4510, "c": 1000}
    assert network.bytes_received == {"b": 1000, "c": 10, "a": 0, "d": 2000}
    assert network.wire_bytes_sent["a"] == 1000 + 28 + 10 + 28 + 3500 + 4 * 28


def test_links_are_reused_so_the_queue_persists():
    network = net(link=LinkSpec(latency_s=0.0, bandwidth_bps=8e3, mtu=1028))
    first = network.transmit("a", "b", 1000, 0.0)
    second = network.transmit("a", "b", 1000, 0.0)
    other = network.transmit("b", "a", 1000, 0.0)  # reverse direction: its own queue
    assert first.arrival == pytest.approx(1.028)
    assert second.arrival == pytest.approx(2.056)
    assert other.arrival == pytest.approx(1.028)


# ----- sender-scoped links and the scalar datagram path (overlays of thousands of nodes) -----

def test_sender_scope_keeps_one_link_per_sending_node():
    network = net(link_scope="sender")
    for dst in "bcd":
        network.datagram_arrival("a", dst, 100, 0.0)
    network.datagram_arrival("b", "a", 100, 0.0)
    assert set(network.links) == {"a", "b"}


def test_sender_scope_rejects_pair_overrides_and_unknown_scopes():
    with pytest.raises(UsageError, match="link_scope='pair'"):
        net(link_scope="sender", link_overrides={("a", "b"): LOSSY})
    with pytest.raises(UsageError, match="link_scope"):
        net(link_scope="node")


def test_datagram_arrival_loses_the_configured_fraction_and_counts_bytes():
    network = net(link=LinkSpec(latency_s=0.01, loss={"model": "bernoulli", "p": 0.3}), link_scope="sender")
    arrivals = [network.datagram_arrival("a", "b", 100, float(t)) for t in range(4000)]
    lost = sum(a is None for a in arrivals)
    assert 0.27 < lost / 4000 < 0.33
    assert all(a >= t + 0.01 for t, a in enumerate(arrivals) if a is not None)
    assert network.bytes_sent["a"] == 400_000
    assert network.bytes_received["b"] == 100 * (4000 - lost)


def test_datagram_arrival_matches_transmit_datagram_for_one_packet():
    fast, slow = net(), net()
    for t in range(200):
        transfer = slow.transmit_datagram("a", "b", 300, float(t))
        expected = transfer.arrival if transfer.delivered else None
        assert fast.datagram_arrival("a", "b", 300, float(t)) == expected
    assert fast.wire_bytes_sent == slow.wire_bytes_sent and fast.bytes_received == slow.bytes_received


def test_datagram_arrival_is_none_when_unreachable_and_handles_multi_packet_messages():
    network = net(topology=RING, link=LinkSpec())
    assert network.datagram_arrival("a", "c", 100, 0.0) is None
    assert network.datagram_arrival("a", "b", 5_000, 0.0) is not None  # 4 packets, no loss
