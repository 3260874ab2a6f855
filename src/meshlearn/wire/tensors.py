"""Tensor encoding: one numpy array <-> (JSON descriptor, blob bytes).

Pipeline on the way out: optional quantization of float tensors with a scheme of ``wire/quant.py``
(``fp16`` | ``int8``, the per-tensor affine one), raw little-endian C-order bytes, optional lossless
compression (``zstd`` | ``lz4``; kept only when it actually shrinks the bytes, so the descriptor
records what was really applied).

A descriptor is a flat JSON object::

    {"name": "fc.weight", "dtype": "float32", "shape": [10, 784], "stored": "int8",
     "quant": "int8", "scale": 0.0012, "zero_point": -3,      # the scheme's params (int8 only)
     "compression": "zstd", "raw_length": 7840}

``raw_length`` is the size of the stored bytes before compression and must equal
``prod(shape) * itemsize(stored)``. On the way in every field is checked before any memory is
allocated; whatever a peer gets wrong is a :class:`~meshlearn.errors.ProtocolError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.wire.compress import get_compressor
from meshlearn.wire.quant import Quantized, get_scheme

__all__ = [
    "SUPPORTED_DTYPES",
    "TensorCodec",
    "TensorSpec",
    "encode_tensor",
    "decode_tensor",
    "parse_descriptor",
    "decode_blob",
]

SUPPORTED_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")
}
MAX_NDIM = 32
MAX_NAME_BYTES = 1024
_REQUIRED_KEYS = frozenset(["name", "dtype", "shape", "stored", "quant", "compression", "raw_length"])
Quantize = Literal["none", "fp16", "int8"]
_SCHEMES: tuple[str, ...] = get_args(Quantize)[1:]  # the quantisation schemes TensorCodec.quantize names
_PARAM_KEYS = frozenset(k for name in _SCHEMES for k in get_scheme(name).params)


class TensorCodec(BaseModel):
    """How tensors are encoded on the wire. Lossy stages touch float tensors only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    compression: Literal["none", "zstd", "lz4"] = "none"
    """Lossless stage: zstd has the better ratio, lz4 the lower latency."""
    zstd_level: int = Field(1, ge=1, le=22)
    """zstd level; 1 is ~5x faster than 3 for about the same ratio on float data."""
    quantize: Quantize = "none"
    """Lossy stage, a scheme of ``wire/quant.py``: fp16 halves float32, int8 (per-tensor affine) quarters it."""


@dataclass(frozen=True)
class TensorSpec:
    """A validated descriptor."""

    name: str
    dtype: np.dtype  # little-endian dtype of the decoded array
    shape: tuple[int, ...]
    stored: np.dtype  # little-endian dtype of the bytes on the wire
    quant: str
    params: dict[str, Any]  # the quantisation scheme's, validated
    compression: str
    raw_length: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the decoded array."""
        return self.elements * self.dtype.itemsize


# ---------------------------------------------------------------------------------- encode


def encode_tensor(
    name: str, arr: np.ndarray, codec: TensorCodec | None = None
) -> tuple[dict[str, Any], bytes]:
    """Encode one array; returns ``(descriptor, blob)``."""
    codec = codec or TensorCodec()
    dtype_name = _dtype_name(name, arr)
    quant, q = _quantize(arr, codec.quantize)
    stored = q.codes
    raw = stored.astype(stored.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
    compression, blob = _compress(raw, codec)
    desc: dict[str, Any] = {"name": name, "dtype": dtype_name, "shape": list(arr.shape)}
    desc.update(stored=stored.dtype.name, quant=quant, **q.params, compression=compression, raw_length=len(raw))
    return desc, blob


def _dtype_name(name: object, arr: object) -> str:
    if not isinstance(name, str) or not name:
        raise UsageError(f"tensor name {name!r} must be a non-empty str")
    if not isinstance(arr, np.ndarray):
        raise UsageError(f"tensor {name!r} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype.name not in SUPPORTED_DTYPES:
        raise UsageError(
            f"tensor {name!r} has dtype {arr.dtype}; supported: {', '.join(SUPPORTED_DTYPES)}"
        )
    return arr.dtype.name


def _quantize(arr: np.ndarray, scheme: str) -> tuple[str, Quantized]:
    """Integer and bool tensors are never quantized; fp16 tensors are sent as they are under fp16."""
    if scheme == "none" or arr.dtype.kind != "f" or (scheme == "fp16" and arr.dtype == np.float16):
        return "none", Quantized(arr)
    return scheme, get_scheme(scheme).encode(arr)


def _compress(raw: bytes, codec: TensorCodec) -> tuple[str, bytes]:
    if codec.compression == "none" or not raw:
        return "none", raw
    blob = get_compressor(codec.compression).compress(raw, codec.zstd_level)
    if len(blob) >= len(raw):  # incompressible: send raw, decoder needs no codec work
        return "none", raw
    return codec.compression, blob


# ---------------------------------------------------------------------------------- decode


def decode_tensor(descriptor: object, blob: bytes | memoryview, max_elements: int) -> np.ndarray:
    """Decode one tensor sent by a peer; anything inconsistent raises ProtocolError."""
    return decode_blob(parse_descriptor(descriptor, max_elements), blob)


def parse_descriptor(descriptor: object, max_elements: int) -> TensorSpec:
    """Validate a peer's descriptor without touching the blob."""
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 0:
        raise UsageError(f"max_elements must be a non-negative int, got {max_elements!r}")
    d = _check_keys(descriptor)
    dtype = _peer_dtype(d["dtype"], "dtype")
    shape = _peer_shape(d["shape"], max_elements)
    quant, params = _peer_quant(d, dtype)
    stored = _expected_stored(dtype, quant)
    if d["stored"] != stored.name:
        raise ProtocolError(
            f"stored dtype {d['stored']!r} does not match dtype {dtype.name} with quant {quant!r}"
        )
    get_compressor(d["compression"])
    spec = TensorSpec(
        _peer_name(d["name"]), dtype, shape, stored, quant, params,
        d["compression"], _peer_int(d["raw_length"], "raw_length"),
    )
    if spec.raw_length != spec.elements * stored.itemsize:
        raise ProtocolError(
            f"tensor {spec.name!r}: raw_length {spec.raw_length} does not match shape "
            f"{list(shape)} of {stored.name} ({spec.elements * stored.itemsize} bytes)"
        )
    return spec


