"""Selectors inside FLServer: the default is unchanged, telemetry and feedback flow, k per round, settings."""

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from meshlearn.errors import UsageError
from meshlearn.experiment.fl.build import build_simulation
from meshlearn.fl import messages as kinds
from meshlearn.fl.client import FLClient
from meshlearn.fl.selection import (FedCSSelector, FedCSSettings, MABSelector, OortSelector, RandomSelector,
                                    SelectionSettings, Selector, cost_model)
from meshlearn.net.devices import DeviceProfile
from meshlearn.wire import Message


class Recorder(Selector):
    """Random selection that remembers every call."""

    def __init__(self):
        self.reports, self.feedbacks, self.inner = {}, [], RandomSelector()

    def telemetry(self, client, info):
        self.reports[client] = dict(info)

    def select(self, candidates, k, now, rng):
        return self.inner.select(candidates, k, now, rng)

    def feedback(self, round, results):
        self.feedbacks.append((round, dict(results)))


def clients(s) -> list[FLClient]:
    return [n for n in s.plan.nodes if isinstance(n, FLClient)]


def sim_with(cfg, selector=None, telemetry=True, **settings):
    s = build_simulation(cfg, trace=True)
    if selector is not None:
        s.server.selector = selector
    if settings:
        s.server.settings = s.server.settings.model_copy(update=settings)
    if telemetry:
        for i, c in enumerate(clients(s)):
            c.telemetry = {"flops": 1e8 * (i + 1), "up_bps": 1e6, "down_bps": 5e6, "num_samples": 10}
    return s


def rows(s):
    return [{k: v for k, v in r.items() if k != "t_wall"} for r in s.sim.sink.rows]


def test_an_explicit_random_selector_changes_nothing(small_cfg):
    a, b = sim_with(small_cfg(), telemetry=False), sim_with(small_cfg(), RandomSelector(), telemetry=False)
    a.sim.run(), b.sim.run()
    assert a.sim.trace == b.sim.trace and rows(a) == rows(b)


def test_telemetry_reaches_the_selector_and_feedback_reports_each_selected_client(small_cfg):
    rec = Recorder()
    s = sim_with(small_cfg(faults__crashes=[{"node": "client-02", "at": 0.01}], fl__round_deadline_s=20.0), rec)
    s.sim.run()
    assert set(rec.reports) == {c.node_id for c in clients(s)}
    assert rec.reports["client-01"]["flops"] == 2e8
    assert [r for r, _ in rec.feedbacks] == [1, 2, 3]
    for _, results in rec.feedbacks:
        assert results["client-02"].duration is None  # crashed: missed the deadline
        done = [fb for c, fb in results.items() if c != "client-02"]
        assert all(0 < fb.duration < 20.0 and fb.num_samples > 0 and fb.loss > 0 for fb in done)


def test_clients_per_round_fixes_k(small_cfg):
    s = sim_with(small_cfg(), clients_per_round=2)
    s.sim.run()
    assert s.sim.sink.series("clients_selected") == [2.0, 2.0, 2.0]
    s = sim_with(small_cfg(), clients_per_round=50)  # capped at the roster
    s.sim.run()
    assert s.sim.sink.series("clients_selected") == [6.0, 6.0, 6.0]


@pytest.mark.parametrize("make", [
    lambda cost: FedCSSelector(deadline_s=30.0, cost=cost),
    lambda cost: MABSelector(deadline_s=30.0),
    lambda cost: OortSelector(deadline_s=30.0, cost=cost),
])
def test_each_selector_runs_a_simulation_deterministically(small_cfg, make):
    def run():
        s = sim_with(small_cfg(fl__rounds=4), clients_per_round=3)
        s.server.selector = make(cost_model(s.server.params, s.workspace.flops_per_sample, 1))
        s.sim.run()
        return s
    a, b = run(), run()
    assert a.sim.sink.series("clients_selected") == [3.0] * 4
    assert a.sim.trace == b.sim.trace and a.sim.sink.series("accuracy")[-1] > 0.3


def test_fedcs_in_the_simulator_picks_the_fastest_reporters(small_cfg):
    s = sim_with(small_cfg(), clients_per_round=2)
    s.server.selector = FedCSSelector(FedCSSettings(request_fraction=1.0), deadline_s=60.0,
                                      cost=cost_model(s.server.params, 1e4, 1))
    selected = []
    original = s.server._select
    s.server._select = lambda ctx: selected.append(original(ctx)) or selected[-1]
    s.sim.run()
    assert selected == [["client-04", "client-05"]] * 3  # highest reported flops, equal links


