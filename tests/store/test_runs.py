"""RunStore/Run: creating, finding and listing runs, atomic status, checkpoints."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import meshlearn.store as store
from meshlearn.errors import StoreError, UsageError
from meshlearn.store import Run, RunStore
from meshlearn.store import runs as runs_mod
from meshlearn.store.files import write_json

CONFIG = 'seed = 1\n[train]\nrounds = 3\n'


def make_store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def set_created(run: Run, created: str) -> None:
    """Pin a run's creation time so ordering tests do not depend on the clock."""
    info = {**run.info, "created": created}
    write_json(run.path / "run.json", info)


def test_public_api() -> None:
    for name in store.__all__:
        assert hasattr(store, name)


def test_default_root_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MESHLEARN_RUNS", raising=False)
    assert RunStore().root == Path("runs")
    monkeypatch.setenv("MESHLEARN_RUNS", str(tmp_path / "elsewhere"))
    assert RunStore().root == tmp_path / "elsewhere"
    assert RunStore(tmp_path / "given").root == tmp_path / "given"


def test_create_run_writes_config_and_info(tmp_path: Path) -> None:
    run = make_store(tmp_path).create_run("my exp/1", CONFIG, {"seed": 42})
    assert run.path.parent == tmp_path / "runs"
    stamp, _, slug = run.id.partition("-")[2].partition("-")
    assert run.id[:8].isdigit() and stamp.isdigit() and len(stamp) == 6 and slug == "my-exp-1"
    assert (run.path / "config.toml").read_text() == CONFIG
    assert run.config() == {"seed": 1, "train": {"rounds": 3}}
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "running" and info["seed"] == 42 and info["id"] == run.id
    assert info["name"] == "my exp/1" and info["created"].endswith("+00:00")
    assert "numpy" in info["versions"] and "python" in info["versions"]
    assert isinstance(info["command"], list)


def test_same_second_collision_adds_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = runs_mod.utc_now()
    monkeypatch.setattr(runs_mod, "utc_now", lambda: fixed)
    rs = make_store(tmp_path)
    ids = [rs.create_run("exp", CONFIG).id for _ in range(3)]
    assert ids[1] == ids[0] + "-2" and ids[2] == ids[0] + "-3"


def test_list_runs_newest_first(tmp_path: Path) -> None:
    rs = make_store(tmp_path)
    a, b, c = (rs.create_run(n, CONFIG) for n in "abc")
    for run, t in ((a, "2024-01-02"), (b, "2024-01-03"), (c, "2024-01-01")):
        set_created(run, t + "T00:00:00+00:00")
    listed = rs.list_runs()
    assert [r.id for r in listed] == [b.id, a.id, c.id]
    assert listed[0].status == "running" and listed[0].name == "b" and listed[0].path == b.path


def test_list_runs_empty_and_skips_non_runs(tmp_path: Path) -> None:
    rs = make_store(tmp_path)
    assert rs.list_runs() == []
    (rs.root / "junk").mkdir(parents=True)
    assert rs.list_runs() == []


def test_list_runs_shows_unreadable_info(tmp_path: Path) -> None:
    rs = make_store(tmp_path)
    run = rs.create_run("x", CONFIG)
    (run.path / "run.json").write_text("{not json")
    assert rs.list_runs()[0].status == "unreadable"
    with pytest.raises(StoreError, match="unreadable"):
        rs.open_run(run.id)


def test_open_run_by_id_prefix_latest_and_path(tmp_path: Path) -> None:
    rs = make_store(tmp_path)
    old, new = rs.create_run("old", CONFIG), rs.create_run("new", CONFIG)
    set_created(old, "2020-01-01T00:00:00+00:00")
    set_created(new, "2021-01-01T00:00:00+00:00")
    assert rs.open_run(old.id).id == old.id
    assert rs.open_run("latest").id == new.id
    assert rs.open_run().id == new.id
    assert rs.open_run(str(old.path)).id == old.id
    unique = new.id[: new.id.index("new") + 1]
    assert rs.open_run(unique).id == new.id


def test_exact_id_beats_longer_prefix_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = runs_mod.utc_now()
    monkeypatch.setattr(runs_mod, "utc_now", lambda: fixed)
    rs = make_store(tmp_path)
    first, second = rs.create_run("exp", CONFIG), rs.create_run("exp", CONFIG)
    assert second.id.startswith(first.id)
    assert rs.open_run(first.id).id == first.id


def test_open_run_ambiguous_lists_candidates(tmp_path: Path) -> None:
    rs = make_store(tmp_path)
    a, b = rs.create_run("a", CONFIG), rs.create_run("b", CONFIG)
    with pytest.raises(StoreError) as exc:
        rs.open_run(a.id[:4])
    assert "matches 2 runs" in str(exc.value) and a.id in str(exc.value) and b.id in str(exc.value)


