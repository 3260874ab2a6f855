"""Damaged run stores (issue 12): garbage and truncated metrics, full disks, read-only mounts, bad checkpoints.

Every damage is a StoreError saying what to do, and nothing is changed or deleted: real SQLite files are
garbage-filled or truncated, a full disk is SQLite's own ``max_page_count`` limit, a read-only mount is a
real one (see conftest), checkpoints have bytes flipped or hold NaN.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from meshlearn.errors import StoreError
from meshlearn.store import MetricsDB, Run, RunStore
from meshlearn.store import checkpoints as ckpt
from meshlearn.wire.files import load_tensors, save_tensors

CONFIG = "seed = 1\n"


def filled_db(path: Path, rounds: int = 40) -> Path:
    """A closed metrics file with ``rounds`` rounds of 25 keys (several pages, so truncation bites)."""
    with MetricsDB(path) as db:
        db.log_many((f"key{k}", float(r * k), r) for r in range(1, rounds + 1) for k in range(25))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"garbage": os.urandom(len(data)), "truncated": data[: len(data) // 2],
                      "header-only": data[:100]}[how])


# ------------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("how", ["garbage", "truncated", "header-only"])
@pytest.mark.parametrize("readonly", [True, False], ids=["reader", "writer"])
def test_a_damaged_metrics_file_is_a_store_error_and_stays_as_it_was(tmp_path, how, readonly):
    path = filled_db(tmp_path / "metrics.sqlite")
    damage(path, how)
    before = digest(path)
    with pytest.raises(StoreError, match=r"metrics database .* is damaged .*nothing was changed.*move the file"):
        with MetricsDB(path, readonly=readonly) as db:
            db.round_table()
    assert digest(path) == before


def test_an_emptied_metrics_file_is_a_store_error_for_readers(tmp_path):
    path = tmp_path / "metrics.sqlite"
    path.write_bytes(b"")
    with pytest.raises(StoreError, match="no metrics table: the file is empty or was truncated"):
        MetricsDB(path, readonly=True).rows()


def full_disk(db: MetricsDB) -> None:
    """SQLite's own 'database or disk is full': no page may be added to the file."""
    pages = db._conn.execute("PRAGMA page_count").fetchone()[0]
    db._conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_is_a_store_error_and_keeps_the_rows_buffered(tmp_path):
    db = MetricsDB(tmp_path / "metrics.sqlite")
    full_disk(db)
    db.log_many(("x" * 200, float(i), i) for i in range(2000))
    with pytest.raises(StoreError, match="the disk is full.*free some space"):
        db.flush()
    db._conn.execute("PRAGMA max_page_count = 1000000")  # space freed
    assert db.flush() == 2000
    db.close()


def test_finishing_when_the_last_metrics_cannot_be_written_records_failed(tmp_path):
    run = RunStore(tmp_path).create_run("x", CONFIG)
    run.metrics.flush()
    full_disk(run.metrics)
    run.metrics.log_many(("x" * 200, 1.0, 1) for _ in range(2000))
    with pytest.raises(StoreError, match="disk is full"):
        run.finish("completed")
    info = Run(run.path).info
    assert info["status"] == "failed" and "disk is full" in info["error"]
    assert run._metrics is None  # closed all the same


# ------------------------------------------------------------------------------ read-only mounts


READ_RUN = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING)
from meshlearn.errors import StoreError
from meshlearn.store import RunStore
run = RunStore(sys.argv[1]).open_run("latest")
try:
    print(json.dumps({"rows": [r["round"] for r in run.metrics_reader().round_table()], "status": run.status}))