class OddClient(FLClient):
    """Reports garbage in join and update meta: the server must shrug it off."""

    def on_task_done(self, ctx, task_id, result):
        meta = {"round": self.task_round, "num_samples": int(result.num_samples), "loss": "high", "sq_loss": None}
        ctx.send(self.server, Message(kinds.UPDATE, meta, result.params))
        self.task_id = None


def test_malformed_telemetry_and_loss_stats_are_tolerated(small_cfg):
    rec = Recorder()
    s = sim_with(small_cfg(), rec)
    honest = clients(s)[0]
    odd = OddClient(honest.node_id, honest.server, telemetry={"flops": "fast", "x": [1]})
    s.sim._states[honest.node_id].node = odd
    s.sim.run()
    assert s.sim.sink.series("clients_completed") == [6.0, 6.0, 6.0]
    fb = rec.feedbacks[0][1][honest.node_id]
    assert fb.duration > 0 and fb.loss is None and fb.sq_loss is None


def test_update_carries_sq_loss_when_the_result_has_it(small_cfg):
    rec = Recorder()
    s = sim_with(small_cfg(fl__rounds=1), rec)
    from meshlearn.learn import tasks

    original = s.workspace.run

    def run(task):
        out = original(task)
        if isinstance(task, tasks.TrainTask):
            return type("R", (), dict(params=out.params, num_samples=out.num_samples, loss=out.loss,
                                      sq_loss=out.loss ** 2 + 0.25, steps=out.steps))()
        return out
    s.workspace.run = run
    s.sim.run()
    for fb in rec.feedbacks[0][1].values():
        assert fb.sq_loss == pytest.approx(fb.loss ** 2 + 0.25)


# ----- settings --------------------------------------------------------------------------------

COST = cost_model({"w": np.zeros((10, 10), np.float32)}, 100.0, epochs=2)


def test_cost_model_counts_fp32_bits_and_three_times_forward_flops():
    assert COST.model_bits == 8 * 400 and COST.train_flops_per_sample == 600.0


def test_settings_build_each_selector_with_its_parameters():
    assert isinstance(SelectionSettings().make_selector(deadline_s=5.0), RandomSelector)
    fedcs = SelectionSettings(selector="fedcs", fedcs={"request_fraction": 0.4}).make_selector(deadline_s=5, cost=COST)
    assert isinstance(fedcs, FedCSSelector) and fedcs.request_fraction == 0.4 and fedcs.deadline_s == 5
    mab = SelectionSettings(selector="mab", mab={"discount": 0.9, "miss_factor": 3}).make_selector(deadline_s=5)
    assert isinstance(mab, MABSelector) and mab.discount == 0.9 and mab.miss_factor == 3
    oort = SelectionSettings(selector="oort", oort={"alpha": 1.0}).make_selector(deadline_s=5, cost=COST)
    assert isinstance(oort, OortSelector) and oort.alpha == 1.0 and oort.epsilon_decay == 0.95
    with pytest.raises(UsageError, match="cost"):
        SelectionSettings(selector="fedcs").make_selector(deadline_s=5)


def test_settings_reject_unknown_keys_and_selectors():
    with pytest.raises(ValidationError, match="valid: fedcs, mab, oort, random"):
        SelectionSettings(selector="fastest")
    with pytest.raises(ValidationError, match="extra"):
        SelectionSettings(oort={"alfa": 2})
    with pytest.raises(ValidationError):
        SelectionSettings(dynamics={"enabled": True, "classes": [1.0, 0.0]})
    with pytest.raises(ValidationError, match="enabled = false"):
        SelectionSettings(dynamics={"period_s": 5.0})  # set but off: nothing would fluctuate
    with pytest.raises(ValidationError, match="selection.mab"):
        SelectionSettings(selector="oort", mab={"discount": 0.5})
    assert all(f.description for f in SelectionSettings.model_fields.values())


def test_dynamics_settings_build_a_process_only_when_enabled():
    base = {"a": DeviceProfile(1e6, 1e5, 1e5)}
    seq = np.random.SeedSequence(0)
    assert SelectionSettings().dynamics.make_process(base, seq) is None
    proc = SelectionSettings(dynamics={"enabled": True, "period_s": 10, "classes": [0.5]}).dynamics.make_process(
        base, seq)
    assert proc.period_s == 10 and proc.classes == (0.5,) and proc.profile_at("a", 0).up_bps == 5e4


def test_settings_module_does_not_import_torch():
    code = "import sys, meshlearn.fl.selection; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
