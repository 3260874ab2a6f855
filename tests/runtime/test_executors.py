"""Executors other than inline give the inline results: vectorized (float tolerance), process pool
(bit-identical); the registry builds them by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshlearn.data import load_dataset, partition
from meshlearn.errors import ProtocolError, RegistryError, UsageError
from meshlearn.executors import EXECUTORS, InlineExecutor, make_executor
from meshlearn.executors.vectorized import VectorizedExecutor
from meshlearn.learn import EvalResult, EvalTask, TrainTask, Workspace, initial_params


@pytest.fixture(autouse=True)
def one_thread():
    """What experiments run with (runtime.torch_threads = 1); also keeps tiny ops fast on busy CI."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ws(digits) -> Workspace:
    train, test = digits
    parts = partition("dirichlet", train.y, 50, 0, alpha=0.5)
    clients = {f"c{i:02d}": p for i, p in enumerate(parts)}
    clients["empty"] = np.zeros(0, np.int64)
    return Workspace(train, test, clients, "mlp", {"hidden": (32,)}, model_seed=0)


def _client_params(ws: Workspace, n: int) -> list[dict]:
    """Different starting parameters per client (as in asynchronous or decentralized training)."""
    p0 = initial_params(ws)
    rng = np.random.default_rng(1)
    return [{k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in p0.items()} for _ in range(n)]


def _inline(ws, tasks):
    ex = InlineExecutor(ws)
    return [ex.submit(t).result() for t in tasks]


def _assert_close(ref, got, atol=1e-5):
    assert len(ref) == len(got)
    for a, b in zip(ref, got):
        assert (a.num_samples, a.steps) == (b.num_samples, b.steps)
        assert list(a.params) == list(b.params)
        for k in a.params:
            assert b.params[k].dtype == np.float32 and b.params[k].shape == a.params[k].shape
            assert np.allclose(a.params[k], b.params[k], atol=atol, rtol=0), k
        assert (np.isnan(a.loss) and np.isnan(b.loss)) or abs(a.loss - b.loss) < 1e-5


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("prox_mu", [0.0, 0.1])
def test_vectorized_equals_inline_on_50_dirichlet_clients(ws, momentum, prox_mu):
    clients = [c for c in ws.clients if c != "empty"]
    starts = _client_params(ws, len(clients))
    tasks = [TrainTask(client=c, params=p, epochs=1 + i % 3, batch_size=16, lr=0.05, momentum=momentum,
                       weight_decay=1e-3 if i % 2 else 0.0, prox_mu=prox_mu, seed=100 + i)
             for i, (c, p) in enumerate(zip(clients, starts))]
    ref = _inline(ws, tasks)
    ex = VectorizedExecutor(ws)
    handles = [ex.submit(t) for t in tasks]
    assert ex.stats.batched_tasks == 0  # nothing runs before a result is asked for
    handles[7].result()  # one result() trains every pending train task
    assert ex.stats.batched_tasks == len(tasks) and ex.stats.inline_tasks == 0
    got = [h.result() for h in handles]
    assert ex.stats.batches == 2  # weight decay 0 and 1e-3 are two groups; epochs differ inside a group
    assert len({r.num_samples for r in got}) > 10  # Dirichlet: very different sample counts
    _assert_close(ref, got)


def test_vectorized_edge_cases_fall_back_or_raise_per_task(ws):
    p0 = initial_params(ws)
    bad = {k: v for k, v in p0.items() if not k.endswith("bias")}
    base = dict(params=p0, batch_size=8, lr=0.1, seed=3)
    tasks = [TrainTask(client="c01", epochs=2, **base),
             TrainTask(client="empty", epochs=2, **base),  # no data: params back, loss NaN, 0 steps
             TrainTask(client="c02", epochs=0, **base),  # zero epochs
             TrainTask(client="c03", epochs=1, **(base | {"batch_size": 1000})),  # one full batch
             TrainTask(client="c04", epochs=1, **(base | {"params": bad}))]  # does not fit the model
    ex = VectorizedExecutor(ws, max_clients=1)  # one client per pass still works
    handles = [ex.submit(t) for t in tasks]
    evaluation = ex.submit(EvalTask(p0))
    with pytest.raises(ProtocolError, match="missing"):
        handles[4].result()
    ref = _inline(ws, tasks[:4])
    _assert_close(ref, [h.result() for h in handles[:4]])
    assert np.isnan(handles[1].result().loss) and handles[1].result().steps == 0
    assert isinstance(evaluation.result(), EvalResult)
    assert evaluation.result().accuracy == ws.run(EvalTask(p0)).accuracy
    assert ex.stats.batched_tasks == 2 and ex.stats.inline_tasks == 3
    # tasks submitted after a flush form the next batch
    late = ex.submit(TrainTask(client="c05", epochs=1, **base))
    _assert_close(_inline(ws, [TrainTask(client="c05", epochs=1, **base)]), [late.result()])


