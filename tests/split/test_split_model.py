"""Splitting: head∘tail equals the model, cut points list shapes and FLOPs, bottleneck shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from meshlearn.errors import UsageError
from meshlearn.models import MODELS, build_model, flops_per_sample
from meshlearn.split import model as split_mod
from meshlearn.split.model import make_bottleneck, split_cnn, split_model, split_points


def _x(shape, n=5, seed=0):
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,shape", [("cnn", (1, 8, 8)), ("mlp", (1, 8, 8)), ("split_cnn", (1, 8, 8))])
def test_every_cut_composes_to_the_original(name, shape):
    model = build_model(name, shape, 10, seed=1).eval()
    x = _x(shape)
    expected = model(x)
    for point in split_points(model, shape):
        split = split_model(model, point.name, shape).eval()
        assert torch.equal(split(x), expected), point.name
        assert split.encode(x).shape[1:] == point.shape == split.cut_shape


def test_split_points_list_shapes_numel_and_flops():
    model = split_cnn((1, 8, 8), 10)
    points = {p.name: p for p in split_points(model, (1, 8, 8))}
    assert list(points) == [n for n, _ in model.named_children()][:-1]
    relu2 = points["relu2"]
    assert relu2.layer == "ReLU" and relu2.shape == (32, 8, 8) and relu2.numel == 2048
    assert relu2.head_flops + relu2.tail_flops == flops_per_sample(model, (1, 8, 8))
    split = split_model(model, "relu2", (1, 8, 8))
    assert (split.head_flops, split.tail_flops) == (relu2.head_flops, relu2.tail_flops)


def test_split_copies_layers_and_leaves_the_original_alone():
    model = split_cnn((1, 8, 8), 10)
    before = [p.clone() for p in model.parameters()]
    split = split_model(model, "pool2", (1, 8, 8))
    with torch.no_grad():
        for p in split.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_unknown_cut_lists_the_valid_names():
    model = split_cnn((1, 8, 8), 10)
    with pytest.raises(UsageError, match="valid cut points are conv1, relu1, conv2") as err:
        split_model(model, "conv9", (1, 8, 8))
    assert "out" not in str(err.value).split("valid cut points are")[1]  # the last layer is no cut


def test_non_sequential_models_are_refused_with_a_fix():
    class Net(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UsageError, match="nn.Sequential"):
        split_points(Net(), (3,))


def test_image_bottleneck_shrinks_channels_and_is_checked():
    model = split_cnn((1, 8, 8), 10)
    split = split_model(model, "relu2", (1, 8, 8), bottleneck=4, seed=3)
    assert split.cut_shape == (4, 8, 8) and split.cut_numel == 256
    x = _x((1, 8, 8))
    z = split.encode(x)
    assert z.shape == (5, 4, 8, 8) and (z >= 0).all()
    assert split(x).shape == (5, 10)
    with pytest.raises(UsageError, match=r"cut tensor must have shape \(N, 4, 8, 8\)"):
        split.decode(torch.zeros(5, 32, 8, 8))
    with pytest.raises(UsageError, match="head input"):
        split.encode(torch.zeros(5, 1, 7, 7))
    again = split_model(model, "relu2", (1, 8, 8), bottleneck=4, seed=3)
    assert torch.equal(again(x), split(x))  # seeded bottleneck


def test_flat_bottleneck_and_width_checks():
    model = build_model("mlp", (1, 8, 8), 10, seed=0, hidden=(32, 16))
    split = split_model(model, "2", (1, 8, 8), bottleneck=8)
    assert split.cut_shape == (8,)
    assert split(_x((1, 8, 8))).shape == (5, 10)
    with pytest.raises(UsageError, match=r"1\.\.32"):
        make_bottleneck((32,), 33)
    with pytest.raises(UsageError, match="shape"):
        make_bottleneck((4, 4), 2)


def test_split_cnn_is_registered_and_sized_for_mnist():
    assert "split_cnn" in MODELS.names()
    model = build_model("split_cnn", (1, 28, 28), 10, seed=0)
    points = {p.name: p for p in split_points(model, (1, 28, 28))}
    assert points["pool2"].shape == (32, 14, 14) and points["pool2"].numel == 6272
    with pytest.raises(UsageError, match="image"):
        split_cnn((64,), 10)


def test_batch_norm_variant_names_bn_layers_and_still_composes():
    model = split_cnn((1, 8, 8), 10, batch_norm=True).eval()
    names = [n for n, _ in model.named_children()]
    assert names[:4] == ["conv1", "bn1", "relu1", "conv2"] and "bn3" in names
    assert names.index("bn2") == names.index("conv2") + 1
    x = torch.randn(5, 1, 8, 8)
    split = split_model(model, "pool2", (1, 8, 8))
    assert split.cut_shape == (32, 4, 4)
    torch.testing.assert_close(split(x), model(x))


def test_module_api_is_explicit():
    for name in split_mod.__all__:
        assert hasattr(split_mod, name)
