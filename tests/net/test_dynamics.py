"""ResourceProcess: seeded, order-independent fluctuation; Network and Simulator read it when given."""

import numpy as np
import pytest

from meshlearn.errors import UsageError
from meshlearn.net.devices import DeviceProfile
from meshlearn.net.dynamics import ResourceProcess
from meshlearn.net.link import LinkSpec
from meshlearn.net.network import Network
from meshlearn.sim.runtime import Simulator

BASE = {f"n{i}": DeviceProfile(flops=1e6 * (i + 1), up_bps=1e5, down_bps=4e5) for i in range(4)}


def process(seed=0, **kw) -> ResourceProcess:
    return ResourceProcess(BASE, np.random.SeedSequence(seed), **kw)


def timeline(proc, nodes, periods=30, period_s=60.0):
    return {n: [proc.profile_at(n, p * period_s + 1.0) for p in range(periods)] for n in nodes}


def test_same_seed_same_profiles_other_seed_differs():
    assert timeline(process(1), BASE) == timeline(process(1), BASE)
    assert timeline(process(1), BASE) != timeline(process(2), BASE)


def test_answers_do_not_depend_on_query_order():
    forward = timeline(process(), ["n0", "n1", "n2"])
    backward = timeline(process(), ["n2", "n1", "n0"])
    assert forward == backward
    late_first = process()
    assert late_first.profile_at("n1", 29 * 60.0 + 1.0) == forward["n1"][29]  # no earlier query needed


def test_profile_is_constant_within_a_period_and_changes_across_periods():
    proc = process(jitter=0.5)
    assert proc.profile_at("n0", 60.0) == proc.profile_at("n0", 119.9)
    assert len({proc.profile_at("n0", t).flops for t in np.arange(0, 3000, 60.0)}) > 10
    assert proc.period(-5.0) == 0 and proc.period(59.99) == 0 and proc.period(60.0) == 1


def test_one_class_and_no_jitter_gives_the_base_profile():
    proc = process(classes=[1.0], jitter=0.0)
    assert all(proc.profile_at(n, t) == BASE[n] for n in BASE for t in (0.0, 500.0, 1e4))


def test_class_scales_both_directions_and_compute_is_lognormal_around_base():
    proc = process(classes=[0.1, 1.0], jitter=0.4)
    cpu = []
    for t in np.arange(0, 400 * 60.0, 60.0):
        bw, c = proc.factors("n1", t)
        p = proc.profile_at("n1", t)
        assert p.up_bps == pytest.approx(1e5 * bw) and p.down_bps == pytest.approx(4e5 * bw)
        assert p.flops == pytest.approx(2e6 * c)
        cpu.append(np.log(c))
    assert abs(np.median(cpu)) < 0.1 and abs(np.std(cpu) - 0.4) < 0.06


@pytest.mark.parametrize("stay", [0.0, 0.5, 0.9])
def test_markov_chain_keeps_its_class_with_the_configured_probability(stay):
    proc = process(classes=[0.1, 0.5, 1.0], stay=stay)
    states = [proc.class_at(n, p * 60.0) for n in BASE for p in range(500)]
    chains = np.array(states).reshape(len(BASE), 500)
    kept = (chains[:, 1:] == chains[:, :-1]).mean()
    assert abs(kept - (stay + (1 - stay) / 3)) < 0.05  # a fresh draw may repeat the class
    assert np.allclose(np.bincount(chains.ravel(), minlength=3) / chains.size, 1 / 3, atol=0.06)


def test_stay_one_never_changes_class():
    proc = process(stay=1.0)
    assert len({proc.class_at("n3", p * 60.0) for p in range(100)}) == 1


def test_unknown_nodes_get_none_and_bad_arguments_are_rejected():
    proc = process()
    assert proc.profile_at("server", 10.0) is None and "server" not in proc and "n0" in proc
    with pytest.raises(UsageError, match="no fluctuating profile"):
        proc.factors("server", 0.0)
    for bad in ({"period_s": 0}, {"classes": []}, {"classes": [0.5, -1]}, {"stay": 1.5}, {"jitter": -0.1}):
        with pytest.raises(UsageError):
            process(**bad)


def test_network_reads_bandwidth_from_dynamics_at_send_time():
    proc = process(classes=[0.1, 1.0], jitter=0.0)
    devices = dict(BASE, server=DeviceProfile(1e9, 1e9, 1e9))
    static = Network(None, LinkSpec(latency_s=0.0), devices, np.random.SeedSequence(0))
    varying = Network(None, LinkSpec(latency_s=0.0), devices, np.random.SeedSequence(0), dynamics=proc)
    for t in np.arange(0, 1200, 60.0):
        bw, _ = proc.factors("n0", t)
        assert varying.bandwidth("n0", "server", t) == pytest.approx(1e5 * bw)
        assert static.bandwidth("n0", "server", t) == 1e5
    assert varying.bandwidth("n0", "server") == 1e5  # no time given: the static profile


class _Flops:
    """Executor stand-in: every task costs 1e6 FLOPs and returns None."""

    def submit(self, task):
        return type("H", (), {"result": staticmethod(lambda: None)})()

    def flops(self, task):
        return 1e6


def test_simulator_prices_tasks_with_the_profile_at_submission():
    from meshlearn.node import Node

    done = []

    class Worker(Node):
        def on_start(self, ctx):
            ctx.set_timer("go", 130.0)  # period 2

        def on_timer(self, ctx, name):
            self.t0 = ctx.now
            ctx.submit(object())

        def on_task_done(self, ctx, task_id, result):
            done.append(ctx.now - self.t0)

    proc = process(jitter=0.7)
    net = Network(None, LinkSpec(), BASE, np.random.SeedSequence(0), dynamics=proc)
    sim = Simulator(net, executor=_Flops(), devices=BASE)  # dynamics defaults to the network's
    sim.add_node(Worker("n0"))
    sim.run()
    assert done == [pytest.approx(1e6 / proc.profile_at("n0", 130.0).flops)]
    assert done[0] != pytest.approx(1.0)  # the static profile (1e6 FLOP/s) would take 1 s
