"""Tensor codec: round trips, quantization error bounds, compression, hostile descriptors."""

from __future__ import annotations

import itertools

import lz4.frame
import numpy as np
import pytest
import zstandard
from pydantic import ValidationError

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.wire import SUPPORTED_DTYPES, TensorCodec, decode_tensor, encode_tensor

COMPRESSIONS = ["none", "zstd", "lz4"]
QUANTS = ["none", "fp16", "int8"]
MAX = 1 << 24


def sample(dtype: str, shape=(4, 5), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.3
    if np.dtype(dtype).kind == "f":
        arr = rng.normal(0, 0.5, shape)
        arr[0, :2] = 0.0
        return arr.astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def roundtrip(arr: np.ndarray, codec: TensorCodec) -> tuple[np.ndarray, dict]:
    desc, blob = encode_tensor("t", arr, codec)
    return decode_tensor(desc, blob, MAX), desc


@pytest.mark.parametrize(
    "dtype,compression,quant", list(itertools.product(SUPPORTED_DTYPES, COMPRESSIONS, QUANTS))
)
def test_roundtrip_every_dtype_codec_quant(dtype, compression, quant):
    arr = sample(dtype)
    out, desc = roundtrip(arr, TensorCodec(compression=compression, quantize=quant))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert out.flags.writeable and out.flags.owndata
    lossy = quant != "none" and arr.dtype.kind == "f" and not (quant == "fp16" and dtype == "float16")
    if not lossy:
        np.testing.assert_array_equal(out, arr)
        assert desc["quant"] == "none" and desc["stored"] == dtype
    elif quant == "fp16":
        np.testing.assert_allclose(out, arr, rtol=2**-11, atol=2**-24)
    else:
        err = np.abs(out.astype(np.float64) - arr.astype(np.float64)).max()
        assert err <= desc["scale"] / 2 * (1 + 1e-9) + np.finfo(dtype).eps * np.abs(arr).max()
        assert np.all(out[0, :2] == 0.0)  # zero is exact


@pytest.mark.parametrize(
    "values",
    [[5.0] * 4, [-3.0] * 4, [0.0] * 4, [1e6, 1e6 + 1, 1e6 + 2, 1e6], [0.0, 5e-324], [-1e308, 1e308]],
)
def test_int8_edge_ranges(values):
    arr = np.array(values, np.float64)
    out, desc = roundtrip(arr, TensorCodec(quantize="int8"))
    assert np.abs(out - arr).max() <= desc["scale"] / 2 * (1 + 1e-9)
    if len(set(values)) == 1:
        np.testing.assert_array_equal(out, arr)


def test_int8_rejects_non_finite_and_fp16_overflows_to_inf():
    with pytest.raises(UsageError, match="finite"):
        encode_tensor("t", np.array([1.0, np.inf]), TensorCodec(quantize="int8"))
    out, _ = roundtrip(np.array([1e6, np.nan], np.float32), TensorCodec(quantize="fp16"))
    assert np.isinf(out[0]) and np.isnan(out[1])


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,)])
@pytest.mark.parametrize("compression,quant", [("none", "none"), ("zstd", "int8"), ("lz4", "fp16")])
def test_scalar_and_empty_shapes(shape, compression, quant):
    arr = np.full(shape, 1.5, np.float32)
    out, _ = roundtrip(arr, TensorCodec(compression=compression, quantize=quant))
    assert out.shape == shape
    np.testing.assert_array_equal(out, arr)


def test_big_endian_and_non_contiguous_inputs():
    base = np.arange(24, dtype=">f8").reshape(4, 6)
    for arr in (base, base.T, base[:, ::2], np.asfortranarray(base)):
        desc, blob = encode_tensor("t", arr)
        assert blob == np.ascontiguousarray(arr, "<f8").tobytes()
        out = decode_tensor(desc, blob, MAX)
        np.testing.assert_array_equal(out, arr)
        assert out.dtype.isnative


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_compression_shrinks_sparse_tensor(compression):
    arr = np.zeros(10_000, np.float32)
    arr[::97] = 1.0
    desc, blob = encode_tensor("t", arr, TensorCodec(compression=compression))
    assert desc["compression"] == compression and len(blob) < arr.nbytes / 10
    np.testing.assert_array_equal(decode_tensor(desc, blob, MAX), arr)


def test_incompressible_tensor_is_sent_raw():
    arr = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)
    desc, blob = encode_tensor("t", arr, TensorCodec(compression="zstd"))
    assert desc["compression"] == "none" and len(blob) == arr.nbytes


def test_encoding_is_deterministic():
    arr = sample("float32", (50, 50))
    codec = TensorCodec(compression="zstd", quantize="int8", zstd_level=3)
    assert encode_tensor("t", arr, codec) == encode_tensor("t", arr.copy(), codec)


def test_codec_model_is_strict():
    with pytest.raises(ValidationError):
        TensorCodec(compression="gzip")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TensorCodec(quantise="int8")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TensorCodec(zstd_level=40)


