"""CMFD and parameter-averaging gossip in the simulator: learning, determinism, crashes, the ledger."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from meshlearn.testing import StubSetup
from meshlearn.data import load_dataset, partition
from meshlearn.fl.decentral import OUTPUTS, CMFDPeer, DecentralSettings, build_cmfd, build_gossip
from meshlearn.learn import Workspace
from meshlearn.net import Crash, LinkSpec, Network, Recover, draw_profiles, make_topology
from meshlearn.executors import InlineExecutor
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import Message

CMFD_FAST = dict(lr=0.02, cmfd_lr=1.0, distill_batch_size=20)  # the digits-tuned knobs of bench_cmfd.py


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)  # as configure_torch does for every run; torch's default oversubscribes 2 cores
    return load_dataset("digits", test_fraction=0.2, seed=0)


def make_workspace(digits, n: int, open_size: int = 300, seed: int = 0):
    """Digits with `open_size` training images held out as the unlabelled set; 2 classes per peer."""
    train, test = digits
    order = np.random.default_rng(seed).permutation(len(train))
    open_set = train.subset(np.sort(order[:open_size]))
    train = train.subset(np.sort(order[open_size:]))
    parts = partition("shards", train.y, n, np.random.default_rng(seed + 1), classes_per_client=2)
    ids = [f"peer-{i}" for i in range(n)]
    return Workspace(train, test, dict(zip(ids, parts)), "mlp", {"hidden": (32,)}, seed, open=open_set), ids


def simulate(digits, algo: str, settings: DecentralSettings, *, n: int = 6, k: int = 1, seed: int = 0,
             faults=(), replace=None):
    ws, ids = make_workspace(digits, n, seed=seed)
    topology = make_topology("k_hop_ring", ids, np.random.default_rng(seed), k=k)
    build = {"cmfd": build_cmfd, "gossip": build_gossip}[algo]
    plan = build(StubSetup(ws, ids, settings, seed=seed, topology=topology))
    nodes, stop_on = plan.nodes, plan.stop_on
    if replace:
        nodes = [replace(p) if p.node_id == "peer-0" else p for p in nodes]
    devices = dict(zip(ids, draw_profiles("uniform", n, np.random.default_rng(seed))))
    network = Network(topology, LinkSpec(latency_s=0.01), devices, np.random.SeedSequence(seed))
    sim = Simulator(network, seed=seed, executor=InlineExecutor(ws), devices=devices, stop_on=stop_on)
    sim.add_nodes(nodes)
    ledger = nodes[1].ledger
    ledger.watch(sim.is_alive)
    sim.schedule_faults(faults)
    sim.run(until=10_000.0)
    ledger.close()
    return SimpleNamespace(sim=sim, nodes=nodes, ledger=ledger, rows=sim.sink.rows, series=sim.sink.series)


def run_rows(run, key=None):
    return [r for r in run.rows if r["node"] is None and (key is None or r["key"] == key)]


def test_same_seed_gives_identical_metrics_and_models(digits):
    settings = DecentralSettings(epochs=4, eval_every=2, **CMFD_FAST)
    a, b = simulate(digits, "cmfd", settings), simulate(digits, "cmfd", settings)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "t_wall"} for r in rows]  # noqa: E731
    assert strip(a.rows) == strip(b.rows) and len(a.rows) > 20
    for pa, pb in zip(a.nodes, b.nodes):
        assert all(np.array_equal(pa.params[k], pb.params[k]) for k in pa.params)
    c = simulate(digits, "cmfd", settings, seed=1)
    assert strip(c.rows) != strip(a.rows)


def test_cmfd_learns_beyond_local_training(digits):
    run = simulate(digits, "cmfd", DecentralSettings(epochs=30, eval_every=10, **CMFD_FAST))
    acc = run.series("accuracy")
    assert len(acc) == 3 and acc[-1] > 0.5 and acc[0] < acc[-1]  # local training alone on 2 classes: ~0.2
    assert all(p.finished for p in run.nodes)
    assert run.series("accuracy_min")[-1] <= acc[-1]


def test_gossip_learns_and_peers_agree(digits):
    run = simulate(digits, "gossip", DecentralSettings(epochs=20, eval_every=10, lr=0.1))
    acc, spread = run.series("accuracy"), run.series("consensus_spread")
    assert acc[-1] > 0.55 and acc[0] < acc[-1] and 0 <= spread[-1] < 0.3


def test_ledger_records_one_row_per_epoch_with_virtual_time_last(digits):
    run = simulate(digits, "gossip", DecentralSettings(epochs=5, eval_every=2))
    rows = run_rows(run)
    assert [r["round"] for r in rows if r["key"] == "virtual_time"] == [1, 2, 3, 4, 5]
    assert [r["round"] for r in rows if r["key"] == "accuracy"] == [2, 4, 5]
    for epoch in range(1, 6):
        keys = [r["key"] for r in rows if r["round"] == epoch]
        assert keys[-1] == "virtual_time" and "bytes_total" in keys
    assert run.series("peers_reporting") == [6.0] * 5
    per_node = [r for r in run.rows if r["key"] == "node_accuracy"]
    assert len(per_node) == 6 * 3 and {r["node"] for r in per_node} == {f"peer-{i}" for i in range(6)}
    model_bytes = sum(v.nbytes for v in run.nodes[0].params.values())
    assert all(b > 6 * 2 * model_bytes for b in run.series("bytes_total"))  # 6 peers x 2 neighbours


def test_a_crashed_peer_does_not_stall_its_neighbours(digits):
    settings = DecentralSettings(epochs=6, eval_every=3, epoch_deadline_s=5.0, **CMFD_FAST)
    run = simulate(digits, "cmfd", settings, faults=[Crash(0.001, "peer-2")])
    alive = [p for p in run.nodes if p.node_id != "peer-2"]
    assert all(p.finished and p.epoch == 6 for p in alive)
    assert run.series("peers_reporting") == [5.0] * 6
    waits = [line for line in run.sim.log_lines if "no share from ['peer-2']" in line[3]]
    assert sorted(line[1] for line in waits) == ["peer-1", "peer-3"]  # waited once each, then suspected it
    assert run.series("virtual_time")[-1] < 3 * settings.epoch_deadline_s  # not a deadline per epoch


def test_a_recovered_peer_rejoins_at_the_frontier(digits):
    settings = DecentralSettings(epochs=40, eval_every=5, epoch_deadline_s=1.0)
    run = simulate(digits, "gossip", settings, faults=[Crash(0.001, "peer-2"), Recover(1.5, "peer-2")])
    assert all(p.finished for p in run.nodes)
    evals = [r["round"] for r in run.rows if r["key"] == "node_accuracy" and r["node"] == "peer-2"]
    assert evals[-1] == 40 and evals[0] > 5  # jumped past the epochs it missed
    assert run.series("peers_reporting")[-1] == 6.0  # and is counted again at the end
    late_waits = [line for line in run.sim.log_lines if line[0] > 1.5 and "by the deadline" in line[3]]
    assert late_waits == []  # nobody waited a deadline for the returning peer


class LyingPeer(CMFDPeer):
    """Sends outputs of the wrong shape: neighbours must reject them and carry on."""

    def _after_share(self, ctx, result):
        for n in self.neighbours:
            ctx.send(n, Message(OUTPUTS, {"epoch": self.current, "rows": 3}, {"probs": np.ones((3, 3), np.float32)}))
        self.phase = "wait"
        ctx.set_timer("deadline", self.settings.epoch_deadline_s)
        self._maybe_combine(ctx)


def test_malformed_outputs_are_rejected_and_logged(digits):
    settings = DecentralSettings(epochs=2, eval_every=2, epoch_deadline_s=3.0)
    swap = lambda p: LyingPeer(p.node_id, p.neighbours, p.params, p.settings, ledger=p.ledger,  # noqa: E731
                               num_classes=p.num_classes, open_count=p.open_count, schedule_seed=p.schedule_seed)
    run = simulate(digits, "cmfd", settings, replace=swap)
    assert all(p.finished for p in run.nodes)
    rejected = [line for line in run.sim.log_lines if "rejected dec.outputs from peer-0" in line[3]]
    assert {line[1] for line in rejected} == {"peer-1", "peer-5"}
