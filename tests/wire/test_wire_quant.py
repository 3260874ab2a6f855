"""Quantisation schemes: the registry, every scheme's documented bound, codes <-> bytes, and the
validation of what a peer sends (a conformance run over all registered schemes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meshlearn import wire
from meshlearn.errors import ProtocolError, RegistryError, UsageError
from meshlearn.wire.quant import QUANT_SCHEMES, MAX_ZERO_POINT, Quantized, get_scheme, reject_old_name

RNG = np.random.default_rng(0)
ROWS = {  # (N, n) float32 batches: what the row schemes (uniform, simplex8) take
    "normal": RNG.standard_normal((6, 300)).astype(np.float32),
    "relu": np.maximum(RNG.standard_normal((4, 64)), 0).astype(np.float32),
    "constant": np.full((3, 5), 2.5, np.float32),
    "wide": (RNG.standard_normal((2, 50)) * 1e30).astype(np.float32),
    "empty_rows": np.zeros((3, 0), np.float32),
}
ANY = {  # any shape and float dtype: what the casts and int8 take
    **ROWS,
    "f64": RNG.standard_normal((5, 7)) * 1e3,
    "f16": RNG.standard_normal(40).astype(np.float16),
    "edges": np.array([-1e308, 1e308, 0.0]),
    "subnormal": np.array([0.0, 5e-324]),
    "near": np.array([1e6, 1e6 + 1, 1e6 + 2]),
    "scalar": np.array(3.25, np.float32),
}
PROBS = {
    "dirichlet": RNG.dirichlet(np.ones(10) * 0.3, size=50).astype(np.float32),
    "one_hot": np.eye(10, dtype=np.float32)[RNG.integers(0, 10, 20)],
    "wide": RNG.dirichlet(np.ones(300), size=4).astype(np.float32),
}
CASES = ([("fp32", {}, k) for k in ANY] + [("fp16", {}, k) for k in ANY] + [("int8", {}, k) for k in ANY]
         + [("uniform", {"bits": b}, k) for b in (1, 3, 8, 12, 16) for k in ROWS]
         + [("simplex8", {}, k) for k in PROBS])


def _input(name: str, key: str) -> np.ndarray:
    return (PROBS if name == "simplex8" else ROWS if name == "uniform" else ANY)[key]


def test_registry_holds_the_five_named_schemes():
    assert QUANT_SCHEMES.names() == ["fp16", "fp32", "int8", "simplex8", "uniform"]
    for name in QUANT_SCHEMES.names():
        scheme = get_scheme(name)
        assert scheme.name == name and scheme.bound and scheme is get_scheme(name)
    assert [get_scheme(n).bits for n in ("fp32", "fp16", "int8", "simplex8")] == [32, 16, 8, 8]
    assert get_scheme("uniform", bits=5).bits == 5 and get_scheme("uniform", bits=5).levels == 31
    assert {"QUANT_SCHEMES", "QuantScheme", "Quantized", "get_scheme"} <= set(wire.__all__)


def test_bad_names_and_settings_are_usage_errors():
    with pytest.raises(RegistryError, match="valid: fp16, fp32, int8, simplex8, uniform"):
        get_scheme("int4")
    with pytest.raises(UsageError, match="does not take"):
        get_scheme("int8", bits=8)
    get_scheme("uniform", bits=2), get_scheme("uniform", bits=1)  # no cache may answer for 2.0 or True
    for bits in (0, 17, 2.0, True):
        with pytest.raises(UsageError, match="bits in 1..16"):
            get_scheme("uniform", bits=bits)


@pytest.mark.parametrize("name,settings,key", CASES)
def test_round_trip_stays_within_the_documented_bound(name, settings, key):
    scheme, x = get_scheme(name, **settings), _input(name, key)
    q = scheme.encode(x)
    assert q.codes.dtype == scheme.code_dtype and q.codes.shape == x.shape and set(q.params) == set(scheme.params)
    dtype = x.dtype if name in ("fp32", "fp16", "int8") else np.float32
    back = scheme.decode(q, dtype)
    assert back.dtype == dtype and back.shape == x.shape
    err = np.abs(back.astype(np.float64) - x.astype(np.float64))
    assert np.all(err <= scheme.error_bound(x)), float((err - scheme.error_bound(x)).max())


@pytest.mark.parametrize("name,settings,key", CASES)
def test_codes_survive_pack_and_unpack_and_params_pass_the_peer_gate(name, settings, key):
    scheme, x = get_scheme(name, **settings), _input(name, key)
    q = scheme.encode(x)
    flat = q.codes.reshape(-1)
    data = scheme.pack(flat)
    assert len(data) == math.ceil(flat.size * scheme.bits / 8)
    assert np.array_equal(scheme.unpack(data, flat.size), flat)
    row0 = {k: (v[0].item() if np.ndim(v) else v) for k, v in q.params.items()}  # as a packet header carries them
    assert scheme.check_params(row0) == row0
    assert scheme.check_codes(q.codes) is q.codes


def test_zero_and_a_rows_minimum_are_exact():
    relu = ROWS["relu"]
    for scheme in (get_scheme("int8"), get_scheme("uniform", bits=4)):
        back = scheme.decode(scheme.encode(relu))
        assert np.all(back[relu == 0] == 0)


def test_non_finite_input_is_a_usage_error_where_a_range_is_needed():
    bad = np.array([[1.0, np.inf]], np.float32)
    for scheme in (get_scheme("int8"), get_scheme("uniform")):
        with pytest.raises(UsageError, match="finite"):
            scheme.encode(bad)
    assert np.isinf(get_scheme("fp16").decode(get_scheme("fp16").encode(np.array([1e6])))).all()
    with pytest.raises(UsageError, match="2-D"):
        get_scheme("simplex8").encode(np.ones(3))


@pytest.mark.parametrize("name,params,match", [
    ("int8", {"scale": 0.1}, "parameters"),
    ("int8", {"scale": 0.1, "zero_point": 0, "lo": 0}, "parameters"),
    ("int8", {"scale": True, "zero_point": 0}, "number"),
    ("int8", {"scale": "1", "zero_point": 0}, "number"),
    ("int8", {"scale": math.nan, "zero_point": 0}, "finite and positive"),
    ("int8", {"scale": 0.0, "zero_point": 0}, "finite and positive"),
    ("int8", {"scale": 0.1, "zero_point": 1.5}, "integer"),
    ("int8", {"scale": 0.1, "zero_point": MAX_ZERO_POINT + 1}, "out of range"),
    ("uniform", {"lo": 0.0}, "parameters"),
    ("uniform", {"lo": math.nan, "scale": 1.0}, "invalid uniform"),
    ("uniform", {"lo": 0.0, "scale": math.inf}, "invalid uniform"),
    ("uniform", {"lo": 0.0, "scale": -1.0}, "invalid uniform"),
    ("uniform", {"lo": None, "scale": 1.0}, "numbers"),
    ("fp16", {"scale": 1.0}, "parameters"),
    ("simplex8", {"zero_point": 0}, "parameters"),
])
def test_bad_peer_parameters_are_protocol_errors(name, params, match):
    with pytest.raises(ProtocolError, match=match):
        get_scheme(name).check_params(params)


@pytest.mark.parametrize("name,codes,match", [
    ("simplex8", np.ones((2, 3), np.int8), "2-D uint8"),
    ("simplex8", np.ones(3, np.uint8), "2-D uint8"),
    ("simplex8", np.array([[1, 2], [0, 0]], np.uint8), "all-zero row"),
    ("int8", np.ones(3, np.uint8), "int8"),
    ("fp16", np.ones(3, np.float32), "float16"),
])
def test_bad_peer_codes_are_protocol_errors(name, codes, match):
    with pytest.raises(ProtocolError, match=match):
        get_scheme(name).check_codes(codes)


def test_simplex8_keeps_rows_decodable_and_renormalises():
    flat = np.full((2, 600), 1 / 600, np.float32)  # every entry rounds to 0 but the top class
    q = get_scheme("simplex8").encode(flat)
    assert (q.codes.sum(axis=1) == 1).all()
    back = get_scheme("simplex8").decode(Quantized(q.codes))
    assert np.allclose(back.sum(axis=1), 1.0)


def test_uniform_decodes_per_row_and_scalar_parameters_alike():
    scheme = get_scheme("uniform", bits=6)
    q = scheme.encode(ROWS["normal"])
    rows = scheme.decode(q)
    one = scheme.decode(Quantized(q.codes[2], {"lo": float(q.params["lo"][2]), "scale": float(q.params["scale"][2])}))
    assert np.array_equal(rows[2], one)


def test_reject_old_name_names_the_new_spelling():
    assert reject_old_name("simplex8", "int8", "'simplex8'") == "simplex8"
    with pytest.raises(ValueError, match="'int8' was renamed: use 'simplex8'"):
        reject_old_name("int8", "int8", "'simplex8'")
