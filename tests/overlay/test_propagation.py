"""Failure-information propagation: the estimate, the three arms on a small ring, the experiment."""

import pytest

from meshlearn.overlay.chord.node import bootstrap_ring, ring_peers
from meshlearn.overlay.chord.propagation import ARMS, PropagationNode, estimate_regions, estimated_targets
from meshlearn.overlay.chord.sim import PropagationSettings, distance_bucket, simulate_propagation
from meshlearn.overlay.simnet import crash_at, overlay_simulator

BITS, R = 32, 8


def holders_of(states, name):
    """Names whose converged routing state points to ``name`` (its true backpointers)."""
    out = set()
    for other, st in states.items():
        pointers = {p[1] for p in (st.pred, *st.succs, *st.fingers) if p is not None}
        if other != name and name in pointers:
            out.add(other)
    return out


@pytest.fixture(scope="module")
def ring():
    peers = sorted(ring_peers([f"n{i}" for i in range(300)], BITS))
    return peers, bootstrap_ring(peers, bits=BITS, successors=R)


def small_sim(ring, arm, **kw):
    peers, states = ring
    s = PropagationSettings(arm=arm, nodes=len(peers), successors=R, duration_s=30, warmup_s=1, drain_s=5, **kw)
    nodes = [PropagationNode(name, settings=s, ring_id=ident, state=states[name]) for ident, name in peers]
    return overlay_simulator(nodes, seed=1), {n.node_id: n for n in nodes}


# ----- the estimate ----------------------------------------------------------------------------
def test_exact_predecessor_gives_the_exact_backpointer_set(ring):
    peers, states = ring
    mask = (1 << BITS) - 1
    for k in (0, 1, 57, 150, 299):
        fid, fname = peers[k]
        gap = (fid - peers[k - 1][0]) & mask
        live = [p[0] for p in peers if p[0] != fid]
        targets = estimated_targets(live, fid, estimate_regions(fid, gap, BITS, R), BITS)
        truth = {dict((n, i) for i, n in peers)[n] for n in holders_of(states, fname)}
        assert targets == truth  # recall = precision = 1 for an adjacent detector


def test_an_adjacent_detector_knows_pred_f_exactly_and_a_far_one_guesses(ring):
    peers, states = ring
    mask = (1 << BITS) - 1
    f, pred_f, pred2, succ_f = peers[100], peers[99], peers[98], peers[101]
    s = PropagationSettings(arm="stateless", nodes=300)
    near = PropagationNode(pred2[1], settings=s, ring_id=pred2[0])
    near.install(states[pred2[1]])
    assert near.estimate_gap(f, 0.0) == ((f[0] - pred_f[0]) & mask, True, succ_f)
    after = PropagationNode(succ_f[1], settings=s, ring_id=succ_f[0])
    after.install(states[succ_f[1]])
    gap, exact, known_succ = after.estimate_gap(f, 0.0)
    assert not exact and known_succ == succ_f and gap > 0


def test_regions_merge_and_cover_pred_f():
    regions = estimate_regions(1000, 40, 16, 4)
    # offsets [2^i, 2^i + 40) overlap up to i = 6: [1, 104) is one region; i = 7 .. 15 stay apart
    assert regions[0] == (999, 1000 - 104, 4)
    assert regions[1] == ((1000 - 128) & 0xFFFF, (1000 - 168) & 0xFFFF, 0)
    assert all(budget == 0 for _, _, budget in regions[1:])
    assert len(regions) == 1 + (16 - 7)


def test_distance_buckets():
    assert [distance_bucket(d, 1000, 8) for d in (1, 2, 8, 9, 64, 65, 1024, 1025, 999)] == [
        "pred(f)", "2..8", "2..8", "9..64", "9..64", "65..1024", "65..1024", ">1024", "succ(f)"]


# ----- keep-alive schedule ---------------------------------------------------------------------
def test_stateless_probes_far_fingers_less_often(ring):
    sim, nodes = small_sim(ring, "stateless", max_period_s=4.0)
    sim.run(until=0.01)
    node = nodes["n5"]
    near = {p[1] for p in node.succs} | {node.pred[1]}
    every = {name: e[1] for name, e in node.watch.items()}
    assert all(every[n] == 1 for n in near)
    far = sorted((every[f[1]], i) for i, f in enumerate(node.fingers) if f[1] not in near)
    assert [e for e, _ in far] == sorted(min(4, 2**k) for k in range(len(far)))
    assert len(every) == len({p[1] for p in node.fingers} | near)  # one entry per distinct peer

    sim_b, nodes_b = small_sim(ring, "stateful")
    sim_b.run(until=0.01)
    assert {e[1] for e in nodes_b["n5"].watch.values()} == {1}


# ----- the arms on a 300-node ring -------------------------------------------------------------
def crash_and_watch(ring, arm, until, forced_detector=None, victim_index=100, **kw):
    """Crash one node at t = 2.3; optionally make ``forced_detector`` (a name) detect it at once."""
    peers, states = ring
    sim, nodes = small_sim(ring, arm, **kw)
    f = peers[victim_index]
    crash_at(sim, f[1], 2.3)
    if forced_detector is not None:
        node = nodes[forced_detector]
        sim.loop.call_at(2.301, lambda _: node._detect(sim.context(node.node_id), f))
    sim.run(until=2.3 + until)
    holders = holders_of(states, f[1])
    detectors = {r["node"] for r in sim.sink.rows if r["key"] == "prop.detect" and r["value"] == f[0]}
    learned = {r["node"]: r["t_sim"] for r in sim.sink.rows if r["key"] == "prop.learn" and r["value"] == f[0]}
    return sim, nodes, f, holders, detectors, learned


