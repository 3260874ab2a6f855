"""safetensors checkpoints: round trip, metadata, atomic writes, clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import safetensors.numpy

from meshlearn.errors import StoreError, UsageError
from meshlearn.wire import SUPPORTED_DTYPES, load_tensors, save_tensors


def tensors() -> dict[str, np.ndarray]:
    out = {f"t_{d}": (np.arange(6) % 2).astype(d).reshape(2, 3) for d in SUPPORTED_DTYPES}
    out["scalar"] = np.array(3.5, np.float32)
    out["big_endian"] = np.arange(4, dtype=">i4")
    out["strided"] = np.arange(10.0)[::3]
    return out


def test_roundtrip_with_meta(tmp_path):
    meta = {"round": 12, "model": "mlp", "lr": 0.05, "final": True, "note": None}
    path = save_tensors(tmp_path / "ckpt.safetensors", tensors(), meta)
    loaded, loaded_meta = load_tensors(path)
    assert loaded_meta == meta
    assert loaded.keys() == tensors().keys()
    for name, arr in tensors().items():
        assert loaded[name].dtype.name == arr.dtype.name and loaded[name].shape == arr.shape
        np.testing.assert_array_equal(loaded[name], arr)


def test_no_meta_and_foreign_files(tmp_path):
    save_tensors(tmp_path / "a.st", {"x": np.ones(2)})
    assert load_tensors(tmp_path / "a.st")[1] == {}
    (tmp_path / "b.st").write_bytes(safetensors.numpy.save({"x": np.ones(2)}, metadata={"other": "1"}))
    assert load_tensors(tmp_path / "b.st")[1] == {}


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    save_tensors(path, {"x": np.zeros(3)}, {"round": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StoreError, match="disk full"):
        save_tensors(path, {"x": np.ones(3)}, {"round": 2})
    monkeypatch.undo()
    assert load_tensors(path)[1] == {"round": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]  # no temp left


def test_overwrite_replaces(tmp_path):
    path = tmp_path / "c.st"
    save_tensors(path, {"x": np.zeros(3)})
    save_tensors(path, {"y": np.ones(2)}, {"round": 2})
    loaded, meta = load_tensors(path)
    assert list(loaded) == ["y"] and meta == {"round": 2}


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        load_tensors(tmp_path / "nope.st")
    (tmp_path / "junk.st").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="not a readable"):
        load_tensors(tmp_path / "junk.st")
    good = safetensors.numpy.save({"x": np.ones(100)})
    (tmp_path / "cut.st").write_bytes(good[:-10])
    with pytest.raises(StoreError):
        load_tensors(tmp_path / "cut.st")
    bad_meta = safetensors.numpy.save({"x": np.ones(2)}, metadata={"meshlearn": "{not json"})
    (tmp_path / "meta.st").write_bytes(bad_meta)
    with pytest.raises(StoreError, match="metadata"):
        load_tensors(tmp_path / "meta.st")
    with pytest.raises(StoreError, match="directory"):
        save_tensors(tmp_path / "missing" / "x.st", {"x": np.ones(2)})


def test_json_meta_round_trips(tmp_path):
    meta = {"nodes": ["a", "b"], "nested": {"k": 1.5}}
    assert load_tensors(save_tensors(tmp_path / "j.st", {"x": np.ones(2)}, meta))[1] == meta


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        save_tensors(tmp_path / "a.st", {"x": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="JSON"):
        save_tensors(tmp_path / "a.st", {"x": np.ones(2)}, {"bad": object()})  # type: ignore[dict-item]
    with pytest.raises(UsageError):
        save_tensors(tmp_path / "a.st", {"x": np.ones(2)}, {"n": np.float32(1)})  # type: ignore[dict-item]
    assert not (tmp_path / "a.st").exists()


def test_load_only_named_tensors(tmp_path):
    path = save_tensors(tmp_path / "m.st", {"a": np.ones(2), "b": np.zeros(3)}, {"k": 1})
    loaded, meta = load_tensors(path, names=["b"])
    assert list(loaded) == ["b"] and meta == {"k": 1}
    assert load_tensors(path, names=()) == ({}, {"k": 1})
    with pytest.raises(StoreError, match="no tensor.*zz"):
        load_tensors(path, names=["a", "zz"])
