"""Run status that does not lie (issue 12): the owning process is recorded, a run whose owner is gone "died".

Real child processes own the runs here; they are killed with SIGKILL or SIGTERM and the store is read
afterwards, as `runs list` would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meshlearn.errors import StoreError
from meshlearn.store import Run, RunStore
from meshlearn.store.owner import current_owner, owner_state
from meshlearn.store.files import write_json

CONFIG = "seed = 1\n"

OWN_A_RUN = """
import sys, time
from meshlearn.store import RunStore
run = RunStore(sys.argv[1]).create_run("owned", "seed = 1\\n")
print(run.id, flush=True)
time.sleep(120)
"""


def owned_by_child(root: Path) -> tuple[subprocess.Popen, str]:
    """A child process that created a run (status running) and sleeps; returns it and the run id."""
    child = subprocess.Popen([sys.executable, "-c", OWN_A_RUN, str(root)], stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def stop(child: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    child.send_signal(sig)
    child.wait(timeout=30)
    child.stdout.close()


def test_a_new_run_records_its_owning_process(tmp_path):
    run = RunStore(tmp_path).create_run("x", CONFIG)
    owner = run.info["owner"]
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["since"]
    assert owner_state(owner) == "alive" and run.status == "running" and run.died_at is None


def test_a_sigkilled_owner_leaves_a_run_listed_as_died_with_the_time(tmp_path):
    child, run_id = owned_by_child(tmp_path)
    try:
        assert RunStore(tmp_path).list_runs()[0].status == "running"
    finally:
        stop(child)
    listed = RunStore(tmp_path).list_runs()[0]
    assert (listed.id, listed.status) == (run_id, "died") and listed.died.startswith(listed.created[:4])
    run = RunStore(tmp_path).open_run(run_id)
    assert run.status == "died" and run.died_at == listed.died
    assert json.loads((run.path / "run.json").read_text())["status"] == "running"  # read-only: nothing rewritten


def test_a_resume_is_refused_while_the_owner_lives_and_allowed_once_it_died(tmp_path):
    child, run_id = owned_by_child(tmp_path)
    try:
        with pytest.raises(StoreError, match=rf"still running in process {child.pid} .*kill -TERM {child.pid}"):
            RunStore(tmp_path).open_run(run_id).claim()
    finally:
        stop(child)
    run = RunStore(tmp_path).open_run(run_id)
    run.claim()
    assert run.info["owner"]["pid"] == os.getpid() and run.status == "running"


def forged(run: Run, **owner) -> Run:
    write_json(run.path / "run.json", {**run.info, "owner": {**run.info["owner"], **owner}})
    return Run(run.path)


def test_a_reused_pid_or_a_reboot_is_not_the_owner(tmp_path):
    run = RunStore(tmp_path).create_run("x", CONFIG)
    if run.info["owner"]["ticks"] is None:
        pytest.skip("no /proc here: the start time of a process is unknown")
    assert forged(run, ticks=run.info["owner"]["ticks"] + 1).status == "died"
    assert forged(run, boot="another-boot").status == "died"


def test_a_run_owned_on_another_host_keeps_its_status(tmp_path):
    run = forged(RunStore(tmp_path).create_run("x", CONFIG), host="not-" + socket.gethostname(), pid=1 << 22)
    assert run.status == "running" and RunStore(tmp_path).list_runs()[0].status == "running"


def test_runs_without_an_owner_record_keep_their_status(tmp_path):
    run = RunStore(tmp_path).create_run("x", CONFIG)
    info = {k: v for k, v in run.info.items() if k != "owner"}
    write_json(run.path / "run.json", info)
    assert Run(run.path).status == "running" and owner_state(None) == "unknown"


RUN_UNTIL_TERMINATED = """
import sys, time
from meshlearn.experiment.lifecycle import running
from meshlearn.store import RunStore
run = RunStore(sys.argv[1]).create_run("term", "seed = 1\\n")
with running(run):
    run.metrics.log("acc", 0.5, round=1)
    run.metrics.flush()
    print(run.id, flush=True)
    time.sleep(120)
"""


def test_sigterm_ends_a_running_run_as_interrupted_like_ctrl_c(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", RUN_UNTIL_TERMINATED, str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    run_id = child.stdout.readline().strip()
    assert run_id, child.stderr.read()
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=30)
    assert "Terminated" in err  # the exception, raised where the run was
    run = RunStore(tmp_path).open_run(run_id)
    assert (run.status, run.info["signal"]) == ("interrupted", "SIGTERM"), err
    assert "terminated (SIGTERM): completed steps are saved" in (run.path / "run.log").read_text()
    assert run.metrics_reader().max_round() == 1


def test_a_failure_to_record_the_end_never_hides_the_error_that_ended_the_run(tmp_path, monkeypatch):
    from meshlearn.experiment.lifecycle import running
    from meshlearn.store import runs as runs_mod

    run = RunStore(tmp_path).create_run("x", CONFIG)

    def disk_full(*_):
        raise OSError(28, "No space left on device")

    with pytest.raises(ZeroDivisionError):
        with running(run):
            monkeypatch.setattr(runs_mod, "write_json", disk_full)
            1 / 0
    monkeypatch.undo()
    assert Run(run.path).info["status"] == "running"  # could not be rewritten: `died` once this process ends
    assert "could not record that run" in (run.path / "run.log").read_text()


def test_the_owner_record_is_plain_json():
    owner = current_owner()
    assert json.loads(json.dumps(owner)) == owner and set(owner) == {"pid", "host", "boot", "ticks", "since"}


def test_sigterm_outside_the_main_thread_is_left_alone(tmp_path):
    import threading

    from meshlearn.experiment.lifecycle import running

    run, seen = RunStore(tmp_path).create_run("x", CONFIG), []
    before = signal.getsignal(signal.SIGTERM)

    def body():
        with running(run):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) == before


def test_the_sigterm_handler_is_restored_after_the_run(tmp_path):
    from meshlearn.experiment.lifecycle import running

    before = signal.getsignal(signal.SIGTERM)
    run = RunStore(tmp_path).create_run("x", CONFIG)
    with running(run):
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before
