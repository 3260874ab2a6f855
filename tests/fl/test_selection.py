"""Selectors with hand-built inputs: random, the FedCS deadline greedy, MAB/UCB, Oort; time-to-accuracy."""

import math

import numpy as np
import pytest

from pydantic import ValidationError

from meshlearn.errors import RegistryError, UsageError
from meshlearn.fl.metrics import round_rows, time_to_accuracy
from meshlearn.fl.selection import (
    SELECTORS,
    ClientFeedback,
    CostModel,
    FedCSSelector,
    FedCSSettings,
    MABSelector,
    MABSettings,
    OortSelector,
    OortSettings,
    RandomSelector,
    _Arm,
    clean_telemetry,
    deadline_greedy,
    make_selector,
)

NAMES = [f"c{i}" for i in range(10)]
COST = CostModel(model_bits=8e5, train_flops_per_sample=1e6)  # 100 kB model, 1 MFLOP per sample


def rng(seed=0):
    return np.random.default_rng(seed)


def report(speed: float, n: int = 10) -> dict:
    """A client whose download, training and upload each take 1/speed seconds."""
    return {"flops": 1e7 * speed, "up_bps": 8e5 * speed, "down_bps": 8e5 * speed, "num_samples": n}


# ----- registry, telemetry, random ------------------------------------------------------------

def test_registry_has_the_four_builtins_and_rejects_unknown_names():
    assert {"random", "fedcs", "mab", "oort"} <= set(SELECTORS.names())
    assert isinstance(make_selector("random", deadline_s=1.0), RandomSelector)
    with pytest.raises(RegistryError, match="valid: .*fedcs"):
        make_selector("nope", deadline_s=1.0)


@pytest.mark.parametrize("n, k, seed", [(6, 6, 0), (20, 7, 1), (200, 20, 2), (5, 9, 3)])
def test_random_makes_exactly_the_draws_the_server_always_made(n, k, seed):
    roster = sorted(f"client-{i:03d}" for i in range(n))
    old_rng, new_rng = rng(seed), rng(seed)
    picked = old_rng.choice(len(roster), size=min(k, len(roster)), replace=False)
    assert RandomSelector().select(roster, k, 0.0, new_rng) == [roster[i] for i in sorted(picked)]
    assert old_rng.integers(2**31) == new_rng.integers(2**31)  # generator left in the same state


def test_telemetry_keeps_only_positive_finite_numbers_of_known_keys():
    info = {"flops": 1e9, "up_bps": "fast", "down_bps": -1, "num_samples": True, "colour": 3, }
    assert clean_telemetry(info) == {"flops": 1e9}
    assert clean_telemetry({"up_bps": math.inf, "down_bps": math.nan}) == {}


def test_cost_model_estimates_download_train_and_upload():
    ready, up = COST.times(report(1.0))
    assert ready == pytest.approx(1.0 + 1.0) and up == pytest.approx(1.0)
    assert CostModel(8e5, 1e6, overhead_s=0.5).times(report(2.0)) == pytest.approx((1.5, 0.5))
    assert COST.times({"flops": 1e9}) is None


# ----- the deadline greedy and FedCS -------------------------------------------------------

def test_greedy_parallel_takes_the_fastest_that_fit_up_to_k():
    est = [("a", 4.0, 2.0), ("b", 1.0, 1.0), ("c", 2.0, 1.0), ("d", 9.0, 1.0)]
    assert deadline_greedy(est, k=10, deadline_s=6.0) == ["b", "c", "a"]
    assert deadline_greedy(est, k=2, deadline_s=6.0) == ["b", "c"]
    assert deadline_greedy(est, k=10, deadline_s=0.5) == ["b"]  # nothing fits: the fastest alone


def test_greedy_sequential_accounts_for_the_shared_uplink():
    est = [("a", 1.0, 5.0), ("b", 1.0, 1.0), ("c", 4.0, 1.0)]
    # b alone ends at 2; adding c ends at max(2, 4) + 1 = 5; adding a too would end at 8 > 6.5
    assert deadline_greedy(est, k=3, deadline_s=6.5, uploads="sequential") == ["b", "c"]
    assert deadline_greedy(est, k=3, deadline_s=6.5, uploads="parallel") == ["b", "c", "a"]
    assert deadline_greedy(est, k=3, deadline_s=0.1, uploads="sequential") == ["b"]


