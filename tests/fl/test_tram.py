"""Tram-FL: routing policies on hand-built counters, the hop task, and the token in the simulator."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from meshlearn.testing import StubSetup
from meshlearn.data import load_dataset, partition
from meshlearn.errors import RegistryError
from meshlearn.fl.tram import COUNTER_KEY, ROUTING, RouteQuery, TramSettings, build_tram, projected_variance
from meshlearn.learn.tasks import HopTrainTask
from meshlearn.learn import Workspace, initial_params
from meshlearn.net import Crash, LinkSpec, Network, draw_profiles
from meshlearn.executors import InlineExecutor
from meshlearn.sim.runtime import Simulator

NODES = ("a", "b", "c", "d")


def query(counter, classes=None, current="a", candidates=("b", "c", "d")):
    classes = classes or {"a": (0,), "b": (1,), "c": (2,), "d": (3,)}
    return RouteQuery(current, tuple(candidates), NODES, np.asarray(counter), classes, samples_per_hop=100)


# --------------------------------------------------------------------------- policies


def test_variance_picks_the_node_that_balances_the_counter():
    rng = np.random.default_rng(0)
    assert ROUTING.get("variance")(query([300, 300, 100, 300]), rng) == "c"
    two = {"a": (0,), "b": (0, 1), "c": (2, 3), "d": (1,)}
    assert ROUTING.get("variance")(query([200, 100, 0, 0], two), rng) == "c"  # fills both empty classes


def test_variance_breaks_ties_at_random_and_skips_unannounced_nodes():
    picks = {ROUTING.get("variance")(query([100, 0, 0, 0]), np.random.default_rng(s)) for s in range(30)}
    assert picks == {"b", "c", "d"}
    partial = {"a": (0,), "d": (3,)}
    assert ROUTING.get("variance")(query([100, 0, 0, 0], partial), np.random.default_rng(0)) == "d"


def test_projected_variance_spreads_samples_over_the_node_classes():
    assert projected_variance(np.array([0, 0]), (0, 1), 100) == 0.0
    assert projected_variance(np.array([0, 0]), (0,), 100) == pytest.approx(2500.0)


def test_cycle_follows_ring_order_and_skips_dead_nodes():
    cycle = ROUTING.get("cycle")
    rng = np.random.default_rng(0)
    assert cycle(query([0] * 4, current="b", candidates=("a", "c", "d")), rng) == "c"
    assert cycle(query([0] * 4, current="d", candidates=("a", "b", "c")), rng) == "a"
    assert cycle(query([0] * 4, current="b", candidates=("a", "d")), rng) == "d"


def test_random_is_uniform_over_the_other_nodes():
    rng = np.random.default_rng(1)
    picks = [ROUTING.get("random")(query([0] * 4), rng) for _ in range(3000)]
    counts = {n: picks.count(n) for n in ("b", "c", "d")}
    assert "a" not in picks and all(900 < c < 1100 for c in counts.values())


def test_unknown_policy_lists_the_valid_ones():
    with pytest.raises(RegistryError, match="cycle, random, variance"):
        ROUTING.get("shortest")


# --------------------------------------------------------------------------- simulation


@pytest.fixture(scope="module")
def digits_ws():
    torch.set_num_threads(1)
    train, test = load_dataset("digits", test_fraction=0.2, seed=0)
    parts = partition("shards", train.y, 10, np.random.default_rng(1), classes_per_client=1)
    ids = [f"node-{i}" for i in range(10)]
    return Workspace(train, test, dict(zip(ids, parts)), "mlp", {"hidden": (32,)}, 0), ids


def test_hop_task_trains_k_minibatches_and_counts_their_labels(digits_ws):
    ws, ids = digits_ws
    task = HopTrainTask(client=ids[3], params=initial_params(ws), batches=2, batch_size=50, lr=0.05, seed=4)
    res = ws.run(task)
    label = int(ws.train.y[ws.parts[ids[3]][0]])
    assert res.label_counts.sum() == 100 and res.label_counts[label] == 100
    again = ws.run(task)
    assert all(np.array_equal(res.params[k], again.params[k]) for k in res.params)


def simulate(ws, ids, settings, seed=0, faults=(), resume=None):
    plan = build_tram(StubSetup(ws, ids, settings, seed=seed, resume=resume))
    nodes, stop_on = plan.nodes, plan.stop_on
    devices = dict(zip(ids, draw_profiles("uniform", len(ids), np.random.default_rng(seed))))
    net = Network(None, LinkSpec(latency_s=0.01), devices, np.random.SeedSequence(seed))
    saved = {}
    sim = Simulator(net, seed=seed, executor=InlineExecutor(ws), devices=devices, stop_on=stop_on,
                    on_checkpoint=lambda node, rnd, tensors, meta: saved.update({rnd: tensors}))
    sim.add_nodes(nodes)
    sim.schedule_faults(faults)
    sim.run(until=10_000.0)
    return SimpleNamespace(sim=sim, nodes=nodes, series=sim.sink.series, saved=saved)


def test_variance_routing_learns_and_records_every_eval_with_virtual_time_last(digits_ws):
    run = simulate(*digits_ws, TramSettings(transmissions=60, eval_every=20))
    assert run.series("transmissions") == [20.0, 40.0, 60.0]
    assert run.series("accuracy")[-1] > 0.5 and run.sim.stopped
    rows = [r for r in run.sim.sink.rows if r["round"] == 60]
    assert rows[-1]["key"] == "virtual_time"
    model_bytes = sum(v.nbytes for v in initial_params(digits_ws[0]).values())
    b = run.series("bytes_total")  # per evaluation interval: 20 transmissions of the model each
    assert len(b) == 3 and all(20 * model_bytes < x < 30 * model_bytes for x in b)
    assert [n.finished for n in run.nodes].count(True) == 1  # the last holder's stop() ends the simulation


def test_same_seed_same_metrics_and_random_routing_differs(digits_ws):
    strip = lambda s: [{k: v for k, v in r.items() if k != "t_wall"} for r in s.sim.sink.rows]  # noqa: E731
    settings = TramSettings(transmissions=20, eval_every=10)
    assert strip(simulate(*digits_ws, settings)) == strip(simulate(*digits_ws, settings))
    rnd = TramSettings(transmissions=20, eval_every=10, routing="random")
    assert strip(simulate(*digits_ws, rnd, seed=0)) != strip(simulate(*digits_ws, rnd, seed=1))


def test_a_dead_next_hop_is_routed_around(digits_ws):
    ws, ids = digits_ws
    settings = TramSettings(transmissions=30, eval_every=10, routing="cycle", ack_timeout_s=2.0)
    run = simulate(ws, ids, settings, faults=[Crash(0.001, ids[2])])
    assert run.series("transmissions")[-1] == 30.0
    skipped = [line for line in run.sim.log_lines if f"no ack from {ids[2]}" in line[3]]
    assert len(skipped) == 1 and skipped[0][1] == ids[1]  # learnt once, then avoided
    assert run.series("virtual_time")[-1] > settings.ack_timeout_s


def test_resume_restarts_the_token_from_a_checkpoint(digits_ws):
    first = simulate(*digits_ws, TramSettings(transmissions=40, eval_every=20))
    tensors = first.saved[20]
    assert COUNTER_KEY in tensors and tensors[COUNTER_KEY].sum() == 20 * 100  # evaluated on arrival
    resumed = simulate(*digits_ws, TramSettings(transmissions=40, eval_every=20), resume=(20, tensors))
    assert resumed.series("transmissions") == [40.0]
