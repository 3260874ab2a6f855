"""8 `meshlearn swarm serve` processes + 1 `swarm infer` client on loopback, 2 servers SIGKILLed mid-run
(issue 13): are all answers there, bitwise equal to the single-process model, and how long was the worst stall?

Tiny GPT, 8 blocks in 4 spans of 2, each span on 2 servers; the client's hop timeout is 1 s (what a stall
costs at most, plus the retry). Baseline in the same script: the same requests through the whole model in
one process.

    python benchmarks/bench_swarm_processes.py [--requests 200] [--timeout 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "meshlearn", "swarm"]
SPANS = {f"s{i}": f"{2 * (i // 2)}:{2 * (i // 2) + 2}" for i in range(8)}  # s0 s1: 0:2, s2 s3: 2:4, ...


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=1.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ, "MESHLEARN_SECRET": "benchmark-swarm-secret-32-bytes!",
           "MESHLEARN_RUNS": str(tmp / "runs")}
    model = tmp / "gpt.safetensors"
    subprocess.run([*CLI, "init", str(model)], env=env, check=True, capture_output=True)
    ports = dict(zip(SPANS, free_ports(len(SPANS))))
    procs = {sid: subprocess.Popen([*CLI, "serve", "--model", str(model), "--blocks", span, "--id", sid, "--listen",
                                    f"127.0.0.1:{ports[sid]}", "--duration", "300"], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for sid, span in SPANS.items()}
    try:
        for p in procs.values():
            p.stderr.readline()
        servers = [a for sid in SPANS for a in ("--server", f"{sid}=127.0.0.1:{ports[sid]}@{SPANS[sid]}")]
        infer = subprocess.Popen([*CLI, "infer", "--model", str(model), *servers, "--requests", str(args.requests),
                                  "--timeout", str(args.timeout), "--out", str(tmp / "answers.npz")], env=env,
                                 text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        kills = []
        for delay, sid in ((1.0, "s0"), (1.0, "s2")):  # ties break by id: the client is using s0 and s2
            time.sleep(delay)
            procs[sid].send_signal(signal.SIGKILL)
            kills.append(sid)
        out, err = infer.communicate(timeout=300)
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    import torch

    from meshlearn.swarm.blocks import BlockStack

    torch.set_num_threads(1)
    saved, stack = np.load(tmp / "answers.npz"), BlockStack.load(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        expected = np.stack([stack.run_span(0, 8, x).numpy() for x in saved["inputs"]])
    single_s = time.perf_counter() - t0
    print(json.dumps({**summary, "killed": kills, "bitwise_equal": bool(np.array_equal(saved["outputs"], expected)),
                      "single_process_s": round(single_s, 3),
                      "swarm_vs_single_wall_ratio": round(summary["wall_s"] / single_s, 1)}, indent=1))


if __name__ == "__main__":
    main()
