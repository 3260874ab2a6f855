"""Model zoo: output shapes, seeded init, global RNG untouched, parameter and FLOP counts."""

from __future__ import annotations

import pytest
import torch

import meshlearn.models as models
from meshlearn.errors import RegistryError, UsageError
from meshlearn.models import MODELS, build_model, count_params, flops_per_sample


def test_public_api_is_explicit():
    for name in models.__all__:
        assert hasattr(models, name)
    assert {"mlp", "cnn"} <= set(MODELS.names())


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 5, 5)])
def test_output_shapes(name, shape):
    model = build_model(name, shape, 10, seed=0)
    assert model(torch.zeros(4, *shape)).shape == (4, 10)


def test_mlp_on_tabular_and_cnn_rejects_it():
    assert build_model("mlp", (7,), 3, seed=0, hidden=(5, 4))(torch.zeros(2, 7)).shape == (2, 3)
    with pytest.raises(UsageError, match="mlp"):
        build_model("cnn", (7,), 3, seed=0)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_init_is_seeded_and_leaves_global_rng_alone(name):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_model(name, (1, 8, 8), 10, seed=5), build_model(name, (1, 8, 8), 10, seed=5)
    assert torch.equal(torch.rand(1), expected_next)
    c = build_model(name, (1, 8, 8), 10, seed=6)
    assert torch.equal(_flat(a), _flat(b)) and not torch.equal(_flat(a), _flat(c))


def test_count_params_and_flops_by_hand():
    mlp = build_model("mlp", (1, 8, 8), 10, seed=0, hidden=(32,))
    assert count_params(mlp) == 64 * 32 + 32 + 32 * 10 + 10
    assert flops_per_sample(mlp, (1, 8, 8)) == 2 * (64 * 32 + 32 * 10)
    cnn = build_model("cnn", (1, 8, 8), 10, seed=0, channels=(4,))
    # conv 1->4 on 8x8 (pool to 4x4), then linear 4*4*4 -> 10
    assert flops_per_sample(cnn, (1, 8, 8)) == 2 * (1 * 9 * 4 * 64) + 2 * (64 * 10)
    assert len(cnn._forward_hooks) == 0 and all(len(m._forward_hooks) == 0 for m in cnn.modules())


def test_cnn_pools_only_while_spatial_at_least_4():
    pools = lambda m: sum(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())  # noqa: E731
    assert pools(build_model("cnn", (1, 8, 8), 10, seed=0, channels=(4, 4, 4))) == 2  # 8 -> 4 -> 2
    assert pools(build_model("cnn", (1, 28, 28), 10, seed=0)) == 2  # 28 -> 14 -> 7


def test_unknown_model_and_param():
    with pytest.raises(RegistryError, match="cnn, mlp"):
        build_model("resnet", (1, 8, 8), 10, seed=0)
    with pytest.raises(UsageError, match="hidden"):
        build_model("mlp", (1, 8, 8), 10, seed=0, hiden=(3,))
