"""DS-FL in the simulator: determinism, learning, bytes, crashes, rejected uploads, resume."""

import numpy as np
import pytest
import torch

from meshlearn.testing import StubSetup
from meshlearn.data import load_dataset, partition
from meshlearn.errors import UsageError
from meshlearn.experiment.fl.build import client_ids
from meshlearn.fl import dsfl
from meshlearn.fl.client import FLClient
from meshlearn.fl.dsfl import DSFLSettings
from meshlearn.fl.server import FLServer, RoundSettings
from meshlearn.fl.softlabels import encode_soft
from meshlearn.fl.spec import SERVER
from meshlearn.learn import Workspace, initial_params
from meshlearn.net import Crash, LinkSpec, Network, Recover, draw_profiles, make_topology, server_profile
from meshlearn.executors import InlineExecutor
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import FrameCodec, Message

N = 6
IDS = client_ids(N)
COMMON = dict(rounds=3, epochs=2, batch_size=16, lr=0.05, momentum=0.9, round_deadline_s=30.0)
LOSSY = {"model": "gilbert_elliott", "loss": 0.05, "burst": 4}
FAST = dict(subset_size=100, distill_epochs=1, distill_lr=0.05, server_distill_epochs=10, server_distill_lr=0.05)


def star_network(seed, devices="iot", uplink_loss=None):
    """A star around the server, links and device profiles as the experiment builder makes them."""
    base = dict(latency_s=0.02, jitter_s=0.005, bandwidth_bps=1e8, mtu=1500, rto_s=0.2)
    overrides = {(c, SERVER): LinkSpec(**base, loss=uplink_loss) for c in IDS} if uplink_loss else {}
    profiles = dict(zip(IDS, draw_profiles(devices, N, np.random.default_rng([seed, 1]))))
    profiles[SERVER] = server_profile()
    topo = make_topology("star", [SERVER, *IDS], np.random.default_rng([seed, 2]))
    return Network(topo, LinkSpec(**base), profiles, np.random.SeedSequence([seed, 3]), link_overrides=overrides)


@pytest.fixture(scope="module")
def ws():
    """digits; 300 training images held out as the open set; the rest in 5-class shards over 6 clients
    (with 6 clients, 2 classes each leaves classes with a single holder: too few votes to learn fast)."""
    torch.set_num_threads(1)  # as experiment.fl.build.build_workspace does; torch's default spins on every core
    train, test = load_dataset("digits", seed=0)
    order = np.random.default_rng(1).permutation(len(train))
    open_set, private = train.subset(np.sort(order[:300])), train.subset(np.sort(order[300:]))
    parts = partition("shards", private.y, N, np.random.default_rng(2), classes_per_client=5)
    return Workspace(private, test, dict(zip(IDS, parts)), "mlp", {"hidden": (64,)}, 0, open=open_set)


def simulate(ws, nodes, stop_on, *, seed=0, faults=(), uplink_loss=LOSSY):
    """Run to the end on a star network; checkpoints kept in `sim.checkpoints[round]`."""
    network = star_network(seed, uplink_loss=uplink_loss)
    checkpoints = {}
    sim = Simulator(network, seed=seed, executor=InlineExecutor(ws), devices=network.devices,
                    frames=FrameCodec(b"meshlearn-test"), stop_on=stop_on, trace=True,
                    on_checkpoint=lambda node, rnd, tensors, meta: checkpoints.__setitem__(rnd, (tensors, meta)))
    sim.checkpoints = checkpoints
    sim.add_nodes(nodes)
    sim.schedule_faults(faults)
    sim.run()
    return sim


def build(ws, settings=None, common=None, resume=None):
    setup = StubSetup(ws, IDS, DSFLSettings(**{**FAST, **(settings or {})}), resume=resume, **{**COMMON, **(common or {})})
    return dsfl.build_dsfl(setup)


def run_dsfl(ws, settings=None, common=None, resume=None, patch=lambda node: node, **kw):
    plan = build(ws, settings, common, resume)
    nodes = [patch(n) for n in plan.nodes]
    return simulate(ws, nodes, plan.stop_on, **kw), nodes[0]


def series(sim, key):
    return sim.sink.series(key)


def rows(sim):
    return [{k: v for k, v in r.items() if k != "t_wall"} for r in sim.sink.rows]


def test_same_seed_gives_identical_trace_and_metrics(ws):
    (a, sa_), (b, sb) = run_dsfl(ws), run_dsfl(ws)
    assert a.trace == b.trace and len(a.trace) > 100
    assert rows(a) == rows(b)
    assert all(np.array_equal(sa_.params[k], sb.params[k]) for k in sa_.params)
    c, _ = run_dsfl(ws, seed=1)
    assert c.trace != a.trace


def test_rounds_record_flserver_metrics_with_virtual_time_last_and_learn(ws):
    sim, server = run_dsfl(ws, common={"rounds": 5})
    keys = [r["key"] for r in sim.sink.rows if r["round"] == 1 and r["node"] is None]
    assert keys == ["soft_label_entropy", "accuracy", "loss", "bytes_up", "bytes_down", "clients_selected",
                    "clients_completed", "clients_dropped", "updates_rejected", "round_ok", "round_time",
                    "virtual_time"]
    assert series(sim, "clients_completed") == [6.0] * 5 and series(sim, "round_ok") == [1.0] * 5
    acc = series(sim, "accuracy")
    assert acc[-1] > 0.75 and acc[-1] > acc[0]
    assert server.soft.shape == (100, 10) and np.allclose(server.soft.sum(1), 1, atol=1e-5)
    assert sorted(sim.checkpoints) == [1, 2, 3, 4, 5]
    tensors, meta = sim.checkpoints[5]
    assert "dsfl.soft_labels" in tensors and meta["round"] == 5


