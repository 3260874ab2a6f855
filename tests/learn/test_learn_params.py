"""Parameter dicts: get/set round trip, ProtocolError on mismatch, exact weighted averages."""

from __future__ import annotations

import numpy as np
import pytest

import meshlearn.learn as learn
from meshlearn.errors import ProtocolError, UsageError
from meshlearn.learn import get_params, l2_distance, set_params, weighted_average
from meshlearn.models import build_model


def test_public_api_is_explicit():
    for name in learn.__all__:
        assert hasattr(learn, name)
    assert learn.__doc__.splitlines()[0].endswith("local training and evaluation as pure tasks.")


def test_get_params_are_float32_copies_in_state_dict_order():
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    params = get_params(model)
    assert list(params) == list(model.state_dict()) == ["1.weight", "1.bias", "3.weight", "3.bias"]
    assert all(v.dtype == np.float32 for v in params.values())
    params["1.bias"][:] = 99.0
    assert not np.any(get_params(model)["1.bias"] == 99.0)


def test_set_params_round_trip():
    a, b = build_model("cnn", (1, 8, 8), 10, seed=0), build_model("cnn", (1, 8, 8), 10, seed=1)
    set_params(b, get_params(a))
    assert l2_distance(get_params(a), get_params(b)) == 0.0


def test_set_params_wrong_shape_and_keys_raise_protocol_error():
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    params = get_params(model)
    before = get_params(model)
    params["3.bias"] = np.zeros(11, np.float32)
    del params["1.bias"]
    params["extra"] = np.zeros(1, np.float32)
    with pytest.raises(ProtocolError) as info:
        set_params(model, params)
    text = str(info.value)
    assert "missing 1.bias" in text and "unexpected extra" in text and "3.bias has shape (11,), expected (10,)" in text
    assert l2_distance(before, get_params(model)) == 0.0  # nothing was loaded
    good = get_params(model)
    good["1.bias"] = np.array(["x"] * 64)
    with pytest.raises(ProtocolError, match="non-numeric"):
        set_params(model, good)


def test_weighted_average_exact_on_hand_inputs():
    a = {"w": np.array([1.0, 2.0], np.float32), "b": np.array([[0.0]], np.float32)}
    b = {"w": np.array([3.0, 6.0], np.float32), "b": np.array([[4.0]], np.float32)}
    out = weighted_average([a, b], [1, 3])
    assert np.array_equal(out["w"], np.array([2.5, 5.0], np.float32)) and out["b"].tolist() == [[3.0]]
    assert all(v.dtype == np.float32 for v in out.values()) and list(out) == ["w", "b"]
    same = weighted_average([a, a, a], [0.1, 0.2, 0.7])
    assert np.array_equal(same["w"], a["w"])  # float64 accumulation: no drift


def test_weighted_average_errors():
    a = {"w": np.zeros(2, np.float32)}
    with pytest.raises(UsageError):
        weighted_average([], [])
    with pytest.raises(UsageError):
        weighted_average([a, a], [1.0])
    with pytest.raises(UsageError, match="not all zero"):
        weighted_average([a, a], [0, 0])
    with pytest.raises(UsageError):
        weighted_average([a, a], [1, -1])
    with pytest.raises(ProtocolError, match="set 1"):
        weighted_average([a, {"w": np.zeros(3, np.float32)}], [1, 1])
