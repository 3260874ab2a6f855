"""Real SWIM over UDP: members in 4 `meshlearn overlay up` processes on loopback.

One process is SIGKILLed after the cluster has formed; every survivor must declare each of its
members dead, and no live member may ever be declared dead. The `processes` tier runs 40 members
(10 per process) with a short steady phase; the `slow` tier runs the issue's 100 members and
2-minute steady phase.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict

import pytest

PROCS = 4


def free_block(n: int) -> int:
    """A base port with n consecutive free TCP and UDP ports."""
    for _ in range(50):
        base = random.randrange(20_000, 60_000 - n)
        try:
            for port in range(base, base + n):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports")


def run_cluster(tmp_path, steady_s: float, after_kill_s: float, per: int) -> dict:
    base = free_block(PROCS * per)
    env = {**os.environ, "MESHLEARN_SECRET": "overlay-test-key", "MESHLEARN_RUNS": str(tmp_path / "runs")}
    cluster = f"127.0.0.1:{base}-{base + PROCS * per - 1}"
    procs = []
    for p in range(PROCS):
        first = base + p * per
        args = ["overlay", "up", "--listen", f"127.0.0.1:{first}-{first + per - 1}", "--cluster", cluster,
                "--duration", str(steady_s + after_kill_s), "--status-every", "0",
                "--events", str(tmp_path / f"events{p}.jsonl")]
        procs.append(subprocess.Popen([sys.executable, "-m", "meshlearn", *args], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    time.sleep(steady_s)
    killed_at = time.time()
    procs[-1].send_signal(signal.SIGKILL)
    outputs = [proc.communicate(timeout=after_kill_s + 60)[0] for proc in procs[:-1]]
    assert all(proc.returncode == 0 for proc in procs[:-1]), outputs
    events = [json.loads(line) for p in range(PROCS) for line in open(tmp_path / f"events{p}.jsonl")]
    victims = {f"127.0.0.1:{port}" for port in range(base + (PROCS - 1) * per, base + PROCS * per)}
    return dict(events=events, victims=victims, killed_at=killed_at, outputs=outputs, runs=tmp_path / "runs", per=per)


def check_run_store(result: dict) -> None:
    """Each surviving process stored its members' final view: 3/4 alive, 1/4 dead."""
    from meshlearn.store import RunStore

    per = result["per"]
    store = RunStore(result["runs"])
    runs = [store.open_run(r.id) for r in store.list_runs() if r.status == "completed"]
    assert len(runs) == PROCS - 1
    for run in runs:
        db = run.metrics_reader()
        last = max(r.round for r in db.rows("swim.alive"))
        views = [(r.value, d.value) for r, d in zip(db.rows("swim.alive", round=last),
                                                    db.rows("swim.dead", round=last))]
        assert views == [((PROCS - 1) * per, per)] * per


def check(result: dict) -> list[float]:
    events, victims, killed_at, per = result["events"], result["victims"], result["killed_at"], result["per"]
    joined = defaultdict(set)
    for e in events:
        if e["event"] == "join" and e["wall"] < killed_at:
            joined[e["node"]].add(e["member"])
    assert len(joined) == PROCS * per and all(len(m) == PROCS * per - 1 for m in joined.values())
    false_deaths = [e for e in events if e["event"] in ("dead", "left") and e["member"] not in victims]
    assert not false_deaths, false_deaths[:5]
    declared = defaultdict(dict)
    for e in events:
        if e["event"] == "dead" and e["node"] not in victims:
            declared[e["node"]].setdefault(e["member"], e["wall"] - killed_at)
    assert len(declared) == (PROCS - 1) * per and all(set(d) == victims for d in declared.values())
    return sorted(t for d in declared.values() for t in d.values())


@pytest.mark.processes
@pytest.mark.timeout(200)
def test_a_killed_process_is_detected_by_every_survivor(tmp_path):
    result = run_cluster(tmp_path, steady_s=10.0, after_kill_s=30.0, per=10)
    delays = check(result)
    check_run_store(result)
    print(f"detection delay s: median {delays[len(delays) // 2]:.1f}, max {delays[-1]:.1f}")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_minutes_steady_without_false_deaths_then_a_kill(tmp_path):
    delays = check(run_cluster(tmp_path, steady_s=120.0, after_kill_s=45.0, per=25))
    print(f"detection delay s: median {delays[len(delays) // 2]:.1f}, max {delays[-1]:.1f}")