@pytest.mark.parametrize("arm", ["stateless", "stateful"])
def test_notifications_from_an_adjacent_detector_reach_every_backpointer(ring, arm):
    pred_f = ring[0][99][1]
    sim, nodes, f, holders, detectors, learned = crash_and_watch(ring, arm, 0.1, forced_detector=pred_f)
    assert set(learned) == holders  # all within 0.1 s of the crash: told, not detecting it themselves
    assert detectors <= {pred_f} | holders and len(detectors) < 5
    assert all(f[1] not in nodes[h].watch for h in holders)
    assert sum(n.n_notify for n in nodes.values()) > 0


def test_a_far_detector_misses_some_backpointers_which_then_detect_by_themselves(ring):
    peers, states = ring
    far = next(n for n in holders_of(states, peers[100][1]) if peers[100] not in states[n].succs
               and states[n].pred != peers[100])
    sim, nodes, f, holders, detectors, learned = crash_and_watch(ring, "stateless", 5.0, forced_detector=far,
                                                                 max_period_s=4.0)
    assert set(learned) == holders  # eventually: by the estimate or by their own (slower) probes
    assert detectors - {far}  # some were missed by the estimate and found f themselves
    est = nodes[far].estimates[0]
    assert est[1] == f[0] and est[3] is False  # the far detector did not know pred(f)


def test_baseline_holders_detect_by_themselves(ring):
    sim, nodes, f, holders, detectors, learned = crash_and_watch(ring, "baseline", 1.6)
    assert set(learned) == holders == detectors
    assert sum(n.n_notify for n in nodes.values()) == 0


def test_stateful_wills_list_the_true_backpointers(ring):
    peers, states = ring
    sim, nodes = small_sim(ring, "stateful")
    sim.run(until=3.0)
    f, succ_f = peers[100], peers[101]
    assert {p[1] for p in nodes[succ_f[1]].wills[f[1]][1]} == holders_of(states, f[1])
    assert nodes[f[1]].n_will > 0


def test_replacement_fingers_point_to_the_successor_of_the_failed_node(ring):
    peers, states = ring
    sim, nodes, f, holders, _, _ = crash_and_watch(ring, "stateless", 0.2, forced_detector=ring[0][99][1])
    live = [p for p in peers if p != f]
    want = bootstrap_ring(live, bits=BITS, successors=R)
    for h in holders:
        assert nodes[h].fingers == list(want[h].fingers)


# ----- the experiment --------------------------------------------------------------------------
def small_settings(arm):
    return PropagationSettings(arm=arm, nodes=200, duration_s=12, warmup_s=2, drain_s=5, churn_per_min=0.3)


@pytest.fixture(scope="module")
def results():
    return {arm: simulate_propagation(small_settings(arm), seed=4) for arm in ARMS}


def test_simulation_reports_every_failure(results):
    for arm, r in results.items():
        assert r["arm"] == arm and r["failures"] >= 3
        assert r["failures_detected"] == r["failures"] and r["repair_incomplete"] == 0
        assert 0.5 <= r["detection_delay_s"]["mean"] <= 1.5
        assert len(r["rows"]) == r["failures"]
        assert {"detection_delay_s", "repair_delay_s", "failure_check_msgs_per_node_s", "estimate_by_distance",
                "notify_msgs_per_failure", "first_detector_by_distance"} <= set(r)
    same = [[row["node"] for row in r["rows"]] for r in results.values()]
    assert same[0] == same[1] == same[2]  # the crash schedule does not depend on the arm


def test_message_accounting_separates_the_arms(results):
    a, b, c = (results[arm] for arm in ARMS)
    assert a["check_msgs_per_node_s"] == pytest.approx(b["check_msgs_per_node_s"], rel=0.02)
    assert c["check_msgs_per_node_s"] < 0.9 * b["check_msgs_per_node_s"]
    assert b["maintenance_msgs_per_node_s"] > 0 == a["maintenance_msgs_per_node_s"] == c["maintenance_msgs_per_node_s"]
    assert a["notify_msgs_per_failure"] == 0 < b["notify_msgs_per_failure"]
    assert b["will_recall"] == pytest.approx(1.0)


def test_same_seed_same_result(results):
    again = simulate_propagation(small_settings("stateless"), seed=4)
    first = dict(results["stateless"])
    first.pop("wall_s"), again.pop("wall_s")
    assert again == first


def test_settings_are_checked():
    with pytest.raises(ValueError, match="probe_timeout_s"):
        PropagationSettings(probe_timeout_s=1.0, near_period_s=1.0)
    with pytest.raises(ValueError, match="extra"):
        PropagationSettings(bogus=1)
    with pytest.raises(ValueError):
        PropagationSettings(arm="gossip")
    assert all(field.description for field in PropagationSettings.model_fields.values())