def test_fedcs_picks_the_fastest_reported_clients_within_the_deadline():
    sel = FedCSSelector(FedCSSettings(request_fraction=1.0), deadline_s=5.0, cost=COST)
    speeds = [0.5, 2.0, 1.0, 4.0, 0.2, 3.0, 1.5, 0.8, 0.3, 0.1]  # round time = 3 / speed
    for name, speed in zip(NAMES, speeds):
        sel.telemetry(name, report(speed))
    assert sel.select(NAMES, 3, 0.0, rng()) == ["c1", "c3", "c5"]
    assert sel.select(NAMES, 10, 0.0, rng()) == ["c1", "c2", "c3", "c5", "c6", "c7"]  # 3/speed <= 5


def test_fedcs_ignores_unreported_clients_and_falls_back_to_random_without_reports():
    sel = FedCSSelector(FedCSSettings(request_fraction=1.0), deadline_s=100.0, cost=COST)
    sel.telemetry("c4", report(1.0))
    sel.telemetry("c7", {"flops": "garbage"})
    assert sel.select(NAMES, 5, 0.0, rng()) == ["c4"]
    assert FedCSSelector(FedCSSettings(request_fraction=1.0), deadline_s=1.0, cost=COST).select(NAMES, 3, 0.0, rng(5)) == \
        RandomSelector().select(NAMES, 3, 0.0, rng(5))


def test_fedcs_request_fraction_asks_a_random_subset_each_round():
    sel = FedCSSelector(FedCSSettings(request_fraction=0.3), deadline_s=100.0, cost=COST)
    for i, name in enumerate(NAMES):
        sel.telemetry(name, report(1.0 + i))
    gen = rng(1)
    rounds = [sel.select(NAMES, 2, 0.0, gen) for _ in range(20)]
    assert all(len(r) == 2 for r in rounds) and len({tuple(r) for r in rounds}) > 3
    few = FedCSSelector(FedCSSettings(request_fraction=0.1), deadline_s=100.0, cost=COST)  # asks 1 of 10, but at least k
    few.reports = sel.reports
    assert len(few.select(NAMES, 4, 0.0, rng(2))) == 4
    with pytest.raises(ValidationError):
        FedCSSettings(request_fraction=0.0)
    with pytest.raises(UsageError, match="cost"):
        FedCSSelector(deadline_s=1.0)


# ----- MAB -------------------------------------------------------------------------------------

def test_mab_tries_unobserved_clients_first_then_prefers_fast_ones():
    sel = MABSelector(MABSettings(exploration=0.1, discount=1.0), deadline_s=10.0)
    fast = {"c0", "c1", "c9"}
    first = sel.select(NAMES, 5, 0.0, rng())
    sel.feedback(1, {c: ClientFeedback(1.0 if c in fast else 8.0, 5) for c in first})
    second = sel.select(NAMES, 5, 0.0, rng())
    assert set(second).isdisjoint(first)  # the never-observed go first
    sel.feedback(2, {c: ClientFeedback(1.0 if c in fast else 8.0, 5) for c in second})
    assert set(sel.select(NAMES, 3, 0.0, rng())) == fast


def test_mab_estimate_is_a_lower_confidence_bound_and_misses_cost_miss_factor():
    sel = MABSelector(MABSettings(exploration=0.5, discount=1.0, miss_factor=2.0), deadline_s=10.0)
    sel.feedback(1, {"a": ClientFeedback(4.0), "b": ClientFeedback(None)})
    sel.feedback(2, {"a": ClientFeedback(6.0)})
    big_n = 3.0
    assert sel.estimate("a") == pytest.approx((0.5 - 0.5 * math.sqrt(math.log(big_n) / 2)) * 10)
    assert sel.estimate("b") == pytest.approx((2.0 - 0.5 * math.sqrt(math.log(big_n) / 1)) * 10)
    assert sel.estimate("never") == -math.inf


def test_mab_discount_brings_back_a_client_left_out_for_long():
    sel = MABSelector(MABSettings(exploration=0.5, discount=0.8), deadline_s=10.0)
    sel.feedback(1, {"slow": ClientFeedback(6.0), "fast": ClientFeedback(2.0)})
    picks = []
    for r in range(2, 30):
        chosen = sel.select(["fast", "slow"], 1, 0.0, rng(r))
        picks.append(chosen[0])
        sel.feedback(r, {chosen[0]: ClientFeedback(2.0 if chosen == ["fast"] else 6.0)})
    assert picks[0] == "fast" and "slow" in picks  # exploited first, explored again later
    assert picks.count("fast") > picks.count("slow")


