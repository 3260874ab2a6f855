"""FD in the simulator: determinism, what accuracy means, exclusion of a client's own logits, faults."""

import numpy as np
import pytest
import torch

from meshlearn.testing import StubSetup
from meshlearn.data import load_dataset, partition
from meshlearn.experiment.fl.build import client_ids
from meshlearn.fl import fd
from meshlearn.fl.fd import FDSettings
from meshlearn.fl.server import RoundSettings
from meshlearn.fl.spec import SERVER
from meshlearn.learn import Workspace
from meshlearn.net import Crash, LinkSpec, Network, draw_profiles, make_topology, server_profile
from meshlearn.executors import InlineExecutor
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import FrameCodec, Message

N = 6
IDS = client_ids(N)
COMMON = dict(rounds=3, epochs=2, batch_size=16, lr=0.05, momentum=0.9, round_deadline_s=30.0)


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
    """digits in 5-class shards over 6 clients; FD needs no open set."""
    torch.set_num_threads(1)
    train, test = load_dataset("digits", seed=0)
    parts = partition("shards", train.y, N, np.random.default_rng(2), classes_per_client=5)
    return Workspace(train, test, dict(zip(IDS, parts)), "mlp", {"hidden": (64,)}, 0)


def run_fd(ws, settings=None, common=None, patch=lambda node: node, seed=0, faults=()):
    plan = fd.build_fd(StubSetup(ws, IDS, FDSettings(**(settings or {})), **{**COMMON, **(common or {})}))
    nodes, stop = plan.nodes, plan.stop_on
    nodes = [patch(n) for n in nodes]
    network = star_network(seed)
    sim = Simulator(network, seed=seed, executor=InlineExecutor(ws), devices=network.devices,
                    frames=FrameCodec(b"meshlearn-test"), stop_on=stop, trace=True)
    sim.add_nodes(nodes)
    sim.schedule_faults(faults)
    sim.run()
    return sim, nodes[0]


def series(sim, key):
    return sim.sink.series(key)


def test_same_seed_gives_identical_trace_and_metrics(ws):
    (a, sa), (b, sb) = run_fd(ws), run_fd(ws)
    strip = lambda sim: [{k: v for k, v in r.items() if k != "t_wall"} for r in sim.sink.rows]  # noqa: E731
    assert a.trace == b.trace and strip(a) == strip(b)
    assert all(np.array_equal(sa.params[k], sb.params[k]) for k in sa.params)


def test_accuracy_is_the_mean_of_the_clients_reported_test_accuracy(ws):
    sim, server = run_fd(ws)
    per_node = [r for r in sim.sink.rows if r["key"] == "client_accuracy"]
    for rnd, acc in enumerate(series(sim, "accuracy"), start=1):
        reports = [r["value"] for r in per_node if r["round"] == rnd]
        assert len(reports) == N and acc == pytest.approx(np.mean(reports))
    assert series(sim, "labels_covered") == [10.0] * 3
    assert server.params["fd.counts"].sum() == len(ws.train)
    keys = [r["key"] for r in sim.sink.rows if r["round"] == 1 and r["node"] is None]
    assert keys[-1] == "virtual_time" and "bytes_up" in keys


def test_fd_cannot_teach_unseen_labels_so_it_tracks_local_training_and_sends_few_bytes(ws):
    """The regulariser only touches a client's own labels: under label skew FD ≈ local training (the
    spec: "FD lags badly under non-IID"); what it saves is bytes."""
    alone, _ = run_fd(ws, settings={"beta": 0.0}, common={"rounds": 4})
    shared, _ = run_fd(ws, settings={"beta": 1.0}, common={"rounds": 4})
    assert 0.4 < series(shared, "accuracy")[-1] < 0.6  # 5 of 10 classes per client
    assert abs(series(shared, "accuracy")[-1] - series(alone, "accuracy")[-1]) < 0.05
    per_upload = 10 * 10 * 4 + 10 * 8
    assert all(b < N * (per_upload + 700) for b in series(shared, "bytes_up"))


def test_each_client_s_teacher_leaves_its_own_logits_out():
    server = fd.FDServer(SERVER, 2, RoundSettings(**COMMON), FDSettings(), min_clients=2)
    own_a = (np.array([[4.0, 0.0], [0.0, 0.0]]), np.array([2, 0]))
    own_b = (np.array([[2.0, 2.0], [0.0, 6.0]]), np.array([1, 3]))
    server.contributions = {"a": own_a, "b": own_b}
    server.params = {"fd.sums": own_a[0] + own_b[0], "fd.counts": own_a[1] + own_b[1]}
    teacher, mask = server.teacher("a")
    assert np.array_equal(mask, [True, True]) and np.allclose(teacher, [[2.0, 2.0], [0.0, 2.0]])
    teacher, mask = server.teacher("b")
    assert np.array_equal(mask, [True, False]) and np.allclose(teacher[0], [2.0, 0.0])
    server.fd = FDSettings(exclude_own=False)
    teacher, _ = server.teacher("b")
    assert np.allclose(teacher, [[2.0, 2 / 3], [0.0, 2.0]])


class BadFD(fd.FDClient):
    """Claims more samples than its per-label counts add up to."""

    def upload(self):
        msg = super().upload()
        return Message(fd.UPLOAD, {**msg.meta, "num_samples": msg.meta["num_samples"] + 1}, msg.tensors)


def test_inconsistent_upload_is_rejected_and_a_crashed_client_is_dropped(ws):
    def patch(node):
        return BadFD(node.node_id, SERVER, node.params, 10) if node.node_id == "client-00" else node

    sim, _ = run_fd(ws, patch=patch, faults=[Crash(0.01, "client-03")])
    assert series(sim, "updates_rejected") == [1.0] * 3
    assert series(sim, "clients_completed") == [4.0] * 3 and series(sim, "round_ok") == [1.0] * 3
    assert any("rejected update from client-00" in line[3] and "num_samples" in line[3] for line in sim.log_lines)
