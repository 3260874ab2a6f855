"""A `meshlearn run` killed exactly during a checkpoint write, then resumed (issue 12, item 8; tier `processes`).

The child is the real CLI with one thing added: when it writes the checkpoint of round 3 it stops at a
chosen point of the write and says so on stdout -- half of the bytes in the temporary file
(``mid-write``), all bytes written but not yet renamed (``before-rename``), or renamed but older
checkpoints not yet pruned (``after-rename``). The test then sends SIGKILL (or SIGTERM), checks what
the store shows, resumes with the plain CLI and checks that nothing was lost: every round exactly once,
resumed from the last good checkpoint, no temporary file left. ``torn`` also cuts the renamed file in
half after the kill (what a power loss on a filesystem without ordered writes could leave): the resume
falls back to the previous checkpoint and says so. Each case prints one JSON line (the figure in
docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshlearn.store import RunStore

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]

ROUNDS, KILL_ROUND = 6, 3
SMALL = ["--set", f"fl.rounds={ROUNDS}", "--set", "data.clients=5", "--set", "faults.crashes=[]", "-q"]

STALLING_CLI = r"""
import sys, time
from pathlib import Path
import meshlearn._atomic as atomic
import meshlearn.wire.files as wire_files

ROUND, POINT = int(sys.argv[1]), sys.argv[2]
real_write = atomic.atomic_write


def stall(what):
    print(f"STALL {what}", flush=True)
    time.sleep(600)