def test_mab_drops_clients_estimated_past_the_deadline():
    sel = MABSelector(MABSettings(exploration=0.0, discount=1.0), deadline_s=10.0)
    sel.feedback(1, {"a": ClientFeedback(3.0), "b": ClientFeedback(None), "c": ClientFeedback(12.0)})
    assert sel.select(["a", "b", "c"], 3, 0.0, rng()) == ["a"]


def test_mab_throughput_ranks_fitting_clients_by_samples_per_optimistic_second():
    sel = MABSelector(MABSettings(exploration=0.0, discount=1.0), deadline_s=10.0)
    sel.telemetry("big", {"num_samples": 40})
    sel.telemetry("small", {"num_samples": 5})
    sel.feedback(1, {"big": ClientFeedback(4.0, 40), "small": ClientFeedback(1.0, 5), "mid": ClientFeedback(2.0, 12),
                     "huge": ClientFeedback(12.0, 500)})
    # 40/4 = 10 > 12/2 = 6 > 5/1 = 5 samples per second; "huge" is past the deadline
    assert sel.select(["big", "huge", "mid", "small"], 2, 0.0, rng()) == ["big", "mid"]
    fastest = MABSelector(MABSettings(exploration=0.0, discount=1.0, objective="time"), deadline_s=10.0)
    fastest.feedback(1, {"big": ClientFeedback(4.0, 40), "small": ClientFeedback(1.0, 5), "mid": ClientFeedback(2.0, 12)})
    assert fastest.select(["big", "mid", "small"], 2, 0.0, rng()) == ["mid", "small"]
    with pytest.raises(ValidationError):
        MABSettings(objective="loss")
    with pytest.raises(UsageError, match="deadline"):
        MABSelector(deadline_s=0.0)


def test_mab_throughput_fills_with_observed_clients_after_the_unobserved():
    sel = MABSelector(MABSettings(exploration=0.0, discount=1.0), deadline_s=10.0)
    sel.feedback(1, {"a": ClientFeedback(2.0, 10), "b": ClientFeedback(2.0, 30)})
    assert sel.select(["a", "b", "new"], 2, 0.0, rng()) == ["b", "new"]


# ----- Oort ------------------------------------------------------------------------------------

def oort(**kw) -> OortSelector:
    return OortSelector(OortSettings(**kw), deadline_s=10.0, cost=COST)


def test_oort_utility_is_batch_size_times_root_mean_squared_loss():
    assert OortSelector.utility(ClientFeedback(1.0, 16, loss=0.5, sq_loss=0.36), 0.0) == pytest.approx(16 * 0.6)
    assert OortSelector.utility(ClientFeedback(1.0, 16, loss=0.5), 0.0) == pytest.approx(16 * 0.5)
    assert OortSelector.utility(ClientFeedback(1.0, 16, loss=math.nan), 7.0) == 7.0


def test_oort_scores_normalise_rewards_add_staleness_and_penalise_slow_clients():
    sel = oort(clip=1.0)
    sel.round = 10
    for name, reward, duration, last in (("a", 10.0, 2.0, 9), ("b", 20.0, 2.0, 3), ("c", 30.0, 8.0, 9)):
        sel.arms[name] = _Arm(reward, duration, last, 1)
    scores = sel.scores(["a", "b", "c"], pref=4.0)
    low = 10.0 * 0.999
    span = 30.0 - low
    stale = lambda last: math.sqrt(0.1 * math.log(10) / last)  # noqa: E731
    assert scores["a"] == pytest.approx((10 - low) / span + stale(9))
    assert scores["b"] == pytest.approx((20 - low) / span + stale(3))
    assert scores["c"] == pytest.approx(((30 - low) / span + stale(9)) * (4.0 / 8.0) ** 2)


def test_oort_clips_rewards_at_the_quantile():
    sel = oort(clip=0.5)
    sel.round = 2
    for i, reward in enumerate([1.0, 2.0, 3.0, 100.0]):
        sel.arms[f"c{i}"] = _Arm(reward, 1.0, 1, 1)
    scores = sel.scores([f"c{i}" for i in range(4)], pref=math.inf)
    assert scores["c2"] == pytest.approx(scores["c3"])  # 100 clipped to the 50% quantile (3.0)


