"""The tiny GPT: layout, seeded init, incremental decoding with KV caches, seeded training on the corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshlearn.data import CharVocab, load_corpus
from meshlearn.errors import UsageError
from meshlearn.models import GPT, GPTConfig, build_gpt, count_params, train_lm
from meshlearn.models.gpt import KVCache, lm_batches

TEXT = load_corpus()
VOCAB = CharVocab.from_text(TEXT)
TOKENS = VOCAB.encode(TEXT)
SMALL = GPTConfig(VOCAB.size, n_blocks=2, d_model=32, n_heads=4, context=32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the box is shared; torch's default spins on every core
    yield
    torch.set_num_threads(before)


def test_layout_and_shapes():
    model = build_gpt(GPTConfig(VOCAB.size), seed=0)
    names = [name for name, _ in model.named_children()]
    assert names == ["embed", *(f"block{i}" for i in range(1, 9)), "head"]
    assert 350_000 < count_params(model) < 450_000
    with torch.no_grad():
        assert model(torch.from_numpy(TOKENS[None, :64])).shape == (1, 64, VOCAB.size)


def test_config_is_validated():
    with pytest.raises(UsageError, match="multiple of n_heads"):
        GPTConfig(10, d_model=30, n_heads=4)
    with pytest.raises(UsageError, match="positive int"):
        GPTConfig(10, n_blocks=0)


def test_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build_gpt(SMALL, seed=0), build_gpt(SMALL, seed=0), build_gpt(SMALL, seed=1)
    assert torch.equal(torch.rand(1), before)
    for (key, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), key
    assert not torch.equal(a.state_dict()["block1.qkv.weight"], c.state_dict()["block1.qkv.weight"])


@pytest.mark.parametrize("chunks", [[1] * 24, [5, 1, 10, 8], [24]])
def test_incremental_decoding_equals_full_recompute(chunks):
    model = build_gpt(SMALL, seed=0)
    idx = torch.from_numpy(TOKENS[None, 100:124])
    with torch.no_grad():
        full = model(idx)
        caches, outs, start = None, [], 0
        for n in chunks:
            out, caches = model.forward_step(idx[:, start:start + n], caches)
            outs.append(out)
            start += n
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5, rtol=0)
    assert caches[0] == 24 and isinstance(caches[1], KVCache) and caches[1].length == 24 and caches[-1] is None


def test_positions_stop_at_the_context():
    model = build_gpt(SMALL, seed=0)
    with pytest.raises(UsageError, match="at most 32 positions"):
        model(torch.zeros((1, 33), dtype=torch.int64))
    _, caches = model.forward_step(torch.zeros((1, 30), dtype=torch.int64))
    with pytest.raises(UsageError, match="at most 32"):
        model.forward_step(torch.zeros((1, 3), dtype=torch.int64), caches)


def test_batches_are_seeded_next_token_windows():
    a = list(lm_batches(TOKENS, steps=3, batch_size=4, context=16, seed=7))
    b = list(lm_batches(TOKENS, steps=3, batch_size=4, context=16, seed=7))
    assert all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    x, y = a[0]
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])
    with pytest.raises(UsageError, match="at least context"):
        next(lm_batches(TOKENS[:10], steps=1, batch_size=1, context=16, seed=0))


def test_training_reduces_loss_and_is_deterministic():
    runs = [build_gpt(SMALL, seed=0) for _ in range(2)]
    curves = [train_lm(model, TOKENS, steps=25, seed=3, lr=1e-2) for model in runs]
    assert curves[0] == curves[1] and len(curves[0]) == 25
    assert np.mean(curves[0][-5:]) < 0.8 * np.mean(curves[0][:5])
    for pa, pb in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(pa, pb)
    assert not runs[0].training
    assert train_lm(build_gpt(SMALL, seed=0), TOKENS, steps=3, seed=4, lr=1e-2) != curves[0][:3]


def test_train_lm_needs_a_gpt():
    with pytest.raises(UsageError, match="trains a GPT"):
        train_lm(torch.nn.Linear(2, 2), TOKENS, steps=1, seed=0)
    assert isinstance(build_gpt(SMALL, seed=0), GPT)