def stalling_write(path, write, **kw):
    if Path(path).name != f"round-{ROUND:08d}.safetensors":
        return real_write(path, write, **kw)
    if POINT == "mid-write":
        def half(tmp):
            write(tmp)
            data = tmp.read_bytes()
            tmp.write_bytes(data[: len(data) // 2])
            stall(f"{tmp.name} holds {len(data) // 2} of {len(data)} bytes")
        return real_write(path, half, **kw)
    if POINT == "before-rename":
        def whole(tmp):
            write(tmp)
            stall(f"{tmp.name} complete, not renamed")
        return real_write(path, whole, **kw)
    real_write(path, write, **kw)
    stall(f"{Path(path).name} renamed, older checkpoints not pruned")


wire_files.atomic_write = stalling_write
from meshlearn.cli import main
main(sys.argv[3:])
"""


def env(runs: Path) -> dict[str, str]:
    return {**os.environ, "MESHLEARN_RUNS": str(runs), "COLUMNS": "200", "NO_COLOR": "1"}


def stalled_run(runs: Path, point: str, log: Path) -> subprocess.Popen:
    """Start the CLI run and return once it stands still inside the checkpoint write of KILL_ROUND."""
    point = "after-rename" if point == "torn" else point
    child = subprocess.Popen([sys.executable, "-c", STALLING_CLI, str(KILL_ROUND), point, "run", "quickstart", *SMALL],
                             env=env(runs), stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    for line in child.stdout:
        if line.startswith("STALL"):
            return child
    child.wait(timeout=60)
    raise AssertionError(f"the run ended without reaching the checkpoint write:\n{log.read_text()}")


def steps_in_log(run_dir: Path) -> list[int]:
    return [int(m) for m in re.findall(r" step (\d+)/", (run_dir / "run.log").read_text())]


def rounds_in_metrics(run) -> list[int]:
    return sorted(r.round for r in run.metrics_reader().rows(key="accuracy") if r.node is None)


_SLOW = pytest.mark.slow  # the default tier keeps one kill point; `-m slow` runs the other four too
# (torn checkpoint files are also skipped in the unit tier: tests/store/test_runs.py, test_store_resume.py)


@pytest.mark.parametrize("point,sig", [("mid-write", signal.SIGKILL),
                                       pytest.param("before-rename", signal.SIGKILL, marks=_SLOW),
                                       pytest.param("after-rename", signal.SIGKILL, marks=_SLOW),
                                       pytest.param("torn", signal.SIGKILL, marks=_SLOW),
                                       pytest.param("mid-write", signal.SIGTERM, marks=_SLOW)],
                         ids=["mid-write-kill", "before-rename-kill", "after-rename-kill", "torn-kill",
                              "mid-write-term"])
def test_killed_during_a_checkpoint_write_resumes_from_the_last_good_checkpoint(tmp_path, point, sig):
    runs = tmp_path / "runs"
    child = stalled_run(runs, point, tmp_path / "first.log")
    child.send_signal(sig)
    child.wait(timeout=60)
    child.stdout.close()
    store = RunStore(runs)
    run = store.open_run("latest")
    files = sorted(p.name for p in run.checkpoint_dir.iterdir())
    if point == "torn":
        newest = run.checkpoint_dir / f"round-{KILL_ROUND:08d}.safetensors"
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    at_kill = {"exit": child.returncode, "listed": store.list_runs()[0].status,
               "checkpoints": [f for f in files if not f.startswith(".")], "temp_files": [f for f in files
                                                                              if f.startswith(".")],
               "rounds_stored": rounds_in_metrics(run)}
    logged = len(steps_in_log(run.path))

    t0 = time.perf_counter()
    resumed = subprocess.run([sys.executable, "-m", "meshlearn", "run", "--resume", run.id, "-q"], env=env(runs),
                             capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    resume_s = time.perf_counter() - t0
    assert resumed.returncode == 0, resumed.stderr
    run = store.open_run(run.id)
    resumed_from = steps_in_log(run.path)[logged] - 1  # the first step the resumed process ran, minus one
    figure = {"point": point, "signal": signal.Signals(sig).name, **at_kill, "resumed_from": resumed_from,
              "rounds_redone": len(at_kill["rounds_stored"]) - resumed_from, "status": run.status,
              "rounds_final": rounds_in_metrics(run), "checkpoints_after": sorted(
                  p.name for p in run.checkpoint_dir.iterdir()), "warned": "falling back" in resumed.stderr,
              "resume_wall_s": round(resume_s, 1)}
    print("FIGURE", json.dumps(figure))

    assert at_kill["rounds_stored"] == list(range(1, KILL_ROUND + 1))  # round 3 was recorded before its checkpoint
    if sig == signal.SIGKILL:
        assert at_kill["listed"] == "died"
    else:  # SIGTERM: handled like Ctrl-C, the half-written temporary file removed on the way out
        assert (child.returncode, at_kill["listed"], at_kill["temp_files"]) == (143, "interrupted", [])
    good = KILL_ROUND if point == "after-rename" else KILL_ROUND - 1
    assert resumed_from == good and figure["warned"] == (point == "torn")
    assert run.status == "completed" and figure["rounds_final"] == list(range(1, ROUNDS + 1))  # each round once
    assert figure["checkpoints_after"] == [f"round-{r:08d}.safetensors" for r in (4, 5, 6)]  # temp files pruned


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_killed_during_a_checkpoint_write_resumes_with_nothing_lost(tmp_path):
    """`meshlearn serve` with 3 `join` clients: SIGKILL mid-write of checkpoint 3, `serve --resume`, clients rejoin."""
    runs, port = tmp_path / "runs", free_port()
    sets = ["--set", f"fl.rounds={ROUNDS}", "--set", "data.clients=3", "--set", "fl.round_deadline_s=3",
            "--set", "fl.epochs=1", "--set", "faults.crashes=[]"]
    e = {**env(runs), "MESHLEARN_SECRET": "store-kill-test-secret-0123456789"}
    serve = ["serve", "--listen", f"127.0.0.1:{port}", "--timeout", "180"]
    server = subprocess.Popen([sys.executable, "-c", STALLING_CLI, str(KILL_ROUND), "mid-write", *serve, "quickstart",
                               *sets], env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    clients = [subprocess.Popen([sys.executable, "-m", "meshlearn", "join", "quickstart", *sets, "--client-id",
                                 f"client-{i:02d}", "--server", f"127.0.0.1:{port}", "--rejoin-s", "1", "--timeout",
                                 "180"], env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(3)]
    try:
        seen = []
        for line in server.stdout:
            seen.append(line)
            if line.startswith("STALL"):
                break
        else:
            raise AssertionError("".join(seen))
        server.kill()
        server.wait(timeout=60)
        store = RunStore(runs)
        run = store.open_run("latest")
        at_kill = (store.list_runs()[0].status, rounds_in_metrics(run))
        resumed = subprocess.run([sys.executable, "-m", "meshlearn", *serve, "--resume", run.id], env=e,
                                 capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        for c in clients:
            assert c.wait(timeout=120) == 0
    finally:
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
                p.wait()
        server.stdout.close()
    run = store.open_run(run.id)
    figure = {"point": "serve mid-write", "signal": "SIGKILL", "listed": at_kill[0], "rounds_stored": at_kill[1],
              "resumed_at": re.search(r"starting at round (\d+)", resumed.stdout).group(1), "status": run.status,
              "rounds_final": rounds_in_metrics(run), "checkpoints_after": sorted(
                  p.name for p in run.checkpoint_dir.iterdir())}
    print("FIGURE", json.dumps(figure))
    assert at_kill == ("died", [1, 2, 3]) and figure["resumed_at"] == str(KILL_ROUND)  # from checkpoint 2
    assert run.status == "completed" and figure["rounds_final"] == list(range(1, ROUNDS + 1))
    assert figure["checkpoints_after"] == [f"round-{r:08d}.safetensors" for r in (4, 5, 6)]