def test_oort_explores_by_data_size_first_and_stops_exploring_when_all_are_seen():
    sel = oort()
    for name in NAMES:
        sel.telemetry(name, report(1.0))
    counts = {n: 0 for n in NAMES}
    for seed in range(40):
        fresh = OortSelector(deadline_s=10.0)  # no cost model: no speed penalty, data size decides
        fresh.telemetry("c3", report(1.0, n=500))
        for name in NAMES:
            if name != "c3":
                fresh.telemetry(name, report(1.0, n=1))
        for c in fresh.select(NAMES, 1, 0.0, rng(seed)):
            counts[c] += 1
    assert counts["c3"] > 30  # ∝ data size among the top sample_window × n
    for r in range(1, 5):
        chosen = sel.select(NAMES, 3, 0.0, rng(r))
        assert len(chosen) == 3 and len(set(chosen)) == 3
        sel.feedback(r, {c: ClientFeedback(1.0, 10, loss=1.0) for c in chosen})
    while any(a.count == 0 for a in sel.arms.values()):
        chosen = sel.select(NAMES, 3, 0.0, rng(9))
        sel.feedback(sel.round, {c: ClientFeedback(1.0, 10, loss=1.0) for c in chosen})
    sel.select(NAMES, 3, 0.0, rng(10))
    assert sel.epsilon == 0.0


def test_oort_epsilon_decays_to_its_floor_while_clients_remain_unexplored():
    sel = oort()
    many = [f"c{i}" for i in range(500)]
    for r in range(1, 60):
        sel.select(many, 2, 0.0, rng(r))
    assert sel.epsilon == pytest.approx(0.2)
    assert oort().epsilon == 0.9


def test_oort_exploits_high_utility_fast_clients():
    sel = oort(epsilon=0.0, epsilon_min=0.0)
    good = {"c0", "c1", "c2", "c3", "c4"}  # T = 30th percentile of durations = 1 s: the rest are penalised
    sel.feedback(1, {c: ClientFeedback(1.0 if c in good else 9.0, 10, loss=2.0 if c in good else 0.1)
                     for c in NAMES})
    picks = [c for seed in range(20) for c in sel.select(NAMES, 3, 0.0, rng(seed))]
    assert set(picks) == good


def test_oort_missed_deadline_counts_as_slow():
    sel = oort()
    sel.feedback(1, {"a": ClientFeedback(None), "b": ClientFeedback(3.0, 5, loss=1.0)})
    assert sel.arms["a"].duration == 20.0 and sel.arms["a"].reward == 0.0 and sel.arms["a"].count == 1
    assert sel.arms["b"].reward == pytest.approx(5.0)


def test_oort_pacer_relaxes_the_preferred_duration_when_utility_is_flat():
    sel = oort(pacer_step=2, pacer_delta=5.0, percentile=30.0)
    for name in NAMES:
        sel.telemetry(name, report(1.0))
    for r in range(1, 9):
        chosen = sel.select(NAMES, 4, 0.0, rng(r))
        sel.feedback(r, {c: ClientFeedback(1.0, 10, loss=1.0) for c in chosen})
    assert sel.percentile > 30.0


def test_oort_is_deterministic_for_a_seed():
    def run(seed):
        sel, out, gen = oort(), [], rng(seed)
        for r in range(1, 15):
            chosen = sel.select(NAMES, 3, 0.0, gen)
            out.append(chosen)
            sel.feedback(r, {c: ClientFeedback(1.0 + NAMES.index(c), 10, loss=1.0 / r) for c in chosen})
        return out
    assert run(3) == run(3) and run(3) != run(4)


# ----- time to accuracy ------------------------------------------------------------------------

def test_time_to_accuracy_is_the_virtual_time_of_the_first_round_at_target():
    rows = [{"round": 2, "accuracy": 0.8, "virtual_time": 20.0}, {"round": 1, "accuracy": 0.5, "virtual_time": 9.0},
            {"round": 3, "accuracy": 0.79, "virtual_time": 31.0}, {"round": 4, "accuracy": math.nan,
                                                                   "virtual_time": 40.0}]
    assert time_to_accuracy(rows, 0.8) == 20.0
    assert time_to_accuracy(rows, 0.5) == 9.0
    assert time_to_accuracy(rows, 0.9) is None
    assert time_to_accuracy([], 0.1) is None


def test_round_rows_from_memory_sink_rows():
    sink = [{"key": "accuracy", "value": 0.5, "round": 1, "node": None},
            {"key": "virtual_time", "value": 3.0, "round": 1, "node": None},
            {"key": "accuracy", "value": 0.9, "round": 1, "node": "client-1"},
            {"key": "accuracy", "value": 0.7, "round": 2, "node": None}]
    assert round_rows(sink) == [{"round": 1, "accuracy": 0.5, "virtual_time": 3.0}, {"round": 2, "accuracy": 0.7}]
