"""Message envelope: round trip, determinism, and strict rejection of malformed bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.wire import Message, TensorCodec, decode_message, encode_message


def sample_message() -> Message:
    rng = np.random.default_rng(0)
    act = np.maximum(rng.normal(size=(8, 16)), 0).astype(np.float32)
    tensors = {"act": act, "idx": np.arange(5), "mask": act > 0, "w": rng.normal(size=3)}
    return Message.make("split.activations", tensors, round=7, loss=0.25, note="é", tags=[1, None])


def split(data: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(data[:4], "big")
    return json.loads(data[4 : 4 + n]), data[4 + n :]


def join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(4, "big") + raw + body


@pytest.mark.parametrize(
    "codec",
    [TensorCodec(), TensorCodec(compression="zstd"), TensorCodec(compression="lz4", quantize="fp16")],
)
def test_roundtrip(codec):
    msg = sample_message()
    out = decode_message(encode_message(msg, codec))
    assert out.kind == msg.kind and out.meta == msg.meta
    assert list(out.tensors) == list(msg.tensors)  # sender's order preserved
    if codec.quantize == "none":
        assert out == msg


def test_empty_message_and_special_floats():
    msg = Message.make("x", loss=float("nan"), big=2**70, inf=float("-inf"))
    out = decode_message(encode_message(msg))
    assert out.meta["big"] == 2**70 and out.meta["inf"] == float("-inf")
    assert out.meta["loss"] != out.meta["loss"]


def test_same_message_same_bytes():
    codec = TensorCodec(compression="zstd", quantize="int8")
    a, b = sample_message(), sample_message()
    assert encode_message(a, codec) == encode_message(b, codec)
    reordered = Message(a.kind, dict(reversed(list(a.meta.items()))), a.tensors)
    assert encode_message(reordered, codec) == encode_message(a, codec)


def test_header_is_compact_sorted_json():
    data = encode_message(Message.make("k", b=1, a=2))
    header, body = split(data)
    assert body == b"" and list(header) == ["kind", "meta", "tensors"]
    assert data[4:].startswith(b'{"kind":"k","meta":{"a":2,"b":1},"tensors":[]}')


def test_decoded_tensors_do_not_alias_the_buffer():
    buf = bytearray(encode_message(Message.make("k", {"w": np.ones(4)})))
    out = decode_message(buf)
    buf[-8:] = bytes(8)
    assert np.all(out.tensors["w"] == 1.0)
    out.tensors["w"][0] = 5.0  # writable


def test_usage_errors():
    with pytest.raises(UsageError):
        encode_message({"kind": "x"})  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        decode_message("text")  # type: ignore[arg-type]


# ------------------------------------------------------------------ malformed input


def mutate(fn) -> bytes:
    header, body = split(encode_message(sample_message()))
    out = fn(header, body)
    return join(header, body) if out is None else out


def set_entry(i, **patch):
    return lambda h, b: h["tensors"][i].update(patch)


def drop(*path):
    def fn(h, b):
        *parents, key = path
        for p in parents:
            h = h[p]
        del h[key]

    return fn


MALFORMED = {
    "empty": lambda h, b: b"",
    "short prefix": lambda h, b: b"\x00\x00",
    "header past end": lambda h, b: (10_000).to_bytes(4, "big") + b"{}",
    "header too long": lambda h, b: (1 << 30).to_bytes(4, "big"),
    "truncated body": lambda h, b: join(h, b[:-1]),
    "trailing bytes": lambda h, b: join(h, b + b"\0"),
    "bad json": lambda h, b: (3).to_bytes(4, "big") + b"{x}",
    "bad utf8": lambda h, b: (2).to_bytes(4, "big") + b"\xff\xfe",
    "not an object": lambda h, b: join([1, 2], b""),  # type: ignore[arg-type]
    "missing key": drop("meta"),
    "extra key": lambda h, b: h.update(x=1),
    "kind not str": lambda h, b: h.update(kind=5),
    "bad kind": lambda h, b: h.update(kind="Bad Kind"),
    "meta not dict": lambda h, b: h.update(meta=[1]),
    "tensors not list": lambda h, b: h.update(tensors={}),
    "entry not dict": lambda h, b: h.update(tensors=[1]),
    "no offset": drop("tensors", 0, "offset"),
    "unknown dtype": set_entry(0, dtype="complex64"),
    "shape mismatch": set_entry(0, shape=[8, 17]),
    "length mismatch": set_entry(1, raw_length=41),
    "negative offset": set_entry(0, offset=-1),
    "float offset": set_entry(0, offset=0.0),
    "overlap": set_entry(1, offset=0),
    "out of range": set_entry(3, length=10**9),
    "duplicate name": set_entry(1, name="act"),
    "huge shape": set_entry(0, shape=[1 << 31, 1 << 31]),
    "deep json": lambda h, b: (200_000).to_bytes(4, "big") + b"[" * 100_000 + b"]" * 100_000,
    "huge int": lambda h, b: (5006).to_bytes(4, "big") + b'{"x":' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_rejected(case):
    data = mutate(MALFORMED[case])
    with pytest.raises(ProtocolError):
        decode_message(data)


def test_duplicate_json_keys_rejected():
    header = encode_message(Message.make("k", a=1))[4:].replace(b'{"a":1}', b'{"a":1,"a":2}')
    with pytest.raises(ProtocolError, match="repeats"):
        decode_message(len(header).to_bytes(4, "big") + header)


def test_size_limits():
    data = encode_message(sample_message())
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_message(data, max_bytes=len(data) - 1)
    assert decode_message(data, max_bytes=len(data)).kind == "split.activations"
    with pytest.raises(ProtocolError, match="decoded bytes"):
        decode_message(data, max_decoded_bytes=600)


def test_compressed_tensor_cannot_exceed_decoded_budget():
    msg = Message.make("k", {"z": np.zeros(1_000_000, np.float64)})
    data = encode_message(msg, TensorCodec(compression="zstd"))
    assert len(data) < 2_000
    with pytest.raises(ProtocolError):
        decode_message(data, max_decoded_bytes=1_000_000)