def test_open_run_missing_lists_recent(tmp_path: Path) -> None:
    rs = make_store(tmp_path)
    with pytest.raises(StoreError, match="no runs in"):
        rs.open_run("latest")
    a = rs.create_run("a", CONFIG)
    with pytest.raises(StoreError) as exc:
        rs.open_run("zzz")
    assert "matches 'zzz'" in str(exc.value) and a.id in str(exc.value)
    with pytest.raises(StoreError):
        rs.open_run("")


def test_set_status_rewrites_and_keeps_fields(tmp_path: Path) -> None:
    run = make_store(tmp_path).create_run("x", CONFIG, {"seed": 5})
    run.set_status("finished", rounds_done=3)
    reopened = Run(run.path)
    assert reopened.status == "finished" and reopened.info["rounds_done"] == 3
    assert reopened.info["seed"] == 5 and "updated" in reopened.info
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]


def test_set_status_crash_mid_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_store(tmp_path).create_run("x", CONFIG)

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoreError, match="cannot record status 'failed'.*disk full"):
        run.set_status("failed")
    monkeypatch.undo()
    assert json.loads((run.path / "run.json").read_text())["status"] == "running"
    assert sorted(p.name for p in run.path.iterdir()) == ["config.toml", "run.json"]


def test_run_json_always_valid_under_concurrent_reads(tmp_path: Path) -> None:
    run = make_store(tmp_path).create_run("x", CONFIG)
    stop, bad = threading.Event(), []

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads((run.path / "run.json").read_text())
            except ValueError as exc:  # pragma: no cover - the failure being tested for
                bad.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(60):
        run.set_status("running", step=i, blob="x" * (i * 50))
    stop.set()
    thread.join()
    assert bad == [] and Run(run.path).info["step"] == 59


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a run directory"):
        Run(tmp_path)


# ---------------------------------------------------------------- checkpoints


def tensors(round: int) -> dict[str, np.ndarray]:
    return {"w": np.full((3, 2), round, dtype=np.float32), "b": np.arange(round + 1, dtype=np.int64)}


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    run = make_store(tmp_path).create_run("x", CONFIG)
    assert run.latest_checkpoint() is None
    run.save_checkpoint(4, tensors(4), {"lr": 0.1, "nodes": ["a"]})
    round, loaded, meta = run.latest_checkpoint()
    assert round == 4 and meta == {"lr": 0.1, "nodes": ["a"]}
    np.testing.assert_array_equal(loaded["w"], tensors(4)["w"])
    assert loaded["b"].dtype == np.int64


def test_checkpoint_keeps_last_three(tmp_path: Path) -> None:
    run = make_store(tmp_path).create_run("x", CONFIG)
    for r in range(1, 6):
        run.save_checkpoint(r, tensors(r), {"r": r})
    names = sorted(p.name for p in run.checkpoint_dir.iterdir())
    assert names == [f"round-{r:08d}.safetensors" for r in (3, 4, 5)]
    assert run.latest_checkpoint()[0] == 5


def test_latest_skips_truncated_and_garbage_files(tmp_path: Path) -> None:
    run = make_store(tmp_path).create_run("x", CONFIG)
    for r in (1, 2):
        run.save_checkpoint(r, tensors(r), {"r": r})
    good = (run.checkpoint_dir / "round-00000002.safetensors").read_bytes()
    (run.checkpoint_dir / "round-00000003.safetensors").write_bytes(good[: len(good) // 2])
    (run.checkpoint_dir / "round-00000004.safetensors").write_bytes(b"\x00" * 5)
    (run.checkpoint_dir / ".round-00000005.safetensors.abc.tmp").write_bytes(good)
    round, loaded, meta = run.latest_checkpoint()
    assert round == 2 and meta == {"r": 2}
    np.testing.assert_array_equal(loaded["w"], tensors(2)["w"])


def test_crash_during_checkpoint_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_store(tmp_path).create_run("x", CONFIG)
    run.save_checkpoint(1, tensors(1), {})
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(StoreError, match="crash"):
        run.save_checkpoint(2, tensors(2), {})
    monkeypatch.undo()
    assert run.latest_checkpoint()[0] == 1
    assert [p.name for p in run.checkpoint_dir.iterdir()] == ["round-00000001.safetensors"]


def test_checkpoint_rejects_bad_input(tmp_path: Path) -> None:
    run = make_store(tmp_path).create_run("x", CONFIG)
    with pytest.raises(UsageError, match="JSON"):
        run.save_checkpoint(1, tensors(1), {"f": object()})
    with pytest.raises(UsageError, match="round"):
        run.save_checkpoint(-1, tensors(1), {})
    assert run.latest_checkpoint() is None


def test_open_run_by_name_returns_the_newest_run_of_that_name(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = store.create_run("alpha", CONFIG)
    second = store.create_run("alpha", CONFIG)
    store.create_run("beta", CONFIG)
    assert store.open_run("alpha").id == second.id != first.id
    assert store.open_run("beta").id.endswith("beta")
