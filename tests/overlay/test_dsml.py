"""DSML aggregation: hierarchy from the skip graph, fail-over without double counting, exact splits."""

import numpy as np
import pytest
from pydantic import ValidationError

from meshlearn.overlay.dsml.node import UNIT, DsmlNode, DsmlTiming, dsml_height, expand_runs, runs_of
from meshlearn.overlay.dsml.sim import DsmlSettings, dsml_parents, measure_maintenance, simulate_dsml
from meshlearn.overlay.simnet import crash_at, overlay_simulator
from meshlearn.overlay.skipgraph.node import Peer, bootstrap_skipgraph, random_mvecs


def _network(n: int, mode: str, seed: int = 0, **timing):
    mvecs = random_mvecs(n, np.random.default_rng(seed))
    parents, root = dsml_parents(list(range(n)), dict(enumerate(mvecs)))
    t = DsmlTiming(mode=mode, rounds=1, first_round_s=1.0, **timing)
    nodes = [DsmlNode(f"m{k:03d}", k, mvecs[k], t, flat_root=f"m{root:03d}") for k in range(n)]
    view = bootstrap_skipgraph([(x.me, x.mvec) for x in nodes])
    for x in nodes:
        x.load(view)
    return nodes, parents, root, overlay_simulator(nodes, seed=seed)


def _children(parents: dict[int, list[int]], of: int) -> list[int]:
    return [k for k, ps in parents.items() if ps and ps[0] == of]


def _ancestors(parents: dict[int, list[int]], k: int) -> set[int]:
    seen, todo = set(), list(parents[k])
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += parents[p]
    return seen


def _audit(nodes, root: int):
    """(delivered weight by leaf, exact?) of round 1 at the root."""
    tally = nodes[root].tallies[1]
    truth = sum(w * nodes[k].values[1] for k, w in tally.weights.items())
    return tally, tally.total == truth


def test_find_walks_discover_the_converged_hierarchy():
    nodes, parents, root, sim = _network(300, "failover")
    sim.run(until=1.2)
    assert {x.key: [p.key for p in x.rnd.parents] for x in nodes} == parents
    assert [x.key for x in nodes if x.rnd.is_root] == [root]
    heights = {x.key: dsml_height(x.mvec) for x in nodes}
    assert all(heights[p] > heights[k] or heights[p] == heights[k] == heights[root]
               for k, ps in parents.items() for p in ps)


def _busy_parent(parents, root):
    """A non-root member with several children, all of whom have a second parent."""
    return max((k for k in parents if k != root and all(len(parents[c]) == 2 for c in _children(parents, k))),
               key=lambda k: len(_children(parents, k)))


def test_failover_survives_a_parent_crash_without_double_counting():
    nodes, parents, root, sim = _network(300, "failover")
    victim = _busy_parent(parents, root)
    crash_at(sim, f"m{victim:03d}", 1.0 + 1.45)  # after most children handed it their data
    sim.run(until=3.2)
    tally, exact = _audit(nodes, root)
    live = set(range(300)) - {victim}
    assert exact and all(w <= UNIT for w in tally.weights.values())
    assert all(tally.weights.get(k) == UNIT for k in live)  # custody: the held data was failed over
    assert sum(x.counts["failovers"] for x in nodes) >= len(_children(parents, victim))


def test_the_tree_loses_the_crashed_parents_subtree():
    nodes, parents, root, sim = _network(300, "tree")
    victim = _busy_parent(parents, root)
    crash_at(sim, f"m{victim:03d}", 1.0 + 1.45)
    sim.run(until=3.2)
    tally, exact = _audit(nodes, root)
    assert exact
    assert all(k not in tally.weights for k in _children(parents, victim))


def test_premature_timeouts_make_copies_that_the_root_suppresses():
    nodes, parents, root, sim = _network(300, "failover", ack_timeout_s=0.0005)  # below the round-trip time
    sim.run(until=3.2)
    tally, exact = _audit(nodes, root)
    assert tally.suppressed > 50 and tally.conflicts == 0
    assert exact and tally.weights == {k: UNIT for k in range(300)}


def test_split_mode_keeps_sums_exact_with_fractional_deliveries():
    nodes, parents, root, sim = _network(300, "split")
    victim = _busy_parent(parents, root)
    crash_at(sim, f"m{victim:03d}", 1.0 + 1.45)
    sim.run(until=3.2)
    tally, exact = _audit(nodes, root)
    assert exact and all(0 < w <= UNIT for w in tally.weights.values())
    assert any(w < UNIT for w in tally.weights.values())  # halves lost with the victim
    untouched = [k for k in range(300) if k != victim and victim not in _ancestors(parents, k)]
    assert len(untouched) < 299 and all(tally.weights.get(k) == UNIT for k in untouched)


def test_simulate_dsml_compares_arms_on_the_same_crashes():
    seen = []
    out = simulate_dsml(DsmlSettings(nodes=400, rounds=2, fail_fraction=0.05, maintenance_ops=3), seed=2,
                        progress=seen.append)
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    assert set(out["arms"]) == {"failover", "split", "tree", "flat"}
    for arm in out["arms"].values():
        assert arm["exact"] and arm["duplicates"] == 0 and arm["conflicts"] == 0
    assert out["arms"]["failover"]["delivery_ratio"] > out["arms"]["tree"]["delivery_ratio"]
    assert out["arms"]["flat"]["peak_fan_in"] > 10 * out["arms"]["failover"]["peak_fan_in"]
    assert len(out["rows"]) == 8 and {r["crashed"] for r in out["rows"]} == {20}
    assert out["maintenance"]["members_with_wrong_pointers"] == 0 and out["maintenance"]["joined"] == 3


def test_maintenance_costs_grow_logarithmically():
    small, large = (measure_maintenance(n, 8, seed=1) for n in (100, 3000))
    assert small["members_with_wrong_pointers"] == large["members_with_wrong_pointers"] == 0
    assert large["msgs_per_join"] < 2.5 * small["msgs_per_join"]  # 30× the members
    assert 0 < small["msgs_per_leave"] <= large["msgs_per_leave"] < 2.5 * small["msgs_per_leave"]


def test_runs_round_trip():
    weights = {0: UNIT, 1: UNIT, 2: UNIT // 2, 5: UNIT, 6: UNIT}
    assert runs_of(weights) == ((0, 2, UNIT), (2, 1, UNIT // 2), (5, 2, UNIT))
    assert expand_runs(runs_of(weights)) == weights


def test_settings_are_strict_and_documented():
    for name, field in DsmlSettings.model_fields.items():
        assert field.description, name
    with pytest.raises(ValidationError, match="extra"):
        DsmlSettings(nodez=3)
    with pytest.raises(ValidationError, match="round_s"):
        DsmlSettings(round_s=1.0, train_s=1.0)
    with pytest.raises(ValidationError):
        DsmlSettings(arms=["gossip"])


def test_dsml_parents_of_a_hand_built_list():
    # heights: keys 0..5 with leading zeros 0, 2, 0, 1, 3, 0 -> root 4; 1 -> (4); 3 -> (1, 4)
    zeros = [0, 2, 0, 1, 3, 0]
    mvecs = {k: (1 << 63) >> z for k, z in enumerate(zeros)}
    parents, root = dsml_parents(list(range(6)), mvecs)
    assert root == 4
    assert parents == {0: [1], 1: [4], 2: [1, 3], 3: [1, 4], 4: [], 5: [4]}
    assert Peer(4, "x").key == root