def test_vectorized_cnn_matches_inline(digits):
    train, test = digits
    parts = partition("iid", train.y, 6, 0)
    ws = Workspace(train, test, {f"k{i}": p[:40] for i, p in enumerate(parts)}, "cnn", {"channels": (4, 8)}, 1)
    tasks = [TrainTask(client=f"k{i}", params=initial_params(ws), epochs=1, batch_size=16, lr=0.05,
                       momentum=0.9, seed=i) for i in range(6)]
    ex = VectorizedExecutor(ws)
    handles = [ex.submit(t) for t in tasks]
    _assert_close(_inline(ws, tasks), [h.result() for h in handles])
    assert ex.stats.batched_tasks == 6


def test_process_pool_is_bit_identical_to_inline(ws):
    clients = ["c00", "c01", "c02", "empty"]
    tasks = [TrainTask(client=c, params=initial_params(ws), epochs=2, batch_size=16, lr=0.05, momentum=0.9,
                       prox_mu=0.1, seed=i) for i, c in enumerate(clients)]
    ref = _inline(ws, tasks)
    with make_executor("process", ws, workers=2) as ex:
        handles = [ex.submit(t) for t in tasks] + [ex.submit(EvalTask(ref[0].params))]
        got = [h.result() for h in handles[:-1]]
        assert handles[-1].result().accuracy == ws.run(EvalTask(ref[0].params)).accuracy
        with pytest.raises(ProtocolError):  # the task's own error crosses the process boundary
            ex.submit(TrainTask(client="c00", params={}, epochs=1, batch_size=4, lr=0.1, seed=0)).result()
    for a, b in zip(ref, got):
        assert (a.num_samples, a.steps) == (b.num_samples, b.steps)
        assert (np.isnan(a.loss) and np.isnan(b.loss)) or a.loss == b.loss
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    with pytest.raises(UsageError, match="closed"):
        ex.submit(tasks[0])


def test_registry_names_and_errors(ws):
    assert EXECUTORS.names() == ["inline", "process", "ray", "vectorized"]
    assert isinstance(make_executor("inline", ws), InlineExecutor)
    ex = make_executor("vectorized", ws, max_clients=8)
    assert isinstance(ex, VectorizedExecutor) and ex.max_clients == 8
    assert ex.flops(TrainTask(client="c00", params={}, epochs=1, batch_size=1, lr=1, seed=0)) > 0
    with pytest.raises(RegistryError, match="valid: inline, process, ray, vectorized"):
        make_executor("dask", ws)
    with pytest.raises(UsageError, match="unknown parameter.*workerz"):
        make_executor("process", ws, workerz=2)
    with pytest.raises(UsageError, match="unknown parameter"):
        make_executor("inline", ws, workers=2)


def test_vectorized_fedavg_simulation_matches_inline():
    from meshlearn.experiment.fl.build import build_simulation
    from meshlearn.experiment.fl.schema import fl_config

    cfg = fl_config({"name": "vec", "data": {"clients": 8}, "fl": {"rounds": 3, "epochs": 1, "algorithm": "fedprox"}})

    def run(name):
        sim = build_simulation(cfg)
        sim.sim.executor = make_executor(name, sim.workspace)
        sim.sim.run(until=10_000)
        assert sim.sim.stopped
        return [(r["key"], r["round"], r["node"], r["t_sim"], r["value"]) for r in sim.sim.sink.rows]

    ref, got = run("inline"), run("vectorized")
    assert [r[:4] for r in ref] == [r[:4] for r in got]  # same metrics at the same virtual times
    assert np.allclose([r[4] for r in ref], [r[4] for r in got], rtol=1e-4, atol=1e-5)
