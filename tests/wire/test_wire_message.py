"""Message construction rules and equality."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from meshlearn.errors import UsageError
from meshlearn.wire import Message, SUPPORTED_DTYPES


def test_make_puts_keywords_in_meta():
    w = np.ones(3, np.float32)
    msg = Message.make("fl.update", {"w": w}, round=3, clients=["a", "b"])
    assert msg.kind == "fl.update"
    assert msg.meta == {"round": 3, "clients": ["a", "b"]}
    assert msg.tensors["w"] is w
    assert Message.make("ping").tensors == {}


@pytest.mark.parametrize("kind", ["", "A", "has space", "x" * 65, "ü", 3, None, "a/b"])
def test_bad_kind_rejected(kind):
    with pytest.raises(UsageError, match="kind"):
        Message(kind)


@pytest.mark.parametrize("kind", ["a", "fl.update", "swim-ping_2", "x" * 64])
def test_good_kind_accepted(kind):
    assert Message(kind).kind == kind


@pytest.mark.parametrize(
    "meta",
    [
        {"t": (1, 2)},
        {"x": np.float32(1.0)},
        {"x": np.arange(3)},
        {1: "int key"},
        {"s": {1, 2}},
        {"b": b"bytes"},
        {"bad": "\ud800"},
    ],
)
def test_non_json_meta_rejected(meta):
    with pytest.raises(UsageError):
        Message("k", meta)


def test_meta_must_be_dict_and_not_too_deep():
    with pytest.raises(UsageError):
        Message("k", [1, 2])  # type: ignore[arg-type]
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(UsageError, match="deeper"):
        Message("k", deep)


def test_tensor_rules():
    with pytest.raises(UsageError, match="numpy"):
        Message("k", {}, {"w": [1.0, 2.0]})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="dtype"):
        Message("k", {}, {"c": np.zeros(2, np.complex64)})
    with pytest.raises(UsageError, match="name"):
        Message("k", {}, {"": np.zeros(2)})
    for name in SUPPORTED_DTYPES:
        Message("k", {}, {"t": np.zeros(2, dtype=name)})


def test_frozen_and_equality():
    a = Message.make("k", {"w": np.array([1.0, np.nan])}, r=1)
    b = Message.make("k", {"w": np.array([1.0, np.nan])}, r=1)
    assert a == b
    assert a != Message.make("k", {"w": np.array([1.0, np.nan], np.float32)}, r=1)
    assert a != Message.make("k", {"w": np.array([[1.0, np.nan]])}, r=1)
    assert a != Message.make("k", {"w": np.array([1.0, np.nan])}, r=2)
    assert a != "not a message"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.kind = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(a)
    assert "float64[2]" in repr(a)
    assert a.tensor_nbytes == 16
