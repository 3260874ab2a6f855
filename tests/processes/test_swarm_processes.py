"""`meshlearn swarm serve` x 3-4 + `swarm infer` / `swarm generate` on loopback, one server SIGKILLed mid-run
(tier `processes`)."""

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


def _env(tmp_path):
    return {**os.environ, "MESHLEARN_SECRET": "a-swarm-test-secret-of-32-bytes!", "MESHLEARN_RUNS": str(tmp_path / "runs")}


def _ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _serve(model, spans, env, duration=60):
    """One `swarm serve` process per span, each announced on stderr before this returns."""
    ports = dict(zip(spans, _ports(len(spans))))
    procs = {sid: subprocess.Popen([*CLI, "serve", "--model", str(model), "--blocks", span, "--id", sid, "--listen",
                                    f"127.0.0.1:{ports[sid]}", "--duration", str(duration)], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for sid, span in spans.items()}
    try:
        for p in procs.values():
            assert "serving blocks" in p.stderr.readline()
    except BaseException:
        _stop(procs)
        raise
    return procs, [arg for sid in spans for arg in ("--server", f"{sid}=127.0.0.1:{ports[sid]}@{spans[sid]}")]


def _stop(procs):
    for p in procs.values():
        if p.poll() is None:
            p.kill()
        p.wait()


def test_answers_survive_a_killed_server_and_equal_the_single_process_model(tmp_path):
    import torch

    from meshlearn.swarm.blocks import BlockStack

    env = _env(tmp_path)
    model = tmp_path / "gpt.safetensors"
    subprocess.run([*CLI, "init", str(model)], env=env, check=True, capture_output=True)
    procs, servers = _serve(model, {"s0": "0:4", "s1": "0:4", "s2": "4:8", "s3": "4:8"}, env, duration=120)
    try:
        infer = subprocess.Popen([*CLI, "infer", "--model", str(model), *servers, "--requests", "300", "--out",
                                  str(tmp_path / "answers.npz")], env=env, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        time.sleep(1.5)  # mid-run: equal costs break ties by id, so blocks 0-3 run on s0
        procs["s0"].send_signal(signal.SIGKILL)
        out, err = infer.communicate(timeout=120)
        assert infer.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        _stop(procs)
    assert summary["answered"] == 300
    saved = np.load(tmp_path / "answers.npz")
    stack = BlockStack.load(model)
    with torch.no_grad():
        expected = np.stack([stack.run_span(0, 8, x).numpy() for x in saved["inputs"]])
    assert np.array_equal(saved["outputs"], expected)  # bitwise, fp32
    assert summary["reroutes"] >= 1 and summary["longest_stall_s"] < 2.0  # the kill hit a request in flight


@pytest.mark.timeout(60)
def test_generation_survives_a_killed_server_and_equals_the_single_process_text(tmp_path):
    from meshlearn.data.text import CharVocab, load_corpus
    from meshlearn.models.gpt import GPTConfig, build_gpt
    from meshlearn.swarm.blocks import BlockStack, generate_local
    from meshlearn.swarm.generate import Sampler

    env = _env(tmp_path)
    model, prompt, vocab = tmp_path / "gpt.safetensors", "The weather is ", CharVocab.from_text(load_corpus())
    BlockStack.from_gpt(build_gpt(GPTConfig(vocab.size, n_blocks=6), 0)).save(model)  # what `swarm init` writes
    procs, servers = _serve(model, {"s0": "0:3", "s1": "0:3", "s2": "3:6"}, env)
    try:
        gen = subprocess.Popen([*CLI, "generate", "--model", str(model), *servers, "--prompt", prompt, "--tokens", "40",
                                "--timeout", "0.5"], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        streamed = gen.stdout.read(len(prompt) + 10)  # the prompt and 10 tokens: mid-generation
        procs["s0"].send_signal(signal.SIGKILL)  # equal costs break ties by id: blocks 0-2 ran on s0
        out, err = gen.communicate(timeout=40)
        assert gen.returncode == 0, err
    finally:
        _stop(procs)
    summary = json.loads(out.strip().splitlines()[-1])
    expected = generate_local(BlockStack.load(model), vocab.encode(prompt)[None], 40, Sampler())
    assert summary["tokens"] == 40 and summary["text"] == vocab.decode(expected[0])
    assert (streamed + out).startswith(prompt + summary["text"])  # streamed as generated
    assert summary["rebuilds"] == 1 and summary["rebuilt_positions"] >= len(prompt) + 9
    assert summary["longest_stall_s"] < 2.0


def _status(model, seed, env):
    out = subprocess.run([*CLI, "status", "--model", str(model), "--join", seed, "--json", "--wait", "1"], env=env,
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout) if out.returncode == 0 else None


@pytest.mark.timeout(120)
def test_servers_place_themselves_status_shows_it_and_a_client_that_joins_survives_a_kill(tmp_path):
    import torch

    from meshlearn.swarm.blocks import BlockStack

    env = _env(tmp_path)
    model = tmp_path / "gpt.safetensors"
    subprocess.run([*CLI, "init", str(model)], env=env, check=True, capture_output=True)
    ports = dict(zip(["s0", "s1", "s2", "s3"], _ports(4)))
    seed = f"s0=127.0.0.1:{ports['s0']}"
    procs = {sid: subprocess.Popen([*CLI, "serve", "--model", str(model), "--capacity", "4", "--join", seed, "--id", sid,
                                    "--listen", f"127.0.0.1:{port}", "--duration", "90"], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for sid, port in ports.items()}
    procs["intruder"] = subprocess.Popen([*CLI, "serve", "--model", str(model), "--capacity", "4", "--join", seed,
                                          "--id", "intruder", "--listen", f"127.0.0.1:{_ports(1)[0]}", "--duration",
                                          "90"], env={**env, "MESHLEARN_SECRET": "not-the-swarm-secret"}, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # an unauthenticated server
    try:
        for _ in range(20):
            status = _status(model, seed, env)
            if status and status["replicas"] == [2] * 8:
                break
        assert status["replicas"] == [2] * 8, status  # 4 servers x 4 blocks, no two on top of each other
        infer = subprocess.Popen([*CLI, "infer", "--model", str(model), "--join", seed, "--requests", "300", "--out",
                                  str(tmp_path / "answers.npz")], env=env, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        time.sleep(2.0)
        victim = next(r["server"] for r in status["servers"] if r["server"] != "s0")
        procs[victim].send_signal(signal.SIGKILL)
        out, err = infer.communicate(timeout=60)
        assert infer.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        time.sleep(3.0)
        after = _status(model, seed, env)
        procs["s0"].send_signal(signal.SIGINT)  # s0 prints its summary: what it refused
        seed_summary = json.loads(procs["s0"].communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        _stop(procs)
    assert summary["answered"] == 300
    saved = np.load(tmp_path / "answers.npz")
    stack = BlockStack.load(model)
    with torch.no_grad():
        expected = np.stack([stack.run_span(0, 8, x).numpy() for x in saved["inputs"]])
    assert np.array_equal(saved["outputs"], expected)
    assert victim not in {r["server"] for r in after["servers"]} and len(after["servers"]) == 3
    assert "intruder" not in {r["server"] for r in status["servers"]}  # it never got in
    from meshlearn.store import RunStore

    store = RunStore(tmp_path / "runs")
    runs = {r.name: r for r in store.list_runs()}
    assert runs[f"swarm-serve-{victim}"].status == "died" and runs["swarm-serve-s0"].status == "interrupted"
    members = store.open_run(runs["swarm-serve-s0"].id).metrics_reader().rows("swarm.members")
    assert max(r.value for r in members) >= 4  # its view, period by period, streamed into its run
    rejected = seed_summary["runtime"]
    assert rejected.get("handshakes_rejected", 0) + rejected.get("frames_rejected_auth", 0) >= 1, seed_summary