def test_encode_usage_errors():
    with pytest.raises(UsageError):
        encode_tensor("t", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        encode_tensor("t", np.zeros(2, np.complex128))
    with pytest.raises(UsageError):
        encode_tensor("", np.zeros(2))
    with pytest.raises(UsageError):
        decode_tensor(*encode_tensor("t", np.zeros(2)), max_elements=-1)


# ------------------------------------------------------------------ hostile input


def good() -> tuple[dict, bytes]:
    return encode_tensor("t", np.arange(6, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize(
    "patch,reason",
    [
        ({"dtype": "complex64"}, "unknown dtype"),
        ({"dtype": "object"}, "unknown dtype"),
        ({"dtype": 5}, "unknown dtype"),
        ({"shape": [2, -3]}, "non-negative"),
        ({"shape": [2, 3.0]}, "non-negative"),
        ({"shape": [True, 6]}, "non-negative"),
        ({"shape": "2,3"}, "shape"),
        ({"shape": [1] * 33}, "shape"),
        ({"shape": [1 << 40, 1 << 40]}, "exceeds"),
        ({"shape": [3, 3]}, "raw_length"),
        ({"raw_length": 25}, "raw_length"),
        ({"raw_length": -1}, "raw_length"),
        ({"stored": "float16"}, "stored"),
        ({"quant": "int4"}, "unknown quant"),
        ({"quant": "int8"}, "scale"),
        ({"compression": "gzip"}, "unknown compression"),
        ({"compression": None}, "unknown compression"),
        ({"name": ""}, "name"),
        ({"name": 7}, "name"),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_bad_descriptor_rejected(patch, reason):
    desc, blob = good()
    desc.update(patch)
    with pytest.raises(ProtocolError, match=reason):
        decode_tensor(desc, blob, MAX)


@pytest.mark.parametrize("drop", ["dtype", "shape", "stored", "quant", "compression", "raw_length", "name"])
def test_missing_descriptor_key_rejected(drop):
    desc, blob = good()
    del desc[drop]
    with pytest.raises(ProtocolError, match="missing"):
        decode_tensor(desc, blob, MAX)


def test_bad_quant_params_rejected():
    desc, blob = encode_tensor("t", np.linspace(-1, 1, 8), TensorCodec(quantize="int8"))
    cases = [{"scale": 0.0}, {"scale": -1.0}, {"scale": float("inf")}, {"scale": "1"},
             {"zero_point": 1.5}, {"zero_point": True}, {"zero_point": 1 << 60}]
    for patch in cases:
        with pytest.raises(ProtocolError):
            decode_tensor({**desc, **patch}, blob, MAX)
    no_params = {k: v for k, v in desc.items() if k != "scale"}
    with pytest.raises(ProtocolError, match="scale"):
        decode_tensor(no_params, blob, MAX)
    int_desc, int_blob = encode_tensor("t", np.arange(4, dtype=np.int8))
    with pytest.raises(ProtocolError, match="float tensors only"):
        decode_tensor({**int_desc, "quant": "fp16", "stored": "float16"}, int_blob, MAX)


def test_blob_length_mismatch_and_limits():
    desc, blob = good()
    with pytest.raises(ProtocolError, match="declares"):
        decode_tensor(desc, blob[:-1], MAX)
    with pytest.raises(ProtocolError, match="declares"):
        decode_tensor(desc, blob + b"\0", MAX)
    with pytest.raises(ProtocolError, match="exceeds the limit of 5"):
        decode_tensor(desc, blob, 5)


def test_bool_bytes_must_be_zero_or_one():
    desc, _ = encode_tensor("t", np.array([True, False]))
    with pytest.raises(ProtocolError, match="bool"):
        decode_tensor(desc, b"\x01\x02", MAX)


def _bomb_desc(compression: str) -> dict:
    desc, _ = encode_tensor("t", np.zeros(10, np.float32))
    return {**desc, "compression": compression}


@pytest.mark.parametrize("content_size", [True, False])
def test_zstd_bomb_rejected(content_size):
    bomb = zstandard.ZstdCompressor(write_content_size=content_size).compress(bytes(10_000_000))
    with pytest.raises(ProtocolError, match="zstd"):
        decode_tensor(_bomb_desc("zstd"), bomb, MAX)


def test_lz4_bomb_rejected():
    bomb = lz4.frame.compress(bytes(10_000_000))
    with pytest.raises(ProtocolError, match="lz4"):
        decode_tensor(_bomb_desc("lz4"), bomb, MAX)


@pytest.mark.parametrize("compression", ["zstd", "lz4"])
def test_short_garbage_and_trailing_compressed_blobs_rejected(compression):
    arr = np.zeros(1000, np.float32)
    desc, blob = encode_tensor("t", arr, TensorCodec(compression=compression))
    for bad in (blob[:-4], blob + blob, b"garbage!", b"", blob[: len(blob) // 2]):
        with pytest.raises(ProtocolError):
            decode_tensor(desc, bad, MAX)
    short = lz4.frame.compress(bytes(39)) if compression == "lz4" else zstandard.compress(bytes(39))
    with pytest.raises(ProtocolError):
        decode_tensor(_bomb_desc(compression), short, MAX)
