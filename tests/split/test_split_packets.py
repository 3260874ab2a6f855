"""Split-inference packets: exact wire sizes, round trips, and ProtocolError on bad bytes."""

from __future__ import annotations

import numpy as np
import pytest

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.split.channel import ChannelSpec, encode_packets
from meshlearn.split.packets import SplitReply, TensorChunk, spec_digest
from meshlearn.wire import decode_payload, encode_payload
from meshlearn.wire.packet import packet_types

SPEC = ChannelSpec(quant="uniform", elements_per_packet=100)


def chunks(n: int = 250, spec: ChannelSpec = SPEC) -> list[TensorChunk]:
    x = np.linspace(-1, 1, n, dtype=np.float32)
    return [TensorChunk(spec_digest(spec), body) for body in encode_packets(x, spec, tag=77)]


def test_tags_are_registered_in_the_split_range():
    assert packet_types()[0xB0] is TensorChunk and packet_types()[0xB1] is SplitReply


@pytest.mark.parametrize("spec", [SPEC, ChannelSpec(quant="fp16"), ChannelSpec(quant="uniform", bits=3),
                                  ChannelSpec(quant="uniform", compress="zstd", elements_per_packet=64)])
def test_chunks_round_trip_with_exact_wire_size(spec):
    for chunk in chunks(spec=spec):
        data = encode_payload(chunk)
        assert chunk.wire_size == len(data) and data[0] == 0xB0
        back = decode_payload(data)
        assert isinstance(back, TensorChunk) and back.spec == chunk.spec and back.body == chunk.body
        assert back.sample == 77 and back.index < back.total


def test_reply_round_trips_with_exact_wire_size():
    reply = SplitReply(2**32 - 1, 9, 3, 4)
    data = reply.encode()
    assert reply.wire_size == len(data) == 11
    back = decode_payload(data)
    assert (back.sample, back.prediction, back.accepted, back.total) == (2**32 - 1, 9, 3, 4)


def test_spec_digest_covers_the_fields_that_shape_the_bytes_only():
    base = spec_digest(SPEC)
    for change in (dict(quant="fp16"), dict(order="sequential"), dict(perm_seed=1), dict(elements_per_packet=99),
                   dict(compress="lz4")):
        assert spec_digest(SPEC.model_copy(update=change)) != base, change
    tail_only = ChannelSpec(quant="uniform", elements_per_packet=100, deadline_s=0.1, rescale="observed", reach_rate=0.5)
    assert spec_digest(tail_only) == base


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d[:4], "truncated"),
    (lambda d: d[:20], "shorter than"),
    (lambda d: d[:5] + b"\x02" + d[6:], "version"),
    (lambda d: d[:6] + b"\x07" + d[7:], "quantization"),
    (lambda d: d[:8] + b"\x80" + d[9:], "flags"),
    (lambda d: d[:13] + (9).to_bytes(2, "little") + d[15:], "packet 9 of 3"),
])
def test_malformed_chunks_are_protocol_errors(mutate, match):
    data = chunks()[0].encode()
    with pytest.raises(ProtocolError, match=match):
        decode_payload(mutate(data))


@pytest.mark.parametrize("data, match", [
    (bytes([0xB1, 0, 0]), "truncated"),
    (SplitReply(1, 2, 3, 4).encode() + b"x", "trailing"),
    (SplitReply(1, 2, 3, 4).encode()[:7] + (5).to_bytes(2, "big") + (4).to_bytes(2, "big"), "5 of 4"),
    (bytes([0xBF]) + bytes(10), "unknown packet type"),
])
def test_malformed_replies_are_protocol_errors(data, match):
    with pytest.raises(ProtocolError, match=match):
        decode_payload(data)


def test_out_of_range_fields_are_usage_errors():
    with pytest.raises(UsageError, match="prediction"):
        SplitReply(0, 70_000, 0, 1)
    with pytest.raises(UsageError, match="spec digest"):
        TensorChunk(-1, b"")


# ----- the tail's channel settings, sent back to a head with another spec (issue 12, item 7) --------
def test_settings_round_trip_and_their_digest_is_the_chunks_spec_digest():
    from meshlearn.split.packets import SplitSettings, shared_settings

    settings = SplitSettings.of(SPEC)
    assert settings.spec == spec_digest(SPEC) and settings.settings == shared_settings(SPEC)
    assert settings.settings == {"quant": "uniform", "bits": 8, "order": "permuted", "perm_seed": 0, "per": 100,
                                 "compress": "none"}
    data = encode_payload(settings)
    assert packet_types()[0xB2] is SplitSettings and data[0] == 0xB2 and settings.wire_size == len(data) < 200
    back = decode_payload(data)
    assert isinstance(back, SplitSettings) and back.spec == settings.spec and back.settings == settings.settings


@pytest.mark.parametrize("body, match", [
    (b"", "truncated"),
    (b"\x00\x00\x00\x01{not json", "JSON"),
    (b"\x00\x00\x00\x01[1, 2]", "table"),
    (b"\x00\x00\x00\x01{\"bits\": [8]}", "bits"),
    (b"\x00\x00\x00\x01{\"bits\": 8}", "digest"),
    (b"\x00\x00\x00\x01{\"" + b"k" * 600 + b"\": 1}", "bytes"),
])
def test_malformed_settings_are_protocol_errors(body, match):
    with pytest.raises(ProtocolError, match=match):
        decode_payload(b"\xb2" + body)