except StoreError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def killed_writer(path: Path, rounds: int, moved: int = 0) -> None:
    """A writer process that commits ``rounds`` rounds, the first ``moved`` of them checkpointed into the
    main file, and dies without checkpointing its WAL."""
    code = textwrap.dedent(f"""
        import os
        from meshlearn.store import MetricsDB
        db = MetricsDB({str(path)!r})
        db._conn.execute("PRAGMA wal_autocheckpoint = 0")
        for r in range(1, {rounds} + 1):
            db.log("acc", r / 10, round=r)
            db.flush()
            if r == {moved}:
                db._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_finished_run_on_a_read_only_mount_can_be_read(tmp_path, readonly_python):
    store = RunStore(tmp_path / "runs")
    run = store.create_run("x", CONFIG)
    run.metrics.log_many(("acc", r / 10, r) for r in (1, 2, 3))
    run.finish("completed")
    assert sorted(p.name for p in run.path.iterdir()) == ["config.toml", "metrics.sqlite", "run.json"]
    result = readonly_python(tmp_path, f"import sys; sys.argv = ['', {str(store.root)!r}]\n" + READ_RUN)
    assert result["rows"] == [1, 2, 3] and result["status"] == "completed", result["stderr"]


def test_a_killed_run_on_a_read_only_mount_reads_what_it_can_and_says_what_it_cannot(tmp_path, readonly_python):
    store = RunStore(tmp_path / "runs")
    run = store.create_run("x", CONFIG)
    killed_writer(run.metrics_path, rounds=3, moved=1)
    code = f"import sys; sys.argv = ['', {str(store.root)!r}]\n" + READ_RUN
    assert readonly_python(tmp_path, code)["rows"] == [1, 2, 3]  # the WAL index is there: all rows
    run.metrics_path.with_name("metrics.sqlite-shm").unlink()  # copied without it: only immutable reads
    result = readonly_python(tmp_path, code)
    assert result["rows"] == [1] and "rows still in metrics.sqlite-wal" in result["stderr"]
    assert "copy the run directory somewhere writable" in result["stderr"]
    killed_writer(run.metrics_path.with_name("other.sqlite"), rounds=2)  # nothing ever moved into the file
    run.metrics_path.with_name("other.sqlite-shm").unlink()
    for suffix in ("", "-wal"):
        os.replace(run.metrics_path.with_name("other.sqlite" + suffix), str(run.metrics_path) + suffix)
    result = readonly_python(tmp_path, code)
    assert "all its rows still in metrics.sqlite-wal" in result["error"] and "copy the run" in result["error"]


CREATE_ON_READ_ONLY = """
import json, sys
from meshlearn.errors import StoreError
from meshlearn.store import Run, RunStore
out = {}
try:
    RunStore(sys.argv[1]).create_run("x", "seed = 1\\n")
except StoreError as exc:
    out["create"] = str(exc)
run = Run(sys.argv[2])
for name, call in [("resume", lambda: run.require_writable("resume")), ("status", lambda: run.set_status("x"))]:
    try:
        call()
    except StoreError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_a_read_only_runs_root_is_a_store_error_before_anything_is_written(tmp_path, readonly_python):
    store = RunStore(tmp_path / "runs")
    run = store.create_run("x", CONFIG)
    before = {p.name: digest(p) for p in run.path.iterdir()}
    code = f"import sys; sys.argv = ['', {str(store.root)!r}, {str(run.path)!r}]\n" + CREATE_ON_READ_ONLY
    out = readonly_python(tmp_path, code)
    assert "cannot create a run in" in out["create"] and "writable directory" in out["create"]
    assert "read-only here" in out["resume"] and "copy the run directory" in out["resume"]
    assert "cannot record status 'x'" in out["status"]
    assert {p.name: digest(p) for p in run.path.iterdir()} == before


def test_runs_rm_on_a_read_only_root_is_one_line_and_removes_nothing(tmp_path, readonly_python):
    store = RunStore(tmp_path / "runs")
    run = store.create_run("x", CONFIG)
    run.finish("completed")
    code = ("import json\nfrom meshlearn.cli import _run\n"
            f"print(json.dumps({{'code': _run(['runs', 'rm', {run.id!r}, '--yes', '--runs-dir', {str(store.root)!r}])}}))")
    out = readonly_python(tmp_path, code)
    assert out["code"] == 1 and out["stderr"].startswith("error: cannot remove") and "Traceback" not in out["stderr"]
    assert (run.path / "run.json").is_file()


# ----------------------------------------------------------------------------------------- checkpoints


def tensors(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((4, 3), value, dtype=np.float32), "n": np.arange(3, dtype=np.int64)}


def run_with_checkpoints(tmp_path: Path, rounds=(1, 2, 3), metric_rounds: int = 0) -> Run:
    run = RunStore(tmp_path / "runs").create_run("x", CONFIG)
    for r in rounds:
        run.save_checkpoint(r, tensors(r), {"virtual_time": float(r)})
    if metric_rounds:
        run.metrics.log_many(("acc", 0.5, r) for r in range(1, metric_rounds + 1))
        run.close()
    return run


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40  # inside the last tensor's data: the file still parses
    path.write_bytes(bytes(data))


def test_a_checkpoint_carries_a_digest_and_a_changed_byte_fails_it(tmp_path):
    run = run_with_checkpoints(tmp_path, rounds=(1, 2))
    path = run.checkpoint_dir / "round-00000002.safetensors"
    assert len(load_tensors(path)[1][ckpt.DIGEST_KEY]) == 64
    assert ckpt.load_checkpoint(path)[2] == {"virtual_time": 2.0}  # the digest is not the caller's meta
    flip_last_byte(path)
    load_tensors(path)  # still a well-formed safetensors file...
    with pytest.raises(StoreError, match="fails its sha256 check"):  # ...but not what was written
        ckpt.load_checkpoint(path)
    found = run.latest_checkpoint()
    assert found[0] == 1 and np.all(found[1]["w"] == 1)
    assert len(run.notices) == 1 and "sha256" in run.notices[0] and "falling back" in run.notices[0]


def test_a_checkpoint_with_nan_weights_is_skipped_with_a_notice(tmp_path):
    run = run_with_checkpoints(tmp_path, rounds=(1,))
    run.save_checkpoint(2, {**tensors(2), "w": np.full((4, 3), np.nan, dtype=np.float32)}, {})  # digest is valid
    assert run.latest_checkpoint()[0] == 1
    assert "NaN or infinite values in 'w'" in run.notices[0] and "round 1" in run.notices[0]


def test_a_checkpoint_written_before_digests_existed_still_loads(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    save_tensors(directory / "round-00000004.safetensors", tensors(4), {"round": 4})
    assert ckpt.latest_checkpoint(directory)[0] == 4


@pytest.mark.parametrize("how", ["truncated", "nan"])
def test_resume_refuses_when_every_checkpoint_is_damaged(tmp_path, how):
    run = run_with_checkpoints(tmp_path, metric_rounds=3)
    for _, path in ckpt.list_checkpoints(run.checkpoint_dir):
        if how == "truncated":
            path.write_bytes(path.read_bytes()[:100])
        else:
            r = int(path.stem.split("-")[1])
            ckpt.save_checkpoint(run.checkpoint_dir, r, {"w": np.full(3, np.inf, dtype=np.float32)}, {})
    before = {p.name: digest(p) for p in run.checkpoint_dir.iterdir()}
    with pytest.raises(StoreError, match=r"cannot be resumed: no checkpoint is usable.*\(and 2 older, damaged too\)"
                                         r".*nothing was changed"):
        run.latest_checkpoint()
    assert {p.name: digest(p) for p in run.checkpoint_dir.iterdir()} == before


def test_resume_refuses_when_the_checkpoint_folder_is_gone_but_rounds_are_stored(tmp_path):
    run = run_with_checkpoints(tmp_path, rounds=(), metric_rounds=3)
    with pytest.raises(StoreError, match="metrics hold 3 rounds but .*checkpoints has no checkpoint.*restart at "
                                         "round 1"):
        run.latest_checkpoint()
    assert MetricsDB(run.metrics_path, readonly=True).max_round() == 3


def test_a_run_killed_before_its_first_checkpoint_still_restarts(tmp_path):
    run = run_with_checkpoints(tmp_path, rounds=(), metric_rounds=1)  # round 1 recorded, killed before saving it
    assert run.latest_checkpoint() is None and run.notices == []


def test_resume_with_damaged_metrics_refuses(tmp_path):
    run = run_with_checkpoints(tmp_path, metric_rounds=3)
    damage(run.metrics_path, "garbage")
    with pytest.raises(StoreError, match="is damaged"):
        run.latest_checkpoint()


def test_metrics_missing_rounds_before_the_checkpoint_are_announced(tmp_path):
    run = run_with_checkpoints(tmp_path, metric_rounds=1)
    assert run.latest_checkpoint()[0] == 3
    assert "holds rounds up to 1 only" in run.notices[0] and "rounds 2-3 stay missing" in run.notices[0]


def test_the_fallback_notice_reaches_the_run_log(tmp_path, caplog):
    from meshlearn.experiment.lifecycle import running

    run = run_with_checkpoints(tmp_path, rounds=(1, 2), metric_rounds=2)
    flip_last_byte(run.checkpoint_dir / "round-00000002.safetensors")
    run.latest_checkpoint()
    with caplog.at_level(logging.WARNING, logger="meshlearn"), running(run):
        pass
    assert "sha256" in (run.path / "run.log").read_text() and run.notices == []
    assert any("falling back to the checkpoint of round 1" in r.getMessage() for r in caplog.records)
    assert sqlite3.connect(run.metrics_path).execute("SELECT MAX(round) FROM metrics").fetchone()[0] == 2
