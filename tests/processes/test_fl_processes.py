"""Real OS processes on loopback: `meshlearn serve` + `meshlearn join` (marked tier `processes`).

Each test starts the CLI as separate processes, reads the server's progress lines, kills
processes with SIGKILL where the scenario says so, and checks the run store afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from meshlearn.store import RunStore

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, tmp_path, rounds, clients=4, extra=()):
        self.tmp, self.port, self.n = tmp_path, free_port(), clients
        self.sets = ["--set", f"fl.rounds={rounds}", "--set", f"data.clients={clients}",
                     "--set", "fl.round_deadline_s=3", "--set", "fl.epochs=1", *extra]
        self.env = {**os.environ, "MESHLEARN_SECRET": "test-secret", "MESHLEARN_RUNS": str(tmp_path / "runs")}
        self.server = None
        self.clients: dict[str, subprocess.Popen] = {}
        self.lines: list[str] = []

    def cli(self, *args) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "meshlearn", *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def start_server(self, *args):
        base = ["serve", "--listen", f"127.0.0.1:{self.port}", "--timeout", "180"]
        self.server = self.cli(*base, *(args or ("quickstart", *self.sets)))

    def start_clients(self):
        for i in range(self.n):
            cid = f"client-{i:02d}"
            self.clients[cid] = self.cli("join", "quickstart", *self.sets, "--client-id", cid, "--server",
                                         f"127.0.0.1:{self.port}", "--rejoin-s", "1", "--timeout", "180")

    def wait_for(self, text: str) -> str:
        for line in self.server.stdout:
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"server ended without printing {text!r}:\n{''.join(self.lines)}")

    def finish(self) -> int:
        out, _ = self.server.communicate(timeout=180)
        self.lines.append(out)
        return self.server.returncode

    def kill_all(self):
        for p in [self.server, *self.clients.values()]:
            if p and p.poll() is None:
                p.kill()
                p.wait()

    def table(self):
        run = RunStore(self.tmp / "runs").open_run("latest")
        return run, run.metrics_reader().round_table(["accuracy", "clients_completed", "round_ok"])


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(**kw):
        made.append(Cluster(tmp_path, **kw))
        return made[-1]
    yield make
    for c in made:
        c.kill_all()


def test_four_client_processes_learn_and_killing_one_mid_run_still_completes_the_rounds(cluster):
    c = cluster(rounds=5)
    c.start_server()
    c.start_clients()
    c.wait_for("checkpoint round 1 saved")
    c.clients["client-03"].send_signal(signal.SIGKILL)
    assert c.finish() == 0, "".join(c.lines)
    for cid, p in c.clients.items():
        out, _ = p.communicate(timeout=60)
        assert cid == "client-03" or (p.returncode == 0 and "run finished" in out), out
    run, rows = c.table()
    assert [r["round"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(r["round_ok"] == 1 for r in rows) and rows[0]["clients_completed"] == 4
    assert rows[-1]["clients_completed"] == 3  # the dead client is dropped at the deadline
    assert rows[-1]["accuracy"] > 0.8 and run.reload()["status"] == "completed"


@pytest.mark.slow  # the default tier kills `serve` mid-checkpoint-write and resumes it with rejoining clients
# (tests/processes/test_store_kill.py); this one kills it at a clean point and checks the accuracy too
def test_killed_server_restarts_and_resumes_at_the_last_completed_round(cluster):
    c = cluster(rounds=8)
    c.start_server()
    c.start_clients()
    c.wait_for("checkpoint round 2 saved")
    c.server.send_signal(signal.SIGKILL)
    c.server.wait()
    run = RunStore(c.tmp / "runs").open_run("latest")
    saved = run.latest_checkpoint()[0]
    assert saved >= 2
    c.lines.clear()
    c.start_server("--resume", run.id)
    first = c.wait_for("serving run")
    assert f"starting at round {saved + 1}" in first
    assert c.finish() == 0, "".join(c.lines)
    _, rows = c.table()
    assert [r["round"] for r in rows] == list(range(1, 9))  # every round exactly once
    assert rows[-1]["accuracy"] > 0.8
    for p in c.clients.values():
        p.communicate(timeout=60)
        assert p.returncode == 0


def test_sigint_interrupts_a_simulated_run_which_then_resumes(tmp_path):
    env = {**os.environ, "MESHLEARN_RUNS": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-m", "meshlearn", "run", "quickstart", "--set", "fl.rounds=400",
                             "--quiet"], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        runs = RunStore(tmp_path / "runs").list_runs()
        if runs and RunStore(tmp_path / "runs").open_run("latest").latest_checkpoint():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "resume" in out
    run = RunStore(tmp_path / "runs").open_run("latest")
    assert run.reload()["status"] == "interrupted"
    assert run.latest_checkpoint()[0] >= 1


# the default tier runs one algorithm of each family as processes; `-m slow` runs the others too
@pytest.mark.parametrize("algorithm", ["dsfl", pytest.param("fd", marks=pytest.mark.slow)])
def test_distillation_algorithms_run_as_real_processes(cluster, algorithm):
    c = cluster(rounds=2, clients=3, extra=("--set", f"fl.algorithm={algorithm}", "--set", "data.open_size=200",
                                            "--set", "data.partition=shards"))
    c.start_server()
    c.start_clients()
    assert c.finish() == 0, "".join(c.lines)
    run, rows = c.table()
    assert [r["round"] for r in rows] == [1, 2]
    assert all(r["clients_completed"] == 3 and r["round_ok"] == 1 for r in rows)
    assert run.reload()["status"] == "completed"
    for p in c.clients.values():
        p.communicate(timeout=60)
        assert p.returncode == 0


@pytest.mark.parametrize("algorithm", [pytest.param("cmfd", marks=pytest.mark.slow), "gossip"])
def test_decentralized_peers_run_as_real_processes_on_a_ring(tmp_path, algorithm):
    ids = [f"client-{i:02d}" for i in range(4)]
    ports = {pid: free_port() for pid in ids}
    sets = ["--set", f"fl.algorithm={algorithm}", "--set", "data.clients=4", "--set", "data.open_size=200",
            "--set", "data.partition=shards", "--set", "decentral.epochs=3", "--set", "decentral.eval_every=1",
            "--set", "network.topology=ring", "--set", "network.uplink_loss={}"]  # peers have no uplink
    env = {**os.environ, "MESHLEARN_SECRET": "ring-secret", "MESHLEARN_RUNS": str(tmp_path / "runs")}
    procs = []
    for pid in ids:
        book = [arg for other in ids if other != pid for arg in ("--peer", f"{other}=127.0.0.1:{ports[other]}")]
        procs.append(subprocess.Popen([sys.executable, "-m", "meshlearn", "peer", "quickstart", *sets, "--id", pid,
                                       "--listen", f"127.0.0.1:{ports[pid]}", *book, "--timeout", "150"],
                                      env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        outs = [p.communicate(timeout=200)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert "epoch 3: accuracy" in out and "finished" in out, out
    store = RunStore(tmp_path / "runs")
    runs = {r.info["peer"]: store.open_run(r.id) for r in store.list_runs()}
    assert sorted(runs) == ids and all(r.info["status"] == "completed" for r in runs.values())
    for run in runs.values():  # every peer stored its own accuracy for each epoch
        assert [row.round for row in run.metrics_reader().rows("accuracy")] == [1, 2, 3]


def test_client_keys_admit_each_client_with_its_own_key_only_and_outsiders_not_at_all(cluster):
    c = cluster(rounds=2, clients=2)
    keys = c.tmp / "keys"
    secret = c.tmp / "cluster.key"
    for args in (("keys", "secret", str(secret)), ("keys", "issue", "client-00", "client-01", "--secret-file",
                                                    str(secret), "--out", str(keys))):
        done = subprocess.run([sys.executable, "-m", "meshlearn", *args], env=c.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert oct((keys / "client-00.key").stat().st_mode & 0o777) == "0o600"
    wrong = subprocess.run([sys.executable, "-m", "meshlearn", "join", "quickstart", "--key-file",
                            str(keys / "client-00.key"), "--client-id", "client-01"], env=c.env,
                           capture_output=True, text=True)
    assert wrong.returncode == 2 and "is the key of 'client-00'" in wrong.stderr
    c.start_server("quickstart", *c.sets, "--client-keys", "--secret-file", str(secret))
    c.wait_for("serving run")  # the intruders must knock while the server listens, before the honest clients
    outsider = subprocess.Popen([sys.executable, "-m", "meshlearn", "join", "quickstart", *c.sets, "--client-id",
                                 "client-01", "--server", f"127.0.0.1:{c.port}", "--timeout", "6", "--rejoin-s", "1"],
                                env={**c.env, "MESHLEARN_SECRET": "wrong"}, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)  # no secret at all: a wrong one
    c.wait_for("rejected")
    insider = c.cli("join", "quickstart", *c.sets, "--client-id", "client-01", "--server", f"127.0.0.1:{c.port}",
                    "--secret-file", str(secret), "--timeout", "6", "--rejoin-s", "1")  # the shared secret: no key
    c.wait_for("rejected")
    for cid in ("client-00", "client-01"):
        c.clients[cid] = c.cli("join", "quickstart", *c.sets, "--key-file", str(keys / f"{cid}.key"), "--server",
                               f"127.0.0.1:{c.port}", "--rejoin-s", "1", "--timeout", "180")
    assert c.finish() == 0, "".join(c.lines)
    insider.communicate(timeout=60)
    outsider.communicate(timeout=60)
    assert insider.returncode != 0 and outsider.returncode != 0
    _, rows = c.table()
    assert [r["clients_completed"] for r in rows] == [2, 2]
