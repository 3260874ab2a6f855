"""BlockStack: a model cut into B blocks equals the unsplit model, loads block by block from one file,
hands blocks between peers, rebuilds generation caches by replay and rejects bad activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshlearn.data import CharVocab, load_corpus
from meshlearn.errors import ProtocolError, StoreError, UsageError
from meshlearn.models import GPTConfig, build_gpt, build_model
from meshlearn.swarm.blocks import BlockCache, BlockStack
from meshlearn.wire import load_tensors, save_tensors

TEXT = load_corpus()
VOCAB = CharVocab.from_text(TEXT)
TOKENS = VOCAB.encode(TEXT)
SMALL = GPTConfig(VOCAB.size, n_blocks=4, d_model=32, n_heads=4, context=32)


@pytest.fixture(scope="module")
def gpt():
    return build_gpt(SMALL, seed=0)


@pytest.fixture(scope="module")
def gpt_file(gpt, tmp_path_factory):
    return BlockStack.from_gpt(gpt).save(tmp_path_factory.mktemp("swarm") / "gpt.safetensors")


def tokens(n: int, t: int, at: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.stack([TOKENS[at + 97 * i : at + 97 * i + t] for i in range(n)]))


def chain(stack: BlockStack, x):
    for i in range(stack.num_blocks):
        x = stack.run(i, x)
    return x


@torch.no_grad()
def test_gpt_blocks_chained_equal_the_unsplit_model_bitwise(tmp_path):
    model = build_gpt(GPTConfig(VOCAB.size), seed=0)  # the reference size: 8 blocks, d_model 64, context 64
    stack = BlockStack.from_gpt(model)
    assert stack.num_blocks == 8 and stack.groups == (2, 1, 1, 1, 1, 1, 1, 2)
    idx = tokens(3, 64)
    assert torch.equal(chain(stack, idx), model(idx))
    loaded = BlockStack.load(stack.save(tmp_path / "gpt.safetensors"))  # fresh layers, weights from the file
    assert torch.equal(chain(loaded, idx), model(idx))


@pytest.mark.parametrize("name, shape, params", [("mlp", (1, 8, 8), {"hidden": [32, 16]}),
                                                 ("cnn", (1, 8, 8), {}), ("cnn", (1, 28, 28), {"channels": [4, 8]})])
@torch.no_grad()
def test_zoo_blocks_chained_equal_the_unsplit_model_bitwise(tmp_path, name, shape, params):
    model = build_model(name, shape, 10, seed=1, **params)
    x = torch.randn((5, *shape), generator=torch.Generator().manual_seed(0))
    for num_blocks in range(1, len(model) + 1):
        stack = BlockStack.from_zoo(model, name, shape, 10, num_blocks=num_blocks, **params)
        assert sum(stack.groups) == len(model) and max(stack.groups) - min(stack.groups) <= 1
        assert torch.equal(chain(stack, x), model(x))
    loaded = BlockStack.load(BlockStack.from_zoo(model, name, shape, 10, num_blocks=3, **params).save(tmp_path / "m"))
    assert torch.equal(chain(loaded, x.numpy()), model(x))  # numpy activations run too


@torch.no_grad()
def test_spans_equal_their_blocks_in_order(gpt):
    stack = BlockStack.from_gpt(gpt)
    idx = tokens(2, 20)
    assert torch.equal(stack.run_span(0, 4, idx), gpt(idx))
    h = stack.run(0, idx)
    assert torch.equal(stack.run_span(1, 3, h), stack.run(2, stack.run(1, h)))


@torch.no_grad()
def test_one_block_loads_alone_from_the_model_file(gpt, gpt_file):
    full = BlockStack.from_gpt(gpt)
    h = full.run_span(0, 2, tokens(2, 16))
    server = BlockStack.load(gpt_file, 2, 3)
    assert server.held == (2,)
    assert torch.equal(server.run(2, h), full.run(2, h))
    assert server.digest(2) == full.digest(2) and server.nbytes(2) == full.nbytes(2) > 0
    with pytest.raises(UsageError, match="block 1 is not held here"):
        server.run(1, h)
    assert BlockStack.load(gpt_file, 1, 3).held == (1, 2)


def test_model_files_are_checked(gpt_file, tmp_path):
    save_tensors(tmp_path / "other.st", {"x": np.ones(2, np.float32)})
    with pytest.raises(UsageError, match="not a swarm model file"):
        BlockStack.load(tmp_path / "other.st")
    tensors, meta = load_tensors(gpt_file)
    tensors["blocks.1.0.fc.weight"] = np.full_like(tensors["blocks.1.0.fc.weight"], np.nan)
    save_tensors(tmp_path / "nan.st", tensors, meta)
    assert BlockStack.load(tmp_path / "nan.st", 2, 4).held == (2, 3)  # only the blocks read are checked
    with pytest.raises(StoreError, match="blocks.1.* NaN|fc.weight holds NaN"):
        BlockStack.load(tmp_path / "nan.st", 1, 2)
    with pytest.raises(UsageError, match="span"):
        BlockStack.load(gpt_file, 3, 3)


@torch.no_grad()
def test_a_block_moves_between_peers_as_numpy(gpt, gpt_file):
    holder = BlockStack.from_gpt(gpt)
    joiner = BlockStack.load(gpt_file, 0, 1)
    joiner.import_block(3, holder.export_block(3))
    assert joiner.held == (0, 3) and joiner.digest(3) == holder.digest(3)
    h = holder.run_span(0, 3, tokens(1, 8))
    assert torch.equal(joiner.run(3, h), holder.run(3, h))
    joiner.drop(3)
    assert joiner.held == (0,)


@pytest.mark.parametrize("spoil, message", [
    (lambda w: w.pop("0.qkv.bias"), "missing 0.qkv.bias"),
    (lambda w: w.update({"0.qkv.bias": np.zeros(3, np.float32)}), "shape"),
    (lambda w: w.update({"0.ln1.weight": w["0.ln1.weight"].astype(np.float64)}), "dtype float64"),
    (lambda w: w["0.fc.weight"].__setitem__((0, 0), np.inf), "NaN or inf"),
    (lambda w: w.update({"extra": np.zeros(1, np.float32)}), "unexpected extra"),
])
def test_bad_block_weights_from_a_peer_are_rejected(gpt, gpt_file, spoil, message):
    weights = BlockStack.from_gpt(gpt).export_block(1)
    spoil(weights)
    joiner = BlockStack.load(gpt_file, 0, 1)
    with pytest.raises(ProtocolError, match=message):
        joiner.import_block(1, weights)
    assert joiner.held == (0,)


@torch.no_grad()
def test_incremental_decoding_through_the_stack_equals_full_recompute(gpt):
    stack = BlockStack.from_gpt(gpt)
    idx = tokens(2, 20)
    caches: list[BlockCache | None] = [None] * stack.num_blocks
    outs = []
    for t in range(idx.shape[1]):
        x = idx[:, t : t + 1]
        for i in range(stack.num_blocks):
            x, caches[i] = stack.step(i, x, caches[i])
        outs.append(x)
    assert torch.allclose(torch.cat(outs, 1), gpt(idx), atol=1e-5, rtol=0)
    assert [c.length for c in caches] == [20] * 4 and caches[0].batch == 2


@torch.no_grad()
def test_a_replacement_server_rebuilds_its_cache_by_replaying_the_history(gpt, gpt_file):
    client = BlockStack.from_gpt(gpt)  # blocks 0 and 3 here; blocks 1..2 on a server that dies
    server = BlockStack.from_gpt(build_gpt(SMALL, seed=0))
    idx = tokens(2, 13)
    caches: list[BlockCache | None] = [None] * 4
    history = []  # what the client sent into block 1, position by position
    for t in range(12):
        x, caches[0] = client.step(0, idx[:, t : t + 1], caches[0])
        history.append(x)
        for i in (1, 2):
            x, caches[i] = server.step(i, x, caches[i])
        x, caches[3] = client.step(3, x, caches[3])
    replacement = BlockStack.load(gpt_file, 1, 3)  # fresh layers from the model file, no cache
    replayed = torch.cat(history, 1)
    for i in (1, 2):
        replayed, caches[i] = replacement.step(i, replayed)
    x, caches[0] = client.step(0, idx[:, 12:13], caches[0])
    for i in (1, 2):
        x, caches[i] = replacement.step(i, x, caches[i])
    logits, _ = client.step(3, x, caches[3])
    assert torch.allclose(logits[:, -1], gpt(idx)[:, -1], atol=1e-5, rtol=0)


def bad_activations():
    h = torch.zeros((2, 5, 32))
    nan, inf = h.clone(), h.clone()
    nan[1, 2, 3], inf[0, 0, 0] = float("nan"), float("inf")
    return [
        (1, torch.zeros((2, 5, 31)), "shape"), (1, torch.zeros((5, 32)), "shape"), (1, torch.zeros((0, 5, 32)), "shape"),
        (1, nan, "NaN or inf"), (1, inf, "NaN or inf"), (1, nan.numpy(), "NaN or inf"),
        (1, h.double(), "dtype float64"), (1, h.half(), "dtype float16"), (1, h.tolist(), "not a tensor"),
        (0, torch.zeros((1, 4)), "dtype float32"), (0, torch.tensor([[1, VOCAB.size]]), "token ids"),
        (0, torch.tensor([[-1, 2]]), "token ids"), (1, torch.zeros((1, 33, 32)), "exceed the context 32"),
        (4, torch.zeros((1, 3, VOCAB.size + 1)), "model output"),
    ]


@pytest.mark.parametrize("boundary, x, message", bad_activations())
def test_bad_activations_are_rejected_as_protocol_errors(gpt, boundary, x, message):
    stack = BlockStack.from_gpt(gpt)
    with pytest.raises(ProtocolError, match=message):
        stack.check(boundary, x)
    if boundary < stack.num_blocks:
        with pytest.raises(ProtocolError):
            stack.run(boundary, x)


@torch.no_grad()
def test_cached_steps_check_the_batch_and_the_context(gpt):
    stack = BlockStack.from_gpt(gpt)
    _, cache = stack.step(1, torch.zeros((2, 30, 32)))
    with pytest.raises(ProtocolError, match="30 cached \\+ 3 new positions exceed the context 32"):
        stack.step(1, torch.zeros((2, 3, 32)), cache)
    with pytest.raises(ProtocolError, match="batch of 1 sequences, the cache holds 2"):
        stack.step(1, torch.zeros((1, 1, 32)), cache)
    with pytest.raises(UsageError, match="belongs to block 1"):
        stack.step(2, torch.zeros((2, 1, 32)), cache)


def test_misuse_raises_usage_errors(gpt):
    model = build_model("mlp", (4,), 3, seed=0)
    with pytest.raises(UsageError, match="num_blocks must be in 1..4"):
        BlockStack.from_zoo(model, "mlp", (4,), 3, num_blocks=5)
    with pytest.raises(UsageError, match="does not match its recipe"):
        BlockStack.from_zoo(model, "mlp", (4,), 3, num_blocks=2, hidden=[8])
    zoo = BlockStack.from_zoo(model, "mlp", (4,), 3, num_blocks=2)
    with pytest.raises(UsageError, match="use run"):
        zoo.step(0, torch.zeros((1, 4)))
    with pytest.raises(UsageError, match="block index"):
        BlockStack.from_gpt(gpt).run(4, torch.zeros((1, 1, 32)))
    with pytest.raises(UsageError, match="from_gpt needs"):
        BlockStack.from_gpt(model)
