"""SWIM + Lifeguard in simulation: detection, refutation, joins, partitions, packet limits."""

from collections import Counter

import pytest

from meshlearn.errors import ConfigError
from meshlearn.net.link import LinkSpec
from meshlearn.overlay.simnet import crash_at, overlay_simulator
from meshlearn.overlay.swim.config import (SwimConfig, retransmit_limit, suspicion_bounds, suspicion_timeout,
                                           swim_preset)
from meshlearn.overlay.swim.node import ALL, SwimNode
from meshlearn.overlay.swim.packets import ALIVE, DEAD, SUSPECT
from meshlearn.overlay.swim.state import Roster


def cluster(n: int, *, seed: int = 0, link: LinkSpec | None = None, warm: bool = True, config=None, **kw):
    ids = [f"n{i:03d}" for i in range(n)]
    roster, events = Roster(ids), []
    nodes = [SwimNode(i, config, members=ALL if warm else (), seeds=() if warm else ids[:1], roster=roster,
                      on_event=lambda *e: events.append(e), **kw) for i in ids]
    sim = overlay_simulator(nodes, seed=seed, **({"link": link} if link else {}))
    return sim, nodes, events


def test_a_crashed_member_is_declared_dead_by_everyone_and_nobody_else_is():
    sim, nodes, events = cluster(20)
    crash_at(sim, "n005", 10.0)
    sim.run(until=60.0)
    survivors = [n for n in nodes if n.node_id != "n005"]
    assert all("n005" not in n.members() and "n005" in n.members(DEAD) for n in survivors)
    accused = {e[3] for e in events if e[2] in ("suspect", "dead")}
    assert accused == {"n005"}
    first = min(e[0] for e in events if e[2] == "suspect")
    assert 10.0 < first < 10.0 + 6 * SwimConfig().probe_interval_s


def test_members_join_through_a_seed_and_learn_everyone():
    sim, nodes, _ = cluster(12, warm=False)
    sim.run(until=20.0)
    assert all(len(n.members()) == 12 for n in nodes)


def test_a_falsely_suspected_member_refutes_and_is_never_declared_dead():
    sim, nodes, events = cluster(10)
    accuser = nodes[0]
    sim.run(until=5.0)
    accuser._apply(sim.context("n000"), (SUSPECT, "n007", 0, "n000"), "n000")
    sim.run(until=60.0)
    assert nodes[7].incarnation == 1 and nodes[7].stats["refutations"] == 1
    assert not any(e[2] == "dead" for e in events)
    assert all("n007" in n.members(ALIVE) for n in nodes)


def test_a_partition_heals_through_periodic_rejoin():
    config = swim_preset("local", rejoin_interval_s=10.0)
    sim, nodes, _ = cluster(12, config=config)
    left, right = [n.node_id for n in nodes[:6]], [n.node_id for n in nodes[6:]]
    sim.run(until=2.0)
    sim.network.partition([left, right])
    sim.run(until=60.0)
    assert all(len(n.members()) == 6 for n in nodes)  # each side declared the other dead
    sim.network.heal()
    sim.run(until=140.0)
    assert all(len(n.members()) == 12 for n in nodes)


def test_no_live_member_is_declared_dead_on_a_lossy_network():
    lossy = LinkSpec(latency_s=0.001, jitter_s=0.002, loss={"model": "bernoulli", "p": 0.05})
    sim, nodes, events = cluster(30, link=lossy, seed=3)
    sim.run(until=120.0)
    assert not [e for e in events if e[2] == "dead"]
    assert all(len(n.members()) == 30 for n in nodes)


def test_packets_stay_within_the_datagram_budget_and_user_broadcasts_get_through():
    sim, nodes, _ = cluster(16, config=SwimConfig(max_packet_bytes=400, reserved_user_bytes=120))
    sizes, received = [], Counter()
    for n in nodes:
        n.on_user = lambda origin, payload, me=n.node_id: received.update([me])
    original = sim._send

    def spy(src, dst, msg, reliable):
        nbytes = original(src, dst, msg, reliable)
        if not reliable:
            sizes.append(nbytes)
        return nbytes

    sim._send = spy
    sim.run(until=1.0)
    flood = nodes[0]
    for i in range(200):  # far more membership news than one packet can carry
        flood._queue(sim.context("n000"), (ALIVE, f"ghost{i:03d}", 1, ""))
    flood.broadcast(sim.context("n000"), b"x" * 40)
    sim.run(until=15.0)
    assert max(sizes) <= 400
    # the reserved room carries the broadcast through the flood; bounded retransmits reach most members,
    # not provably all (seeds 0-9: 0-2 of 15 missed, the same with and without the datagram replay stamp)
    assert set(received) <= {n.node_id for n in nodes[1:]} and len(received) >= 12


def test_stale_incarnations_and_unknown_packets_are_dropped_and_counted():
    sim, nodes, _ = cluster(4)
    sim.run(until=1.0)
    ctx = sim.context("n000")
    nodes[0]._apply(ctx, (ALIVE, "n002", 5, ""), "n001")
    nodes[0]._apply(ctx, (DEAD, "n002", 3, "n001"), "n001")
    nodes[0].on_message(ctx, "n001", object())
    assert nodes[0].stats["stale_updates"] == 1 and nodes[0].stats["unknown_packets"] == 1
    assert "n002" in nodes[0].members(ALIVE)


def test_lifeguard_formulas_match_memberlist():
    lan = SwimConfig()
    assert suspicion_bounds(lan, 1000) == pytest.approx((12.0, 72.0))
    assert suspicion_bounds(lan, 10_000) == pytest.approx((16.0, 96.0))
    assert suspicion_timeout(lan, 1000, 0) == pytest.approx(72.0)
    assert suspicion_timeout(lan, 1000, 1) < 72.0
    assert suspicion_timeout(lan, 1000, 2) == pytest.approx(12.0)
    assert (retransmit_limit(lan, 50), retransmit_limit(lan, 10_000)) == (8, 20)


def test_presets_and_bad_settings():
    assert swim_preset("wan").probe_interval_s == 5.0
    with pytest.raises(ConfigError, match="lan"):
        swim_preset("moon")
    with pytest.raises(ValueError, match="probe_timeout_s"):  # pydantic wraps the ConfigError
        SwimConfig(probe_timeout_s=2.0)
