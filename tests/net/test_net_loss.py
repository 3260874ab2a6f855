"""Loss models: measured statistics match the configured ones, state carries across calls."""

import time

import numpy as np
import pytest

from meshlearn.errors import ConfigError, DataError, UsageError
from meshlearn.net.loss import (
    LOSS_MODELS,
    BernoulliLoss,
    GilbertElliott,
    NoLoss,
    TraceLoss,
    make_loss_model,
)

N = 10**6


def loss_runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the maximal runs of True in ``mask``."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)


def assert_close(measured: float, expected: float, rel: float = 0.05) -> None:
    assert abs(measured - expected) <= rel * expected, (measured, expected)


@pytest.mark.parametrize(
    "model, loss, burst",
    [
        (GilbertElliott.from_mean(0.05, 4), 0.05, 4.0),
        (GilbertElliott(p=0.02, r=0.1), 0.02 / 0.12, 10.0),
        (GilbertElliott.from_mean(0.3, 1.5), 0.3, 1.5),
    ],
)
def test_gilbert_loss_rate_and_burst_length_over_a_million_packets(model, loss, burst):
    mask = model.sample(N, np.random.default_rng(7))
    assert mask.dtype == bool and mask.shape == (N,)
    assert_close(mask.mean(), loss)
    assert_close(loss_runs(mask).mean(), burst)
    assert model.mean_loss == pytest.approx(loss)


def test_from_mean_parameterisation_matches_dfts():
    ge = GilbertElliott.from_mean(0.05, 4)
    assert ge.r == pytest.approx(0.25)
    assert ge.p == pytest.approx(0.05 * 0.25 / 0.95)
    assert (ge.h, ge.k) == (0.0, 1.0)


def test_general_gilbert_elliott_with_h_and_k_matches_mean_loss():
    ge = GilbertElliott(p=0.01, r=0.2, h=0.3, k=0.98)
    expected = (0.01 / 0.21) * 0.7 + (0.2 / 0.21) * 0.02
    assert ge.mean_loss == pytest.approx(expected)
    assert_close(ge.sample(N, np.random.default_rng(3)).mean(), expected)


@pytest.mark.parametrize("chunk", [1000, 20])  # 20: the packet-by-packet path for short calls
def test_statistics_unchanged_when_sampled_in_chunks(chunk):
    model, rng = GilbertElliott.from_mean(0.05, 4), np.random.default_rng(11)
    mask = np.concatenate([model.sample(chunk, rng) for _ in range(N // chunk)])
    assert mask.shape == (N,)
    assert_close(mask.mean(), 0.05)
    assert_close(loss_runs(mask).mean(), 4.0)


def test_burst_continues_into_next_call():
    # One packet per call: a stateless model would restart from the stationary draw each call,
    # giving mean runs of ~2 packets; the Markov chain gives runs of 1/r = 100.
    model, rng = GilbertElliott(p=0.01, r=0.01), np.random.default_rng(5)
    mask = np.concatenate([model.sample(1, rng) for _ in range(20_000)])
    assert loss_runs(mask).mean() > 50


def test_reset_restarts_from_stationary_distribution():
    model = GilbertElliott(p=1e-9, r=1e-9)  # state almost never changes once chosen
    firsts = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        model.reset()
        firsts.append(bool(model.sample(10, rng)[0]))
    assert 60 < sum(firsts) < 140  # stationary is 50/50


def test_zero_packets_and_zero_loss():
    ge = GilbertElliott.from_mean(0.0, 3)
    assert ge.sample(0, np.random.default_rng(0)).shape == (0,)
    assert not ge.sample(10_000, np.random.default_rng(0)).any()


def test_gilbert_mask_of_a_million_packets_is_vectorized():
    model, rng = GilbertElliott.from_mean(0.05, 4), np.random.default_rng(0)
    start = time.perf_counter()
    model.sample(N, rng)
    assert time.perf_counter() - start < 0.25  # a per-packet Python loop takes ~1 s


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: GilbertElliott(p=1.5, r=0.1), "p (good→bad)"),
        (lambda: GilbertElliott(p=0.1, r=-0.1), "r (bad→good)"),
        (lambda: GilbertElliott(p=0.0, r=0.0), "never moves"),
        (lambda: GilbertElliott.from_mean(1.0, 4), "[0, 1)"),
        (lambda: GilbertElliott.from_mean(0.1, 0.5), "burst"),
        (lambda: BernoulliLoss(2.0), "probability"),
        (lambda: TraceLoss([]), "non-empty"),
        (lambda: TraceLoss([0, 2]), "0/1"),
    ],
)
def test_invalid_parameters_raise_usage_error(build, fragment):
    with pytest.raises(UsageError) as info:
        build()
    assert fragment in str(info.value)


