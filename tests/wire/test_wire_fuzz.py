"""Seeded fuzzing: mangled frames and messages may only ever raise PeerError subclasses."""

from __future__ import annotations

import numpy as np

from meshlearn.errors import PeerError
from meshlearn.wire import FrameCodec, Message, TensorCodec, decode_message, encode_message

ITERATIONS = 2_000


def valid_payloads() -> list[bytes]:
    rng = np.random.default_rng(0)
    act = np.maximum(rng.normal(size=(6, 10)), 0).astype(np.float32)
    msg = Message.make(
        "fuzz.msg",
        {"act": act, "mask": act > 0, "ids": np.arange(7, dtype=np.int32), "b": np.zeros(40, np.uint8)},
        round=3, names=["a", "b"], nested={"x": [1.5, None, True]},
    )
    codecs = [TensorCodec(), TensorCodec(compression="zstd", quantize="int8"),
              TensorCodec(compression="lz4", quantize="fp16")]
    return [encode_message(msg, c) for c in codecs]


def mangle(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    op = rng.integers(4)
    if op == 0:  # flip a few bits
        for i in rng.integers(0, len(buf), size=rng.integers(1, 4)):
            buf[i] ^= 1 << int(rng.integers(8))
    elif op == 1:  # truncate
        del buf[int(rng.integers(0, len(buf))):]
    elif op == 2:  # overwrite a byte with a random value
        buf[int(rng.integers(0, len(buf)))] = int(rng.integers(256))
    else:  # insert or append junk
        pos = int(rng.integers(0, len(buf) + 1))
        buf[pos:pos] = rng.bytes(int(rng.integers(1, 5)))
    return bytes(buf)


def receive(codec: FrameCodec, frame: bytes) -> None:
    _, payload = codec.open(frame)
    decode_message(payload, max_decoded_bytes=1 << 20)


def test_fuzz_frames_only_raise_peer_errors():
    rng = np.random.default_rng(1234)
    plain, signed = FrameCodec(), FrameCodec(b"k" * 32)
    payloads = valid_payloads()
    frames = [(c, c.seal("peer-1", p)) for p in payloads for c in (plain, plain, signed)]
    outcomes = {"ok": 0, "rejected": 0}
    for _ in range(ITERATIONS):
        codec, frame = frames[int(rng.integers(len(frames)))]
        try:
            receive(codec, mangle(frame, rng))
            outcomes["ok"] += 1
        except PeerError:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > ITERATIONS // 2
    for codec, frame in frames:
        receive(codec, frame)  # the originals still decode


def test_fuzz_messages_only_raise_peer_errors():
    rng = np.random.default_rng(99)
    payloads = valid_payloads()
    for _ in range(ITERATIONS):
        try:
            decode_message(mangle(payloads[int(rng.integers(len(payloads)))], rng))
        except PeerError:
            pass
