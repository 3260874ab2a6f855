"""Packetizer: counts, round trips, zero-fill of lost packets."""

import numpy as np
import pytest

from meshlearn.errors import UsageError
from meshlearn.net.packetizer import (
    apply_loss_mask,
    packet_count,
    packet_sizes,
    packetize,
    payload_size,
    reassemble,
)


def test_packet_count_uses_payload_after_headers():
    assert payload_size(1500) == 1472
    assert packet_count(0, 1500) == 1
    assert packet_count(1472, 1500) == 1
    assert packet_count(1473, 1500) == 2
    assert packet_count(10_000, 1028, header_bytes=28) == 10
    assert packet_sizes(2500, 1028).tolist() == [1000, 1000, 500]
    assert packet_sizes(0, 1500).tolist() == [0]


def test_bad_mtu_or_size_raises():
    with pytest.raises(UsageError, match="mtu"):
        packet_count(10, 28)
    with pytest.raises(UsageError, match="nbytes"):
        packet_count(-1, 1500)


def test_roundtrip():
    data = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    packets = packetize(data, mtu=1028)
    assert [len(p) for p in packets] == [1000] * 5
    out, mask = reassemble(packets)
    assert out == data and mask.all()
    assert packetize(b"", 1500) == [b""]
    assert reassemble([b""])[0] == b""


def test_lost_packets_are_zero_filled():
    data = bytes(range(256)) * 10  # 2560 bytes -> 1000, 1000, 560
    packets: list[bytes | None] = list(packetize(data, mtu=1028))
    packets[1] = None
    out, mask = reassemble(packets)
    assert mask.tolist() == [True, False, True]
    assert out == data[:1000] + bytes(1000) + data[2000:]


def test_lost_last_packet_needs_length_to_be_exact():
    data = b"x" * 2500
    packets: list[bytes | None] = list(packetize(data, mtu=1028))
    packets[-1] = None
    assert reassemble(packets, nbytes=2500)[0] == b"x" * 2000 + bytes(500)
    assert len(reassemble(packets)[0]) == 3000  # without nbytes: a full payload
    with pytest.raises(UsageError, match="payload"):
        reassemble([None])
    assert reassemble([None], payload=1000, nbytes=10)[0] == bytes(10)


def test_apply_loss_mask_matches_reassemble():
    data = bytes(np.random.default_rng(1).integers(0, 256, 10_500, dtype=np.uint8))
    mask = np.array([True, False, True, True, False, False, True, True, True, True, False])
    packets = [p if keep else None for p, keep in zip(packetize(data, 1028), mask)]
    assert apply_loss_mask(data, mask, 1028) == reassemble(packets, nbytes=len(data))[0]
    with pytest.raises(UsageError, match="expected"):
        apply_loss_mask(data, mask[:-1], 1028)
