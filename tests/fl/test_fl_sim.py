"""FedAvg/FedProx in the simulator: determinism, crashes, rejection of bad updates, round rules."""

import numpy as np

from meshlearn.experiment.fl.build import build_simulation
from meshlearn.fl.spec import SERVER
from meshlearn.fl import messages as kinds
from meshlearn.fl.client import FLClient
from meshlearn.wire import Message


def run(cfg, **kw):
    s = build_simulation(cfg, trace=True, **kw)
    s.sim.run()
    return s


def metrics(sim, drop_wall=True):
    return [{k: v for k, v in r.items() if not (drop_wall and k == "t_wall")} for r in sim.sink.rows]


def series(s, key):
    return s.sim.sink.series(key)


def test_same_seed_gives_identical_trace_and_metrics_bit_for_bit(small_cfg):
    a, b = run(small_cfg()), run(small_cfg())
    assert a.sim.trace == b.sim.trace and len(a.sim.trace) > 100
    assert metrics(a.sim) == metrics(b.sim)
    for key in a.server.params:
        assert np.array_equal(a.server.params[key], b.server.params[key])


def test_different_seed_gives_a_different_trace(small_cfg):
    a, b = run(small_cfg()), run(small_cfg(seed=1))
    assert a.sim.trace != b.sim.trace


def test_three_rounds_record_every_metric_and_learn(small_cfg):
    s = run(small_cfg())
    acc = series(s, "accuracy")
    assert len(acc) == 3 and acc[-1] > 0.6
    assert series(s, "clients_completed") == [6.0, 6.0, 6.0]
    up, down = series(s, "bytes_up"), series(s, "bytes_down")
    n_params = sum(p.size for p in s.server.params.values())
    assert all(u > 6 * 4 * n_params for u in up) and all(d > 6 * 4 * n_params for d in down)
    assert series(s, "virtual_time") == sorted(series(s, "virtual_time"))


def test_lossy_uplink_costs_virtual_time(small_cfg):
    lossless = run(small_cfg(network__uplink_loss=None))
    lossy = run(small_cfg(network__uplink_loss={"model": "bernoulli", "p": 0.3}))
    assert series(lossy, "virtual_time")[-1] > series(lossless, "virtual_time")[-1]


def test_crashed_client_is_dropped_and_the_round_still_completes(small_cfg):
    cfg = small_cfg(faults__crashes=[{"node": "client-02", "at": 0.01}], fl__round_deadline_s=20.0)
    s = run(cfg)
    assert series(s, "clients_completed") == [5.0, 5.0, 5.0]
    assert series(s, "clients_dropped") == [1.0, 1.0, 1.0]
    assert series(s, "round_ok") == [1.0, 1.0, 1.0]
    assert series(s, "round_time")[0] >= 20.0  # waited for the deadline


def test_a_recovered_client_rejoins_and_contributes_again(small_cfg):
    cfg = small_cfg(faults__crashes=[{"node": "client-02", "at": 0.01, "recover_at": 25.0}],
                    fl__round_deadline_s=20.0, fl__rounds=4)
    s = run(cfg)
    assert series(s, "clients_completed")[0] == 5.0 and series(s, "clients_completed")[-1] == 6.0


def test_round_fails_below_min_completion_and_keeps_the_model(small_cfg):
    crashes = [{"node": f"client-0{i}", "at": 0.01} for i in range(4)]
    s = run(small_cfg(faults__crashes=crashes, fl__min_completion=0.5, fl__round_deadline_s=10.0))
    assert series(s, "round_ok") == [0.0, 0.0, 0.0]
    assert len(set(series(s, "accuracy"))) == 1  # model never changed
    assert any("failed" in line[3] for line in s.sim.log_lines)


class WrongShapeClient(FLClient):
    """Replies with a tensor of the wrong shape: the server must reject it and go on."""

    def on_task_done(self, ctx, task_id, result):
        bad = {k: np.zeros((3, 3), np.float32) for k in result.params}
        ctx.send(self.server, Message(kinds.UPDATE, {"round": self.task_round, "num_samples": 10}, bad))
        self.task_id = None


def test_wrong_shape_update_is_rejected_logged_and_round_completes(small_cfg):
    s = build_simulation(small_cfg(fl__round_deadline_s=15.0))
    honest = s.plan.nodes[1]
    evil = WrongShapeClient(honest.node_id, SERVER)
    s.sim._states[honest.node_id].node = evil
    s.sim.run()
    assert series(s, "updates_rejected") == [1.0, 1.0, 1.0]
    assert series(s, "clients_completed") == [5.0, 5.0, 5.0]
    assert any("rejected update from client-00" in line[3] and "shape" in line[3] for line in s.sim.log_lines)


def test_fedprox_runs_and_differs_from_fedavg(small_cfg):
    avg = run(small_cfg())
    prox = run(small_cfg(fl__algorithm="fedprox", fedprox={"mu": 1.0}))
    assert series(prox, "accuracy")[-1] > 0.5
    assert series(prox, "accuracy") != series(avg, "accuracy")


def test_fraction_selects_a_subset_each_round(small_cfg):
    s = run(small_cfg(fl__fraction=0.5))
    assert series(s, "clients_selected") == [3.0, 3.0, 3.0]


def test_resume_continues_after_the_checkpointed_round(small_cfg):
    first = run(small_cfg())
    resumed = run(small_cfg(), resume=(2, first.server.params))
    assert resumed.server.completed_round == 3
    assert [r["round"] for r in resumed.sim.sink.rows if r["key"] == "accuracy"] == [3]


def test_server_crash_and_recovery_abandons_the_round_and_finishes_the_run(small_cfg):
    cfg = small_cfg(faults__crashes=[{"node": SERVER, "at": 1.0, "recover_at": 5.0}], fl__rounds=4,
                    fl__join_timeout_s=10.0)
    s = run(cfg)
    assert s.server.completed_round == 4
    rounds = [r["round"] for r in s.sim.sink.rows if r["key"] == "accuracy"]
    assert rounds == sorted(set(rounds)) and rounds[-1] == 4
    assert any(ev[1] == "fault" and ev[2] == "Recover" for ev in s.sim.trace)