def decode_blob(spec: TensorSpec, blob: bytes | memoryview) -> np.ndarray:
    """Decompress and dequantize ``blob`` according to an already validated ``spec``."""
    raw = get_compressor(spec.compression).decompress(blob, spec.raw_length)
    arr = np.frombuffer(raw, dtype=spec.stored, count=spec.elements).reshape(spec.shape)
    if spec.stored.kind == "b" and arr.size and arr.view(np.uint8).max() > 1:
        raise ProtocolError(f"tensor {spec.name!r}: bool bytes must be 0 or 1")
    if spec.quant != "none":
        arr = get_scheme(spec.quant).decode(Quantized(arr, spec.params), spec.dtype)
    out = arr.astype(spec.dtype.newbyteorder("="), copy=False)
    return out if out.flags.owndata else out.copy()  # never a view of the peer's buffer


def _check_keys(descriptor: object) -> dict[str, Any]:
    if not isinstance(descriptor, dict):
        raise ProtocolError(f"tensor descriptor must be an object, got {type(descriptor).__name__}")
    missing = _REQUIRED_KEYS - descriptor.keys()
    unknown = descriptor.keys() - _REQUIRED_KEYS - _PARAM_KEYS
    if missing or unknown:
        raise ProtocolError(
            f"tensor descriptor has missing keys {sorted(missing)} / unknown keys {sorted(unknown)}"
        )
    return descriptor


def _peer_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        raise ProtocolError(f"tensor name must be a non-empty str of <= {MAX_NAME_BYTES} bytes")
    return name


def _peer_dtype(name: object, field: str) -> np.dtype:
    if not isinstance(name, str) or name not in SUPPORTED_DTYPES:
        raise ProtocolError(f"unknown {field} {name!r} (supported: {', '.join(SUPPORTED_DTYPES)})")
    return SUPPORTED_DTYPES[name]


def _peer_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{field} must be a non-negative integer, got {value!r}")
    return value


def _peer_shape(shape: object, max_elements: int) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise ProtocolError(f"shape must be a list of at most {MAX_NDIM} dimensions, got {shape!r}")
    dims = tuple(_peer_int(d, "shape dimension") for d in shape)
    if any(d > max_elements for d in dims) or math.prod(dims) > max_elements:
        raise ProtocolError(f"shape {list(dims)} exceeds the limit of {max_elements} elements")
    return dims


def _peer_quant(d: dict[str, Any], dtype: np.dtype) -> tuple[str, dict[str, Any]]:
    quant = d["quant"]
    if quant not in ("none", *_SCHEMES):
        raise ProtocolError(f"unknown quant {quant!r} (known: none, {', '.join(_SCHEMES)})")
    if quant == "none":
        if _PARAM_KEYS & d.keys():
            raise ProtocolError(f"quant 'none' takes no parameters, got {sorted(_PARAM_KEYS & d.keys())}")
        return quant, {}
    if dtype.kind != "f":
        raise ProtocolError(f"quant {quant!r} applies to float tensors only, not {dtype.name}")
    return quant, get_scheme(quant).check_params({k: d[k] for k in _PARAM_KEYS & d.keys()})


def _expected_stored(dtype: np.dtype, quant: str) -> np.dtype:
    return dtype if quant == "none" else get_scheme(quant).code_dtype.newbyteorder("<")