def test_bernoulli_rate_and_no_loss():
    mask = BernoulliLoss(0.1).sample(N, np.random.default_rng(1))
    assert_close(mask.mean(), 0.1)
    assert_close(loss_runs(mask).mean(), 1 / 0.9)  # i.i.d.: geometric runs
    assert not NoLoss().sample(1000, np.random.default_rng(1)).any()
    assert NoLoss().mean_loss == 0.0


def test_trace_replays_cyclically_across_calls():
    trace, rng = TraceLoss([0, 1, 1]), np.random.default_rng(0)
    got = np.concatenate([trace.sample(2, rng), trace.sample(5, rng)])
    assert got.tolist() == [False, True, True, False, True, True, False]
    trace.reset()
    assert trace.sample(1, rng).tolist() == [False]
    assert trace.mean_loss == pytest.approx(2 / 3)


def test_trace_from_file(tmp_path):
    path = tmp_path / "trace.txt"
    path.write_text("# recorded on a bad day\n0 1 1\n0,0  # tail\n1\n")
    assert TraceLoss.from_file(path).pattern.tolist() == [False, True, True, False, False, True]
    assert make_loss_model({"model": "trace", "path": str(path)}).mean_loss == pytest.approx(0.5)
    (tmp_path / "bad.txt").write_text("0 1 x")
    with pytest.raises(DataError, match="bad.txt"):
        TraceLoss.from_file(tmp_path / "bad.txt")
    with pytest.raises(DataError, match="missing.txt"):
        TraceLoss.from_file(tmp_path / "missing.txt")


def test_make_loss_model_from_specs():
    assert isinstance(make_loss_model(None), NoLoss)
    ge = make_loss_model({"model": "gilbert_elliott", "loss": 0.05, "burst": 4})
    assert isinstance(ge, GilbertElliott) and ge.r == pytest.approx(0.25)
    ge2 = make_loss_model({"model": "gilbert_elliott", "p": 0.1, "r": 0.3, "h": 0.1})
    assert (ge2.p, ge2.r, ge2.h, ge2.k) == (0.1, 0.3, 0.1, 1.0)
    assert make_loss_model({"model": "bernoulli", "p": 0.1}).mean_loss == 0.1
    assert make_loss_model({"model": "trace", "pattern": [1, 0]}).mean_loss == 0.5
    assert set(LOSS_MODELS.names()) >= {"none", "bernoulli", "gilbert_elliott", "trace"}


@pytest.mark.parametrize(
    "spec, key",
    [
        ({"model": "nope"}, "model"),
        ({"p": 0.1}, "model"),
        ({"model": "bernoulli", "q": 0.1}, "q"),
        ({"model": "bernoulli"}, "p"),
        ({"model": "gilbert_elliott", "loss": 0.1, "burst": 3, "p": 0.2}, "p"),
    ],
)
def test_bad_specs_raise_config_error_with_choices(spec, key):
    with pytest.raises(ConfigError) as info:
        make_loss_model(spec)
    assert info.value.key == key
    assert info.value.choices


@pytest.mark.parametrize(
    "spec, key",
    [
        ({"model": "bernoulli", "p": 1.5}, "p"),
        ({"model": "bernoulli", "p": [1]}, "p"),
        ({"model": "bernoulli", "p": True}, "p"),
        ({"model": "bernoulli", "p": "0.1"}, "p"),
        ({"model": "gilbert_elliott", "p": 0.1, "r": 2}, "r"),
        ({"model": "gilbert_elliott", "p": 0.1, "r": 0.2, "k": "x"}, "k"),
        ({"model": "gilbert_elliott", "loss": 0.1, "burst": "x"}, "burst"),
        ({"model": "gilbert_elliott", "loss": None, "burst": 2}, "loss"),
        ({"model": "gilbert_elliott", "loss": 0.1, "burst": float("inf")}, "burst"),
        ({"model": "trace", "pattern": [[0], [0, 1]]}, "pattern"),
        ({"model": "trace", "path": 3}, "path"),
        ({"model": "trace", "path": "no-such-trace.txt"}, "path"),
        ({"model": ["bernoulli"]}, "model"),
    ],
)
def test_every_bad_value_is_a_config_error_keyed_on_its_parameter(spec, key):
    """Config validation only turns ValueErrors into messages: no TypeError or DataError may escape."""
    with pytest.raises(ConfigError) as info:
        make_loss_model(spec)
    assert info.value.key == key
