"""Links: hand-computed timings for reliable and datagram transfers, FIFO queueing, give-up cap."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from meshlearn.net.link import MAX_ATTEMPTS, Link, LinkSpec

BW = 1e6  # bit/s
# mtu 1028 with 28 header bytes: 1000-byte payloads; 4500 bytes -> 4 x 1028 + 528 on the wire
WIRE = 4 * 1028 + 528
SER = WIRE * 8 / BW


def make_link(loss=None, **kw) -> Link:
    spec = LinkSpec(latency_s=0.01, bandwidth_bps=BW, mtu=1028, rto_s=0.2, loss=loss, **kw)
    return Link(spec, np.random.default_rng(0))


def test_lossless_reliable_transfer_matches_hand_computation():
    t = make_link().transmit(4500, now=1.0)
    assert t.packets == 5 and t.lost == 0 and t.retransmissions == 0 and t.delivered
    assert t.arrival == pytest.approx(1.0 + SER + 0.01)
    assert t.wire_bytes == WIRE


def test_each_loss_costs_rto_plus_its_serialization():
    # round 1 replays trace[0:5] (packets 1 and 3 lost), round 2 replays trace[5:7] (both arrive)
    t = make_link({"model": "trace", "pattern": [0, 1, 0, 1, 0, 0, 0]}).transmit(4500, now=0.0)
    assert (t.lost, t.retransmissions) == (2, 2)
    assert t.arrival == pytest.approx(SER + 0.01 + 2 * (0.2 + 1028 * 8 / BW))
    assert t.wire_bytes == WIRE + 2 * 1028


def test_packet_lost_twice_costs_twice():
    # last (528-byte) packet: lost in round 1 (trace[4]), lost again (trace[5]), arrives (trace[6])
    t = make_link({"model": "trace", "pattern": [0, 0, 0, 0, 1, 1, 0]}).transmit(4500, now=0.0)
    assert (t.lost, t.retransmissions) == (2, 2)
    assert t.arrival == pytest.approx(SER + 0.01 + 2 * (0.2 + 528 * 8 / BW))


def test_bandwidth_override():
    t = make_link().transmit(4500, now=0.0, bandwidth_bps=BW / 4)
    assert t.arrival == pytest.approx(4 * SER + 0.01)


def test_fifo_queue_second_transfer_waits_for_first():
    link = make_link()
    first = link.transmit(4500, now=0.0)
    second = link.transmit(4500, now=0.0)
    assert second.start == pytest.approx(SER)
    assert second.arrival == pytest.approx(first.arrival + SER)
    later = link.transmit(4500, now=5.0)  # the queue has drained by then
    assert later.arrival == pytest.approx(5.0 + SER + 0.01)


def test_retransmissions_occupy_the_queue_but_rto_waits_do_not():
    link = make_link({"model": "trace", "pattern": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]})
    link.transmit(4500, now=0.0)
    assert link.busy_until == pytest.approx((WIRE + 1028) * 8 / BW)


def test_total_loss_gives_up_instead_of_hanging():
    t = make_link({"model": "bernoulli", "p": 1.0}).transmit(4500, now=0.0)
    assert not t.delivered and math.isinf(t.arrival)
    assert t.lost == 5 * MAX_ATTEMPTS
    assert t.retransmissions == 5 * (MAX_ATTEMPTS - 1)


def test_unreliable_transmit_fails_on_any_loss():
    link = make_link({"model": "trace", "pattern": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]})
    lost = link.transmit(4500, now=0.0, reliable=False)
    ok = link.transmit(4500, now=0.0, reliable=False)
    assert (lost.delivered, lost.lost, lost.retransmissions) == (False, 1, 0)
    assert ok.delivered and ok.arrival == pytest.approx(2 * SER + 0.01)


def test_datagram_mask_matches_trace():
    pattern = [0, 1, 1, 0, 0, 0, 1]
    link = make_link({"model": "trace", "pattern": pattern})
    d = link.transmit_datagram(9500, now=0.0)  # 10 packets
    expected = ~np.resize(np.array(pattern, dtype=bool), 10)
    assert d.packets == 10 and d.mask.tolist() == expected.tolist()
    assert d.lost == 5 and not d.delivered
    assert d.arrival == pytest.approx((9 * 1028 + 528) * 8 / BW + 0.01)
    assert link.busy_until == pytest.approx(d.arrival - 0.01)


def test_jitter_is_uniform_in_range_and_seeded():
    def arrivals(seed):
        spec = LinkSpec(latency_s=0.01, bandwidth_bps=1e12, jitter_s=0.005)
        link = Link(spec, np.random.default_rng(seed))
        return np.array([link.transmit(100, now=10.0 * i).arrival - 10.0 * i for i in range(500)])

    a = arrivals(1)
    assert a.min() >= 0.01 and a.max() < 0.015 + 1e-6
    assert a.std() > 0.001
    assert np.array_equal(a, arrivals(1)) and not np.array_equal(a, arrivals(2))


def test_link_spec_rejects_bad_config():
    with pytest.raises(ValidationError, match="extra"):
        LinkSpec(latency=0.1)
    with pytest.raises(ValidationError, match="loss.model"):
        LinkSpec(loss={"model": "nope"})
    with pytest.raises(ValidationError, match="mtu"):
        LinkSpec(mtu=20)
    with pytest.raises(ValidationError):
        LinkSpec(bandwidth_bps=0)
