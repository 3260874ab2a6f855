"""Byte parity: the simulator counts exactly the bytes the asyncio runtime writes to its sockets."""

import asyncio

import pytest

from meshlearn.experiment.fl.build import build_simulation, client_ids
from meshlearn.experiment.fl.deploy import join_runtime, serve_runtime
from meshlearn.experiment.fl.schema import fl_config
from meshlearn.sim.runtime import MemorySink

KEYS = ("bytes_up", "bytes_down", "clients_completed", "accuracy")


def cfg(**wire):
    return fl_config({"name": "parity", "data": {"clients": 4}, "wire": wire, "fl": {"rounds": 2, "epochs": 1}})


def simulated(c):
    s = build_simulation(c)
    s.sim.run()
    clients_tx = {cid: s.sim.context(cid).tx_bytes for cid in client_ids(4)}
    return {k: s.sim.sink.series(k) for k in KEYS}, clients_tx


async def real(c):
    sink = MemorySink()
    server_rt, _ = serve_runtime(c, listen=("127.0.0.1", 0), secret=b"k", sink=sink)
    await server_rt.start()
    clients = [join_runtime(c, cid, server=server_rt.address, secret=b"k")[0] for cid in client_ids(4)]
    done = await asyncio.gather(server_rt.run(timeout=60), *(rt.run(timeout=60) for rt in clients))
    assert all(done)
    clients_tx = {cid: rt.context(cid).tx_bytes for cid, rt in zip(client_ids(4), clients)}
    return {k: sink.series(k) for k in KEYS}, clients_tx


@pytest.mark.timeout(120)
@pytest.mark.parametrize("wire", [{}, {"compression": "zstd", "quantize": "fp16"}])
def test_simulated_bytes_equal_socket_bytes_for_the_same_rounds(wire):
    sim_metrics, sim_clients = simulated(cfg(**wire))
    real_metrics, real_clients = asyncio.run(real(cfg(**wire)))
    assert sim_metrics["clients_completed"] == real_metrics["clients_completed"] == [4.0, 4.0]
    assert sim_metrics["bytes_up"] == real_metrics["bytes_up"]
    assert sim_metrics["bytes_down"] == real_metrics["bytes_down"]
    assert sim_clients == real_clients  # each client's socket writes, join + updates (+ nothing else)
    assert sim_metrics["accuracy"] == real_metrics["accuracy"]  # same tasks, same numbers
