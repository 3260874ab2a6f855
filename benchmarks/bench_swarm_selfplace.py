"""Self-placing `meshlearn swarm serve` processes on loopback (issue 13): how long until the swarm covers
every block at its replica target, and after a SIGKILL during an inference run, how long until it has
re-placed itself; are all answers there and bitwise equal to the single-process model?

5 servers of capacity 4 on the 8-block tiny GPT, target 2 replicas (20 block slots for 16): they start
together with no placement given, all joining through s0. While `swarm infer --join` sends requests, a
server on the half of the model that has only 2 replicas is killed; the plan then moves the spare server of
the other half. The swarm's view is read like `swarm status` does (a StatusProbe, in this process), every
0.25 s. Baseline in the same script: the same requests through the whole model in one process.

    python benchmarks/bench_swarm_selfplace.py [--requests 300] [--servers 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_swarm_processes import free_ports

CLI = [sys.executable, "-m", "meshlearn", "swarm"]
SECRET = "benchmark-swarm-secret-32-bytes!"


def view(port: int, blocks: int, digests):
    """The directory as the seed s0 and the servers it names announce it (``swarm status``)."""
    from meshlearn.cli.deploy import address, read_secret
    from meshlearn.runtime import AsyncioRuntime
    from meshlearn.swarm.announce import StatusProbe

    runtime = AsyncioRuntime(peers={"s0": ("127.0.0.1", port)}, secret=read_secret(None, False))
    probe = StatusProbe("bench", ["s0"], blocks, digests=digests, wait_s=0.25,
                        learn=lambda sid, where: runtime.peers.setdefault(sid, address(sid, where)))
    runtime.add_node(probe)
    runtime.run_forever()
    return probe.directory


def wait_for_target(port, blocks, digests, target, since, gone=(), limit=60.0):
    """Seconds from ``since`` until every block has ``target`` replicas (and no server of ``gone`` is listed)."""
    while time.time() - since < limit:
        d = view(port, blocks, digests)
        if min(d.replicas()) >= target and not set(gone) & set(d.entries):
            return time.time() - since, d
        time.sleep(0.25)
    raise SystemExit(f"the swarm did not reach {target} replicas per block within {limit} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--servers", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ.update(MESHLEARN_SECRET=SECRET, MESHLEARN_RUNS=str(tmp / "runs"))
    env = dict(os.environ)
    model = tmp / "gpt.safetensors"
    subprocess.run([*CLI, "init", str(model)], env=env, check=True, capture_output=True)
    from meshlearn.swarm.modelfile import read_header

    header = read_header(model)
    digests, blocks = header.digests, header.blocks
    ids = [f"s{i}" for i in range(args.servers)]
    ports = dict(zip(ids, free_ports(len(ids))))
    started = time.time()
    procs = {sid: subprocess.Popen([*CLI, "serve", "--model", str(model), "--capacity", "4", "--join",
                                    f"s0=127.0.0.1:{ports['s0']}", "--id", sid, "--listen", f"127.0.0.1:{ports[sid]}",
                                    "--duration", "300"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True) for sid in ids}
    try:
        first_announce = _first_seen(ports["s0"], blocks, digests, started)
        placed_s, d = wait_for_target(ports["s0"], blocks, digests, 2, started)
        reps = d.replicas()
        victim = next(s for s, a in sorted(d.entries.items()) if s != "s0" and min(reps[a.start:a.end]) == 2)
        infer = subprocess.Popen([*CLI, "infer", "--model", str(model), "--join", f"s0=127.0.0.1:{ports['s0']}",
                                  "--requests", str(args.requests), "--out", str(tmp / "answers.npz")], env=env,
                                 text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        procs[victim].send_signal(signal.SIGKILL)
        killed = time.time()
        replaced_s, after = wait_for_target(ports["s0"], blocks, digests, 2, killed, gone=[victim])
        out, err = infer.communicate(timeout=300)
        summary = json.loads(out.strip().splitlines()[-1])
    finally:
        outs = _stop(procs)
    moves = [json.loads(out.strip().splitlines()[-1]) for out in outs.values() if out.strip()]
    print(json.dumps({"servers": args.servers, "first_announcement_s": round(first_announce, 2),
                      "placed_at_target_s": round(placed_s, 2), "spans_at_start": _spans(d),
                      "killed": victim, "replaced_at_target_s": round(replaced_s, 2), "spans_after": _spans(after),
                      "moves": sum(m["moves"] for m in moves), **summary, **_check(model, tmp)}, indent=1))


def _stop(procs) -> dict[str, str]:
    """Ctrl-C to every server still running (each prints its JSON summary), then wait."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    outs = {}
    for sid, p in procs.items():
        try:
            outs[sid] = p.communicate(timeout=20)[0] or ""
        except subprocess.TimeoutExpired:
            p.kill()
            outs[sid] = p.communicate()[0] or ""
    return outs


def _first_seen(port, blocks, digests, since):
    while True:
        try:
            if view(port, blocks, digests).entries:
                return time.time() - since
        except Exception:  # noqa: BLE001  (s0 not listening yet)
            pass
        time.sleep(0.25)


def _spans(d) -> dict[str, str]:
    return {s: f"{a.start}:{a.end}" for s, a in sorted(d.entries.items())}


def _check(model: Path, tmp: Path) -> dict:
    import torch

    from meshlearn.swarm.blocks import BlockStack

    torch.set_num_threads(1)
    saved, stack = np.load(tmp / "answers.npz"), BlockStack.load(model)
    t0 = time.perf_counter()
    with torch.no_grad():
        expected = np.stack([stack.run_span(0, 8, x).numpy() for x in saved["inputs"]])
    return {"bitwise_equal": bool(np.array_equal(saved["outputs"], expected)),
            "single_process_s": round(time.perf_counter() - t0, 3)}


if __name__ == "__main__":
    main()
