"""Frames: layout, size accounting, limits and HMAC authentication."""

from __future__ import annotations

import pytest

from meshlearn.errors import AuthError, ProtocolError, UsageError
from meshlearn.wire import HEADER_SIZE, MAC_SIZE, FrameCodec

SECRET = b"s" * 32


def test_layout_without_secret():
    frame = FrameCodec().seal("n1", b"hello")
    assert HEADER_SIZE == 9
    assert frame == b"ML\x01\x00\x02\x00\x00\x00\x05n1hello"


def test_layout_with_secret():
    frame = FrameCodec(SECRET).seal("n1", b"hello")
    assert frame[:9] == b"ML\x01\x01\x02\x00\x00\x00\x05" and len(frame) == 9 + 2 + 5 + MAC_SIZE


@pytest.mark.parametrize("secret", [None, SECRET])
@pytest.mark.parametrize("src", ["a", "client-17", "ノード", "x" * 255])
@pytest.mark.parametrize("payload", [b"", b"x", bytes(1000)])
def test_roundtrip_and_frame_size(secret, src, payload):
    codec = FrameCodec(secret)
    frame = codec.seal(src, payload)
    assert codec.frame_size(src, len(payload)) == len(frame)
    assert codec.open(frame) == (src, payload)
    src_len, body_len, has_mac = codec.parse_header(frame[:HEADER_SIZE])
    assert (src_len, body_len, has_mac) == (len(src.encode()), len(payload), secret is not None)
    assert HEADER_SIZE + src_len + body_len + MAC_SIZE * has_mac == len(frame)


def test_accepts_bytearray_and_memoryview():
    codec = FrameCodec(SECRET)
    frame = codec.seal("a", memoryview(bytearray(b"abc")))
    assert codec.open(bytearray(frame)) == ("a", b"abc")
    assert codec.open(memoryview(frame)) == ("a", b"abc")


def test_wrong_key_is_auth_error():
    frame = FrameCodec(SECRET).seal("a", b"payload")
    with pytest.raises(AuthError, match="MAC is wrong"):
        FrameCodec(b"t" * 32).open(frame)


def test_missing_mac_is_auth_error():
    frame = FrameCodec().seal("a", b"payload")
    with pytest.raises(AuthError, match="no MAC"):
        FrameCodec(SECRET).open(frame)
    with pytest.raises(AuthError, match="no MAC"):
        FrameCodec(SECRET).parse_header(frame[:HEADER_SIZE])


def test_unexpected_mac_is_auth_error():
    frame = FrameCodec(SECRET).seal("a", b"payload")
    with pytest.raises(AuthError, match="no secret"):
        FrameCodec().open(frame)


def test_stripped_mac_with_cleared_flag_is_auth_error():
    frame = bytearray(FrameCodec(SECRET).seal("a", b"payload")[:-MAC_SIZE])
    frame[3] = 0
    with pytest.raises(AuthError):
        FrameCodec(SECRET).open(bytes(frame))


def test_every_tampered_byte_is_rejected():
    codec = FrameCodec(SECRET)
    frame = codec.seal("node", b"some payload")
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises((AuthError, ProtocolError)):
            codec.open(bytes(bad))
    bad = bytearray(frame)
    bad[HEADER_SIZE + 4 + 3] ^= 0xFF  # a payload byte: only the MAC can notice
    with pytest.raises(AuthError):
        codec.open(bytes(bad))


@pytest.mark.parametrize(
    "frame,reason",
    [
        (b"XL\x01\x00\x01\x00\x00\x00\x00a", "magic"),
        (b"ML\x02\x00\x01\x00\x00\x00\x00a", "version"),
        (b"ML\x01\x02\x01\x00\x00\x00\x00a", "flags"),
        (b"ML\x01\x00\x00\x00\x00\x00\x00", "empty source"),
        (b"ML\x01\x00\x01\x00\x00\x00", "needs 9 bytes"),
        (b"ML\x01\x00\x01\x00\x00\x00\x05a", "header declares"),
        (b"ML\x01\x00\x01\x00\x00\x00\x00ab", "header declares"),
        (b"ML\x01\x00\x01\x00\x00\x00\x00\xff", "UTF-8"),
        (b"ML\x01\x00\x01\xff\xff\xff\xffa", "exceeds the limit"),
    ],
)
def test_malformed_frames(frame, reason):
    with pytest.raises(ProtocolError, match=reason):
        FrameCodec().open(frame)


def test_size_limit_on_both_ends():
    small = FrameCodec(max_frame_bytes=100)
    frame = FrameCodec().seal("a", bytes(200))
    with pytest.raises(ProtocolError, match=r"frame of 210 bytes exceeds the limit 100"):
        small.parse_header(frame[:HEADER_SIZE])
    with pytest.raises(UsageError, match="exceeds the limit"):
        small.seal("a", bytes(200))
    assert small.open(small.seal("a", bytes(90))) == ("a", bytes(90))


def test_usage_errors():
    for bad in ("", 5, "x" * 256, "\ud800"):
        with pytest.raises(UsageError):
            FrameCodec().seal(bad, b"")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        FrameCodec(b"")
    with pytest.raises(UsageError):
        FrameCodec("text")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        FrameCodec(max_frame_bytes=5)
    with pytest.raises(UsageError):
        FrameCodec().frame_size("a", -1)
    assert "sss" not in repr(FrameCodec(SECRET))