def fedavg_bytes(ws):
    server = FLServer(SERVER, initial_params(ws), RoundSettings(**COMMON), min_clients=N)
    clients = [FLClient(c, SERVER) for c in IDS]
    sim = simulate(ws, [server, *clients], [SERVER])
    return sum(series(sim, "bytes_up")) + sum(series(sim, "bytes_down"))


def test_uploads_carry_exactly_the_soft_labels_and_cost_far_less_than_fedavg(ws):
    sent = []
    sim, _ = run_dsfl(ws)
    for ev in sim.trace:
        if ev[1] == "send" and ev[4] == dsfl.UPLOAD:
            sent.append(ev[5])
    payload = 100 * 10 * 4
    assert len(sent) == 3 * N and all(payload < b < payload + 600 for b in sent)  # + envelope and frame
    ours = sum(series(sim, "bytes_up")) + sum(series(sim, "bytes_down"))
    assert ours < 0.5 * fedavg_bytes(ws)  # the 64-unit MLP is small; the benchmark uses a 600k one
    simplex8, _ = run_dsfl(ws, settings={"soft_label_encoding": "simplex8"})
    assert sum(series(simplex8, "bytes_up")) < 0.35 * sum(series(sim, "bytes_up"))


def test_crashed_client_is_dropped_and_a_recovered_one_rejoins(ws):
    sim, _ = run_dsfl(ws, faults=[Crash(0.01, "client-02")])
    assert series(sim, "clients_completed") == [5.0] * 3 and series(sim, "round_ok") == [1.0] * 3
    assert series(sim, "round_time")[0] >= 30.0
    sim, _ = run_dsfl(ws, common={"rounds": 4}, faults=[Crash(0.01, "client-02"), Recover(35.0, "client-02")])
    assert series(sim, "clients_completed")[0] == 5.0 and series(sim, "clients_completed")[-1] == 6.0


def test_round_below_min_completion_fails_and_keeps_the_model(ws):
    crashes = [Crash(0.01, f"client-0{i}") for i in range(4)]
    sim, server = run_dsfl(ws, common={"min_completion": 0.5}, faults=crashes)
    assert series(sim, "round_ok") == [0.0] * 3 and len(set(series(sim, "accuracy"))) == 1
    assert server.soft is None and any("failed" in line[3] for line in sim.log_lines)


class BadUploader(dsfl.DSFLClient):
    """Uploads soft labels of the wrong shape, then NaNs, then rows that do not sum to 1."""

    def upload(self):
        n = len(self.indices)
        bad = [np.full((n + 1, 10), 0.1, np.float32), np.full((n, 10), np.nan, np.float32),
               np.full((n, 10), 0.5, np.float32)][(self.task_round - 1) % 3]
        return Message(dsfl.UPLOAD, {"round": self.task_round, "num_samples": 10}, encode_soft(bad))


def test_malformed_uploads_are_rejected_logged_and_the_round_completes(ws):
    def patch(node):
        if node.node_id != "client-00":
            return node
        return BadUploader(node.node_id, SERVER, node.params, node.num_open)

    sim, _ = run_dsfl(ws, patch=patch)
    assert series(sim, "updates_rejected") == [1.0] * 3 and series(sim, "clients_completed") == [5.0] * 3
    lines = [line[3] for line in sim.log_lines if "rejected update from client-00" in line[3]]
    assert [w for w in ("shape", "NaN", "sum to 1") if any(w in line for line in lines)] == ["shape", "NaN",
                                                                                             "sum to 1"]


def test_resume_continues_after_the_checkpointed_round_with_its_soft_labels(ws):
    first, _ = run_dsfl(ws)
    tensors, meta = first.checkpoints[2]
    nodes = build(ws, resume=(2, tensors)).nodes
    assert np.array_equal(nodes[0].soft, tensors["dsfl.soft_labels"]) and "dsfl.indices" not in nodes[0].params
    resumed, server = run_dsfl(ws, resume=(2, tensors))
    assert server.completed_round == 3
    assert [r["round"] for r in resumed.sink.rows if r["key"] == "accuracy"] == [3]


def test_server_crash_and_recovery_finishes_the_run(ws):
    sim, server = run_dsfl(ws, common={"rounds": 4, "join_timeout_s": 10.0},
                           faults=[Crash(0.3, SERVER), Recover(5.0, SERVER)])
    assert server.completed_round == 4
    rounds = [r["round"] for r in sim.sink.rows if r["key"] == "accuracy"]
    assert rounds == sorted(set(rounds)) and rounds[-1] == 4


def test_without_server_distillation_accuracy_is_the_mean_the_clients_report(ws):
    sim, server = run_dsfl(ws, settings={"server_distill": False})
    assert all(0.0 < a < 1.0 for a in series(sim, "accuracy"))
    assert len(set(series(sim, "accuracy"))) > 1  # the clients' models change; the server's does not
    assert all(np.array_equal(server.params[k], initial_params(ws)[k]) for k in server.params)


def test_builder_validates_its_inputs(ws):
    no_open = Workspace(ws.train, ws.test, ws.parts, "mlp", {"hidden": (64,)}, 0)
    with pytest.raises(UsageError, match="open_size"):
        build(no_open)
    with pytest.raises(ValueError, match="prox_muu"):
        build(ws, common={"prox_muu": 1.0})
