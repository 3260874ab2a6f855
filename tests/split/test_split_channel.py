"""Tensor channel: quantization round trips, packet independence, permuted bursts, loss, deadlines,
rescaling, byte accounting, the vectorized twin and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meshlearn.config import validate_config
from meshlearn.errors import ConfigError

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.net.devices import DeviceProfile
from meshlearn.net.link import Link, LinkSpec
from meshlearn.net.loss import BernoulliLoss, NoLoss, TraceLoss
from meshlearn.net.network import Network
from meshlearn.split import channel as ch
from meshlearn.split.channel import (
    HEADER,
    ChannelSpec,
    Delivery,
    cut_delivery,
    decode_packet,
    element_mask,
    encode_packets,
    end_to_end_latency,
    over_link,
    over_loss_model,
    over_network,
    packet_plan,
    reconstruct,
    simulate_batch,
    transmit,
)

SHAPE = (16, 8, 8)  # 1,024 elements


def _tensor(seed=0, relu=True):
    x = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    return np.maximum(x, 0) if relu else x


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_fp32_round_trip_is_exact():
    x = _tensor(relu=False)
    for order in ("sequential", "permuted"):
        out, mask = reconstruct(encode_packets(x, ChannelSpec(order=order)), ChannelSpec(order=order), SHAPE)
        assert np.array_equal(out, x) and mask.all()


@pytest.mark.parametrize("bits", [8, 4, 3, 1, 12, 16])
def test_uniform_round_trip_is_within_half_a_step(bits):
    x = _tensor(relu=False)
    spec = ChannelSpec(quant="uniform", bits=bits)
    out, _ = reconstruct(encode_packets(x, spec), spec, SHAPE)
    step = (x.max() - x.min()) / (2**spec.element_bits - 1)
    assert np.abs(out - x).max() <= step / 2 * (1 + 1e-4) + 1e-6
    assert out.min() == pytest.approx(x.min(), abs=1e-6)  # lo is exact


def test_fp16_round_trip_and_relu_zeros_survive_uniform():
    x = _tensor()
    spec16 = ChannelSpec(quant="fp16")
    out, _ = reconstruct(encode_packets(x, spec16), spec16, SHAPE)
    assert np.array_equal(out, x.astype(np.float16).astype(np.float32))
    spec8 = ChannelSpec(quant="uniform")
    out8, _ = reconstruct(encode_packets(x, spec8), spec8, SHAPE)
    assert (out8[x == 0] == 0).all()  # ReLU zeros stay exactly zero


def test_constant_and_empty_tensors():
    spec = ChannelSpec(quant="uniform", bits=5)
    x = np.full((3, 4), 2.5, np.float32)
    assert np.array_equal(reconstruct(encode_packets(x, spec), spec, x.shape)[0], x)
    empty = np.zeros((0,), np.float32)
    packets = encode_packets(empty, spec)
    assert len(packets) == 1 and reconstruct(packets, spec, (0,))[0].shape == (0,)


@pytest.mark.parametrize("spec", [ChannelSpec(quant="fp16", mtu=300), ChannelSpec(quant="uniform", bits=5, mtu=200),
                                  ChannelSpec(quant="uniform", mtu=200, compress="zstd")])
def test_each_packet_decodes_alone(spec):
    x = _tensor(relu=False)
    packets = encode_packets(x, spec, tag=7)
    full, _ = reconstruct(packets, spec, SHAPE)
    flat = full.ravel()
    seen = np.zeros(x.size, bool)
    for i, data in enumerate(packets):
        pkt = decode_packet(data, spec, x.size)
        assert (pkt.index, pkt.total, pkt.tag) == (i, len(packets), 7)
        assert np.array_equal(pkt.values, flat[pkt.positions])
        one, mask = reconstruct([data], spec, SHAPE)
        assert mask.sum() == len(pkt.positions) and np.array_equal(one.ravel()[pkt.positions], pkt.values)
        seen[pkt.positions] = True
    assert seen.all()


def test_zstd_packets_shrink_sparse_tensors_and_fall_back_when_useless():
    sparse = np.zeros(SHAPE, np.float32)
    sparse[0, 0, :4] = 1.0
    plain, packed = ChannelSpec(quant="uniform"), ChannelSpec(quant="uniform", compress="zstd")
    assert sum(map(len, encode_packets(sparse, packed))) < sum(map(len, encode_packets(sparse, plain))) / 5
    noise = np.random.default_rng(1).random(SHAPE).astype(np.float32)  # uniform 8-bit codes: incompressible
    raw = encode_packets(noise, plain)
    assert [len(p) for p in encode_packets(noise, packed)] == [len(p) for p in raw]


def test_packets_fill_the_mtu_and_bytes_per_sample_match():
    spec = ChannelSpec(quant="fp32", mtu=1500, header_bytes=28)
    order, per, total = packet_plan(1024, spec)
    assert per == (1500 - 28 - HEADER.size) // 4 and total == math.ceil(1024 / per)
    packets = encode_packets(_tensor(), spec)
    assert all(len(p) + 28 <= 1500 for p in packets) and len(packets) == total
    assert len(packets[0]) + 28 == HEADER.size + per * 4 + 28
    result = transmit(_tensor(), spec, over_loss_model(NoLoss(), _rng()))
    assert result.packets == total
    assert result.wire_bytes == 1024 * 4 + total * (HEADER.size + 28)
    assert result.fraction_received == 1.0


def test_permuted_order_scatters_a_burst_of_lost_packets():
    spec_seq = ChannelSpec(quant="fp16", mtu=300, order="sequential")
    spec_perm = ChannelSpec(quant="fp16", mtu=300, order="permuted", perm_seed=5)
    _, per, total = packet_plan(1024, spec_seq)
    burst = np.ones(total, bool)
    burst[2:5] = False  # three consecutive packets lost
    lost_seq = np.flatnonzero(~element_mask(burst, 1024, spec_seq))
    lost_perm = np.flatnonzero(~element_mask(burst, 1024, spec_perm))
    assert len(lost_seq) == len(lost_perm) == 3 * per
    assert np.array_equal(lost_seq, np.arange(2 * per, 5 * per))  # one contiguous block
    assert lost_perm.min() < 64 and lost_perm.max() >= 1024 - 64  # spread over the whole tensor,
    assert (np.diff(lost_perm) > 1).sum() > len(lost_perm) // 3  # in many separate pieces,
    assert len(np.unique(lost_perm // 64)) >= 14 and len(np.unique(lost_seq // 64)) <= 3 * per // 64 + 2  # ~all channels


def test_loss_model_masks_zero_fill_and_rescale():
    x = _tensor() + 1.0  # strictly positive, so a zero means "lost"
    pattern = [0, 1, 0, 0, 1, 0]  # TraceLoss: 1 = lost
    for rescale, factor in [("none", None), ("fixed", 1 / (1 - 0.25)), ("observed", None)]:
        spec = ChannelSpec(quant="fp32", mtu=400, rescale=rescale, rescale_p=0.25)
        result = transmit(x, spec, over_loss_model(TraceLoss(pattern), _rng()))
        kept = result.mask
        lost = sum(pattern[i % len(pattern)] for i in range(result.packets))  # the trace repeats
        assert result.accepted == result.packets - lost and not kept.all()
        assert (result.tensor[~kept] == 0).all()
        if rescale == "none":
            assert np.array_equal(result.tensor[kept], x[kept])
        elif rescale == "fixed":
            np.testing.assert_allclose(result.tensor[kept], x[kept] * factor, rtol=1e-6)
        else:
            np.testing.assert_allclose(result.tensor[kept], x[kept] * x.size / kept.sum(), rtol=1e-6)
            assert result.tensor.sum() == pytest.approx(x[kept].sum() * x.size / kept.sum(), rel=1e-5)


def test_observed_rescale_with_nothing_received_is_all_zeros():
    spec = ChannelSpec(rescale="observed")
    out, mask = reconstruct([], spec, SHAPE)
    assert not mask.any() and not out.any()


def test_deadline_and_reach_rate_cut_late_packets():
    arrival = np.array([1.0, 2.0, 3.0, 4.0])
    d = Delivery(np.array([True, True, False, True]), arrival, start_s=0.5)
    assert cut_delivery(d, ChannelSpec())[1] == 4.0  # oracle: last arrival
    accepted, t = cut_delivery(d, ChannelSpec(deadline_s=2.0))
    assert t == 2.5 and accepted.tolist() == [True, True, False, False]
    accepted, t = cut_delivery(d, ChannelSpec(reach_rate=0.5))
    assert t == 2.0 and accepted.tolist() == [True, True, False, False]
    accepted, t = cut_delivery(d, ChannelSpec(reach_rate=1.0, deadline_s=10.0))
    assert t == 10.5 and accepted.tolist() == [True, True, False, True]  # waits for the lost one
    full = Delivery(np.ones(4, bool), arrival, start_s=0.0)
    assert cut_delivery(full, ChannelSpec(deadline_s=10.0))[1] == 4.0  # all in: no need to wait


def test_transmit_over_a_link_times_packets_and_applies_the_deadline():
    link = Link(LinkSpec(latency_s=0.01, bandwidth_bps=1e6, mtu=1500), _rng())
    spec = ChannelSpec(quant="fp32")
    x = _tensor()
    full = transmit(x, spec, over_link(link), now=1.0)
    assert full.fraction_received == 1.0
    assert full.transfer_s == pytest.approx(full.wire_bytes * 8 / 1e6 + 0.01)
    link.reset()
    cut = transmit(x, spec.model_copy(update={"deadline_s": 0.03}), over_link(link), now=1.0)
    assert cut.accepted == 1 and cut.packets == 3 and cut.transfer_s == pytest.approx(0.03)


def test_transmit_over_a_network_loses_packets_and_counts_bytes():
    net = Network(None, LinkSpec(loss={"model": "bernoulli", "p": 0.5}), {}, np.random.SeedSequence(3))
    spec = ChannelSpec(quant="fp16", mtu=300)
    result = transmit(_tensor(), spec, over_network(net, "dev", "srv"))
    assert 0 < result.accepted < result.packets
    assert net.wire_bytes_sent["dev"] == result.wire_bytes
    too_big = ChannelSpec(mtu=9000)
    with pytest.raises(UsageError, match="lower the ChannelSpec mtu"):
        transmit(_tensor(), too_big, over_network(net, "dev", "srv"))


def test_unreachable_destination_loses_everything_and_waits_for_the_deadline():
    net = Network(None, LinkSpec(), {}, np.random.SeedSequence(0))
    net.partition([["dev"], ["srv"]])
    result = transmit(_tensor(), ChannelSpec(deadline_s=0.5), over_network(net, "dev", "srv"), now=2.0)
    assert result.accepted == 0 and not result.tensor.any() and result.transfer_s == pytest.approx(0.5)


def test_simulate_batch_equals_the_packet_path():
    z = np.stack([_tensor(s, relu=s % 2 == 0) for s in range(4)])
    for spec in [ChannelSpec(quant="uniform", bits=5, mtu=300, rescale="observed"),
                 ChannelSpec(quant="fp16", mtu=300, order="sequential"), ChannelSpec(quant="fp32", mtu=700)]:
        _, _, total = packet_plan(z[0].size, spec)
        masks = ~BernoulliLoss(0.4).sample(4 * total, _rng(9)).reshape(4, total)
        batch, emask = simulate_batch(z, spec, masks)
        for i in range(4):
            packets = [p for p, ok in zip(encode_packets(z[i], spec), masks[i]) if ok]
            one, m = reconstruct(packets, spec, SHAPE)
            assert np.array_equal(one, batch[i]) and np.array_equal(m, emask[i])


def test_end_to_end_latency_adds_the_three_parts():
    device, server = DeviceProfile(1e8, 1e6, 1e6), DeviceProfile(1e10, 1e9, 1e9)
    lat = end_to_end_latency(2e6, 3e7, 0.05, device, server)
    assert (lat.device_s, lat.transfer_s, lat.server_s) == pytest.approx((0.02, 0.05, 0.003))
    assert lat.total_s == pytest.approx(0.073)
    with pytest.raises(UsageError):
        end_to_end_latency(1, 1, -1.0, device, server)


@pytest.mark.parametrize("kwargs,match", [
    ({"quant": "int4"}, "quant"), ({"bits": 0}, "bits"), ({"bits": 17}, "bits"), ({"mtu": 40}, "no room"),
    ({"elements_per_packet": 2000, "quant": "fp16"}, "do not fit"), ({"reach_rate": 0}, "reach_rate"),
    ({"rescale_p": 1.0}, "rescale_p"), ({"compress": "gzip"}, "compress"), ({"colour": 1}, "colour"),
])
def test_bad_specs_are_config_errors_naming_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):  # pydantic's ValidationError, in Python
        ChannelSpec(**kwargs)
    with pytest.raises(ConfigError, match=match):  # one `key: reason` line, from a config
        validate_config(ChannelSpec, kwargs)


def test_old_int8_spelling_fails_in_one_line_naming_uniform():
    with pytest.raises(ConfigError) as err:
        validate_config(ChannelSpec, {"quant": "int8"})
    assert str(err.value) == "quant: 'int8' was renamed: use quant='uniform' (bits=8 is the default)"
    assert ChannelSpec(quant="uniform").element_bits == 8


def test_malformed_uniform_parameters_are_protocol_errors():
    spec = ChannelSpec(quant="uniform", mtu=300)
    good = encode_packets(_tensor(), spec)[0]
    for lo, scale in ((math.nan, 0.1), (0.0, math.inf), (0.0, -1.0)):
        with pytest.raises(ProtocolError, match="uniform"):
            decode_packet(HEADER.pack(*HEADER.unpack_from(good)[:8], lo, scale) + good[HEADER.size:], spec, 1024)


def test_bad_inputs_raise_usage_errors():
    bad = np.array([1.0, np.inf], np.float32)
    with pytest.raises(UsageError, match="finite"):
        encode_packets(bad, ChannelSpec(quant="uniform"))
    assert np.isinf(reconstruct(encode_packets(bad, ChannelSpec()), ChannelSpec(), (2,))[0]).any()
    with pytest.raises(UsageError, match="tag"):
        encode_packets(np.zeros(3), ChannelSpec(), tag=-1)
    with pytest.raises(UsageError, match="packets"):
        element_mask(np.ones(5, bool), 1024, ChannelSpec())
    with pytest.raises(UsageError, match="over the limit"):
        packet_plan(10**8, ChannelSpec(mtu=60))


def test_malformed_packets_raise_protocol_errors():
    spec = ChannelSpec(quant="uniform", mtu=300)
    good = encode_packets(_tensor(), spec)[1]
    cases = [good[:10], b"\x09" + good[1:], good[:-1], good + b"\x00",
             good[:3] + b"\x04" + good[4:],  # unknown flag
             good[:3] + b"\x01" + good[4:]]  # "compressed" under compress='none'
    for data in cases:
        with pytest.raises(ProtocolError):
            decode_packet(data, spec, 1024)
    with pytest.raises(ProtocolError, match="quantization"):
        decode_packet(good, ChannelSpec(quant="fp16", mtu=300), 1024)
    with pytest.raises(ProtocolError, match="expected"):
        decode_packet(good, spec, 999)
    other = encode_packets(_tensor(), spec, tag=2)[0]
    with pytest.raises(ProtocolError, match="tags"):
        reconstruct([good, other], spec, SHAPE)


def test_module_api_is_explicit():
    for name in ch.__all__:
        assert hasattr(ch, name)
