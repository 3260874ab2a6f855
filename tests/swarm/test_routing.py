"""Routing a request over the blocks, and resuming it after a server fails."""

from __future__ import annotations

import pytest

from meshlearn.errors import UsageError
from meshlearn.swarm.placement import Server
from meshlearn.swarm.routing import Hop, Journey, route


def _lat(a: str, b: str) -> float:
    return 0.001 if a == b else 0.050  # 1 ms inside a site, 50 ms between sites


SERVERS = {"a1": Server("a1", 10.0, 2, "A"), "a2": Server("a2", 10.0, 2, "A"),
           "b1": Server("b1", 10.0, 4, "B"), "b2": Server("b2", 12.0, 2, "B")}
PLACEMENT = {"a1": 0, "a2": 2, "b1": 0, "b2": 2}  # A: a1 [0,2) a2 [2,4); B: b1 [0,4) b2 [2,4)


def _covers(hops, begin, blocks):
    assert hops[0].start == begin and hops[-1].end == blocks
    assert all(x.end == y.start for x, y in zip(hops, hops[1:]))


def test_a_client_stays_in_its_site_when_that_is_cheapest():
    hops = route(PLACEMENT, SERVERS, 4, site="A", latency=_lat)
    _covers(hops, 0, 4)
    assert [h.server for h in hops] == ["a1", "a2"]


def test_load_and_site_change_the_chain():
    # from B: a1's fast first half is worth one crossing, the answer comes home from b2 (0.834 s vs 0.901 s)
    assert [h.server for h in route(PLACEMENT, SERVERS, 4, site="B", latency=_lat)] == ["a1", "b2"]
    queued = route(PLACEMENT, SERVERS, 4, site="A", latency=_lat, queue={"a2": 50.0})
    assert queued[-1].server != "a2"


def test_banned_and_dead_servers_are_routed_around_and_no_host_means_no_route():
    hops = route(PLACEMENT, SERVERS, 4, site="A", latency=_lat, banned={"a1"})
    assert "a1" not in {h.server for h in hops}
    _covers(hops, 0, 4)
    assert route(PLACEMENT, SERVERS, 4, site="A", latency=_lat, banned={"a1", "b1"}) is None
    with pytest.raises(UsageError):
        route(PLACEMENT, SERVERS, 4, site="A", latency=_lat, begin=4)


def test_a_journey_resumes_from_the_last_completed_block_after_a_failure():
    j = Journey(blocks=4, held="x0")
    first = j.next_route(PLACEMENT, SERVERS, site="A", latency=_lat)
    j.completed(first[0], "x2")  # a1 ran blocks 0-1
    j.failed("a2")  # a2 dies while running blocks 2-3
    again = j.next_route(PLACEMENT, SERVERS, site="A", latency=_lat)
    assert again[0].start == 2 and again[0].server in {"b1", "b2"}  # from boundary 2, with x2 in hand
    j.completed(again[0], "y")
    assert j.done and j.held == "y" and j.reroutes == 1 and j.next_route(PLACEMENT, SERVERS, site="A",
                                                                          latency=_lat) == []
    with pytest.raises(UsageError):
        j.completed(Hop("a1", 0, 2), "late answer")  # an answer that does not continue the request
