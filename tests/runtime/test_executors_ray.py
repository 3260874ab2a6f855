"""The Ray executor: a small FedAvg simulation on a Ray actor pool gives the inline metrics exactly.

Runs in the default suite when Ray is installed (``pip install "meshlearn[ray]"``), skipped otherwise.
Ray >= 2.52 enables token auth by default; the local throw-away cluster here runs with
``RAY_AUTH_MODE=disabled``. Starting Ray costs a few seconds.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from meshlearn.errors import UsageError
from meshlearn.executors import make_executor


def test_missing_ray_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(UsageError, match=r'pip install "meshlearn\[ray\]"'):
        make_executor("ray", workspace=None)


@pytest.mark.timeout(240)
def test_ray_fedavg_simulation_matches_inline(monkeypatch):
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "meshlearn[ray]")')
    from meshlearn.experiment.fl.build import build_simulation
    from meshlearn.experiment.fl.schema import fl_config
    from meshlearn.learn import EvalTask, initial_params
    from meshlearn.errors import ProtocolError

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    threads = torch.get_num_threads()
    cfg = fl_config({"name": "ray", "data": {"clients": 6}, "fl": {"rounds": 2, "epochs": 1}})

    def run(executor_name, **options):
        sim = build_simulation(cfg)  # sets torch to runtime.torch_threads (1) threads, like the actors
        executor = make_executor(executor_name, sim.workspace, **options)
        sim.sim.executor = executor
        try:
            sim.sim.run(until=10_000)
            if executor_name == "ray":
                p0 = initial_params(sim.workspace)
                assert executor.submit(EvalTask(p0)).result().accuracy == sim.workspace.run(EvalTask(p0)).accuracy
                with pytest.raises(ProtocolError):  # a task's own error comes back as itself
                    executor.submit(EvalTask({})).result()
        finally:
            executor.close()
        assert sim.sim.stopped
        return [(r["key"], r["round"], r["node"], r["t_sim"], r["value"]) for r in sim.sim.sink.rows]

    try:
        ref = run("inline")
        got = run("ray", actors=2, num_cpus=2)
        assert not ray.is_initialized()  # the executor started Ray, so close() shut it down
    finally:
        torch.set_num_threads(threads)
    assert any(key == "accuracy" for key, *_ in ref)
    values_ref, values_got = np.array([r[4] for r in ref]), np.array([r[4] for r in got])
    assert [r[:4] for r in ref] == [r[:4] for r in got]
    assert np.array_equal(values_ref, values_got)
