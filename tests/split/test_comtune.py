"""COMtune: packet dropout matches the channel's packet grouping and rescale, eval is the identity,
fake quantization matches the channel's quantizer, a tuned toy model degrades less under real
channel loss than the untuned one, and loss curves are well-formed."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from meshlearn.errors import UsageError
from meshlearn.split.channel import ChannelSpec, element_mask, simulate_batch
from meshlearn.split.comtune import PacketDropout, comtune, fake_quantize, loss_curve, packet_of_element
from meshlearn.split.model import split_model

SHAPE = (4, 4, 4)  # 64 elements


@pytest.mark.parametrize("order", ["permuted", "sequential"])
def test_packet_of_element_matches_channel_plan(order):
    spec = ChannelSpec(quant="fp32", order=order, perm_seed=3, elements_per_packet=5)
    pkt = packet_of_element(64, spec)
    assert pkt.max() == 12  # 13 packets, the last one short
    for i in range(13):
        one = np.zeros((1, 13), bool)
        one[0, i] = True
        assert np.array_equal(element_mask(one, 64, spec)[0], pkt == i)


@pytest.mark.parametrize("rescale", ["none", "fixed", "observed"])
@pytest.mark.parametrize("order", ["permuted", "sequential"])
def test_dropout_equals_channel_for_same_packet_mask(order, rescale):
    spec = ChannelSpec(quant="fp32", order=order, elements_per_packet=8, rescale=rescale, rescale_p=0.4)
    drop = PacketDropout(SHAPE, spec, 0.5, seed=1).train()
    z = torch.rand((6, *SHAPE)) + 0.1
    pm = drop.packet_mask(6)
    assert pm.shape == (6, 8) and 0 < pm.float().mean() < 1
    expected, mask = simulate_batch(z.numpy(), spec, pm.numpy())
    got = drop.apply_mask(z, pm)
    assert np.array_equal(got.numpy() != 0, mask)  # whole packets' element groups zeroed
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


def test_forward_drops_whole_packets_at_rate_p():
    spec = ChannelSpec(quant="fp32", elements_per_packet=4)
    drop = PacketDropout(SHAPE, spec, 0.3, seed=0).train()
    out = drop(torch.ones((2000, *SHAPE))).reshape(2000, -1)
    pkt = torch.from_numpy(packet_of_element(64, spec))
    for i in range(16):  # every packet group is all kept or all lost
        group = out[:, pkt == i]
        assert torch.all((group == 0).all(1) | (group == 1).all(1))
    assert abs((out == 0).float().mean().item() - 0.3) < 0.02


def test_eval_mode_leaves_cut_untouched():
    spec = ChannelSpec(quant="uniform", elements_per_packet=4)
    drop = PacketDropout(SHAPE, spec, 0.9, quantize=True).eval()
    z = torch.randn((3, *SHAPE))
    assert torch.equal(drop(z), z)


@pytest.mark.parametrize("quant,bits", [("fp16", 8), ("uniform", 8), ("uniform", 4)])
def test_fake_quantize_matches_the_wire_scheme_and_passes_gradient(quant, bits):
    spec = ChannelSpec(quant=quant, bits=bits)
    z = torch.randn((5, *SHAPE), requires_grad=True)
    q = fake_quantize(z, spec)
    wire = spec.scheme.decode(spec.scheme.encode(z.detach().numpy().reshape(5, -1)))
    np.testing.assert_allclose(q.detach().numpy().reshape(5, -1), wire, atol=1e-5)
    q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight-through


def test_bad_arguments():
    spec = ChannelSpec()
    with pytest.raises(UsageError):
        PacketDropout(SHAPE, spec, 1.0)
    with pytest.raises(UsageError):
        comtune(None, (None, None), 0.5, part="head")


# ---------------------------------------------------------------- a toy model, tuned vs not

def _toy_data(n, seed):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0, 1.0, (4, 12))
    y = rng.integers(0, 4, n)
    x = centers[y] + rng.normal(0, 0.8, (n, 12))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(fc1=nn.Linear(12, 32), relu1=nn.ReLU(), fc2=nn.Linear(32, 32), relu2=nn.ReLU(),
                                      out=nn.Linear(32, 4)))
    xtr, ytr = _toy_data(600, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xtr), ytr).backward()
        opt.step()
    split = split_model(model.eval(), "relu1", (12,))  # tail = fc2, relu2, out
    spec = ChannelSpec(quant="fp32", elements_per_packet=2)  # 16 packets
    return split, spec, (xtr, ytr), _toy_data(400, 2)


def test_comtune_degrades_less_than_untuned(toy):
    split, spec, train, test = toy
    before = [p.detach().clone() for p in split.parameters()]
    tuned = comtune(split, train, 0.5, epochs=30, lr=3e-3, spec=spec, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, split.parameters()))  # input untouched
    assert all(torch.equal(a, b) for a, b in zip(split.head.parameters(), tuned.head.parameters()))  # tail only
    rates = [0.0, 0.5, 0.7]
    plain = dict(loss_curve(split, test, spec, rates, repeats=3, seed=0))
    tune = dict(loss_curve(tuned, test, spec, rates, repeats=3, seed=0))
    assert plain[0.0] > 0.85 and tune[0.0] > 0.85
    plain_drop, tuned_drop = plain[0.0] - plain[0.5], plain[0.0] - tune[0.5]
    assert plain_drop > 0.10
    assert tuned_drop < plain_drop - 0.05
    assert tune[0.7] > plain[0.7] + 0.10


def test_comtune_all_tunes_head_too(toy):
    split, spec, train, _ = toy
    tuned = comtune(split, train, 0.5, epochs=1, spec=spec, part="all", quantize=True)
    assert not all(torch.equal(a, b) for a, b in zip(split.head.parameters(), tuned.head.parameters()))
    assert not tuned.training and all(p.requires_grad for p in tuned.parameters())


def test_loss_curve_is_well_formed(toy):
    split, spec, _, test = toy
    rates = [0.0, 0.3, 0.6, 0.9, 1.0]
    curve = loss_curve(split, test, spec, rates, repeats=2, seed=4)
    assert [r for r, _ in curve] == rates
    accs = np.array([a for _, a in curve])
    assert np.all((accs >= 0) & (accs <= 1))
    assert np.all(np.diff(accs) <= 0.02)  # monotone up to sampling noise
    assert accs[0] - accs[-1] > 0.4  # everything lost: the tail sees zeros
    assert curve == loss_curve(split, test, spec, rates, repeats=2, seed=4)  # seeded
    with pytest.raises(UsageError):
        loss_curve(split, test, spec, rates, repeats=0)
