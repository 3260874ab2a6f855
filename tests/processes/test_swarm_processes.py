"""`meshlearn swarm serve` x 4 + `swarm infer` on loopback, one server SIGKILLed mid-run (tier `processes`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]
CLI = [sys.executable, "-m", "meshlearn", "swarm"]


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_answers_survive_a_killed_server_and_equal_the_single_process_model(tmp_path):
    import torch

    from meshlearn.swarm.blocks import BlockStack

    env = {**os.environ, "MESHLEARN_SECRET": "a-swarm-test-secret-of-32-bytes!"}
    model = tmp_path / "gpt.safetensors"
    subprocess.run([*CLI, "init", str(model)], env=env, check=True, capture_output=True)
    spans = {"s0": "0:4", "s1": "0:4", "s2": "4:8", "s3": "4:8"}
    ports = dict(zip(spans, _ports(4)))
    procs = {sid: subprocess.Popen([*CLI, "serve", "--model", str(model), "--blocks", span, "--id", sid, "--listen",
                                    f"127.0.0.1:{ports[sid]}", "--duration", "120"], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for sid, span in spans.items()}
    try:
        for p in procs.values():
            assert "serving blocks" in p.stderr.readline()
        servers = [arg for sid in spans for arg in ("--server", f"{sid}=127.0.0.1:{ports[sid]}@{spans[sid]}")]
        infer = subprocess.Popen([*CLI, "infer", "--model", str(model), *servers, "--requests", "300", "--out",
                                  str(tmp_path / "answers.npz")], env=env, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        time.sleep(1.5)  # mid-run: equal costs break ties by id, so blocks 0-3 run on s0
        procs["s0"].send_signal(signal.SIGKILL)
        out, err = infer.communicate(timeout=120)
        assert infer.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    assert summary["answered"] == 300
    saved = np.load(tmp_path / "answers.npz")
    stack = BlockStack.load(model)
    with torch.no_grad():
        expected = np.stack([stack.run_span(0, 8, x).numpy() for x in saved["inputs"]])
    assert np.array_equal(saved["outputs"], expected)  # bitwise, fp32
    assert summary["reroutes"] >= 1 and summary["longest_stall_s"] < 2.0  # the kill hit a request in flight
