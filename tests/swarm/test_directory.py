"""The swarm directory: announcements taken, refused by reason, replaced by newer ones, expired."""

from __future__ import annotations

import pytest

from meshlearn.errors import UsageError
from meshlearn.swarm.directory import Announcement, Directory
from meshlearn.swarm.routing import route

DIGESTS = [f"d{i}" for i in range(4)]


def ann(server="s0", start=0, end=2, rate=10.0, seq=1, **kw):
    return {"server": server, "start": start, "end": end, "rate": rate, "seq": seq, "site": "A",
            "digests": DIGESTS[start:end], **kw}


def test_accepted_announcements_become_the_placement_and_the_routing_view():
    d = Directory(4, digests=DIGESTS)
    assert d.offer(ann("s0", 0, 2), 0.0) is None and d.offer(ann("s1", 2, 4, rate=5.0), 0.0) is None
    assert d.placement() == {"s0": 0, "s1": 2} and d.replicas() == [1, 1, 1, 1]
    servers = d.servers()
    assert servers["s1"].capacity == 2 and servers["s1"].rate == 10.0  # 5 req/s through a 2-block span
    hops = route(d.placement(), servers, 4, site="A", latency=lambda a, b: 0.0)
    assert [(h.server, h.start, h.end) for h in hops] == [("s0", 0, 2), ("s1", 2, 4)]


@pytest.mark.parametrize("bad, reason", [
    (ann(rate=float("nan")), "malformed"), (ann(rate=-1.0), "malformed"), (ann(rate=True), "malformed"),
    ({**ann(), "start": "0"}, "malformed"), ({"server": "s0"}, "malformed"), (ann(digests=None), "malformed"),
    (ann(start=2, end=6), "span"), (ann(start=2, end=2), "span"), (ann(digests=["d0"]), "span"),
    (ann(addr=7300), "malformed"), (ann(addr="x" * 300), "malformed"),
    (ann(digests=["d0", "zz"]), "digest"),  # a server announcing a block it does not hold
])
def test_bad_announcements_are_refused_and_counted_by_reason(bad, reason):
    d = Directory(4, digests=DIGESTS)
    assert d.offer(bad, 0.0) == reason
    assert d.rejected[reason] == 1 and d.placement() == {}


def test_a_forged_sender_and_replays_are_refused():
    d = Directory(4, digests=DIGESTS)
    assert d.offer(ann("s0", seq=5), 0.0, src="s9") == "forged"
    assert d.offer(ann("s0", seq=5), 0.0, src="s0") is None
    assert d.offer(ann("s0", 2, 4, seq=4), 0.1, src="s0") == "stale"  # the server itself never goes back
    assert d.offer(ann("s0", 2, 4, seq=4), 0.1) == "stale"  # a late relayed copy: ignored, not counted
    assert d.offer(ann("s0", 2, 4, seq=5), 0.1) == "duplicate"  # the same news by another way: not counted
    assert d.offer(ann("s0", 2, 4, seq=6), 0.2) is None and d.placement() == {"s0": 2}  # it moved
    assert dict(d.rejected) == {"forged": 1, "stale": 1}


def test_silent_servers_expire_and_a_replay_cannot_bring_a_dead_one_back():
    d = Directory(4, ttl_s=3.0)  # no digests known: spans only
    d.offer(ann("s0", seq=1), 0.0)
    d.offer(ann("s1", 2, 4, seq=1), 0.0)
    d.offer(ann("s1", 2, 4, seq=2), 2.0)
    assert d.expire(3.5) == ["s0"] and d.placement() == {"s1": 2}
    assert d.offer(ann("s0", seq=1), 3.6, src="s0") == "duplicate"  # the old announcement, replayed
    assert d.placement() == {"s1": 2}
    d.drop("s1")
    assert d.placement() == {} and d.offer(ann("s1", 2, 4, seq=3), 4.0) is None  # a newer one: back


def test_rows_for_status_and_bad_construction():
    d = Directory(4)
    d.offer(ann("s0"), 1.0)
    assert d.table(2.5) == [{"server": "s0", "blocks": "0:2", "rate": 10.0, "site": "A", "seq": 1, "age_s": 1.5}]
    assert Announcement.from_meta(ann()).to_meta() == {**ann(), "capacity": 0, "addr": ""}
    with pytest.raises(UsageError):
        Directory(4, digests=["x"])
    with pytest.raises(UsageError):
        Directory(0)


def test_joiners_are_in_the_view_but_not_routable():
    d = Directory(4, digests=DIGESTS)
    assert d.offer(ann("j0", 0, 0, capacity=2, digests=[]), 0.0) is None
    assert d.offer(ann("j1", 0, 0, capacity=9, digests=[]), 0.0) == "span"  # more blocks than the model has
    assert d.offer(ann("j2", 0, 0, capacity=2, digests=["d0"]), 0.0) == "span"  # holds nothing, yet claims digests
    assert d.placement() == {} and d.replicas() == [0] * 4
    assert d.joiners()["j0"].capacity == 2 and d.table(0.0)[0]["blocks"] == "joining"
