"""MWJC: accuracy curves, the UCB object, the exhaustive evaluator and the settings."""

import json

import numpy as np
import pytest
from pydantic import ValidationError

from meshlearn.errors import UsageError
from meshlearn.split.mwjc import (
    PLACEHOLDER_CURVES,
    AccuracyCurve,
    Arm,
    MwjcSettings,
    Ucb,
    evaluate_arms,
    reward_bounds,
    simulate_mwjc,
    variant_rewards,
)
from meshlearn.split.wlan import sample_transfers
from meshlearn.split.wlan import expected_transfer


def test_curve_interpolates_and_rejects_bad_points():
    curve = AccuracyCurve.from_points("c", [(1.0, 0.1), (0.0, 0.9)])
    assert curve(0.5) == pytest.approx(0.5)
    assert curve(np.array([0.0, 1.0])).tolist() == pytest.approx([0.9, 0.1])
    with pytest.raises(UsageError, match="rise strictly"):
        AccuracyCurve.from_points("c", [(0.1, 0.9), (1.0, 0.1)])
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        AccuracyCurve.from_points("c", [(0.0, 1.2), (1.0, 0.1)])


def test_placeholder_curves_have_the_comtune_shape():
    plain, tuned = PLACEHOLDER_CURVES["plain"], PLACEHOLDER_CURVES["comtune_p0.5"]
    assert all(c.placeholder for c in PLACEHOLDER_CURVES.values())
    assert plain(0.0) > tuned(0.0)  # tuning costs a little clean accuracy
    assert plain(0.0) - plain(0.5) > 0.10 and plain(0.0) - tuned(0.5) <= 0.02 + 1e-12  # the COMtune bar


def _toy(means: list[float], noise: float, rounds: int, **kwargs) -> np.ndarray:
    rng, bandit = np.random.default_rng(0), Ucb(len(means), **kwargs)
    chosen = []
    for _ in range(rounds):
        arm = bandit.select(rng)
        bandit.update(arm, means[arm] + noise * rng.standard_normal())
        chosen.append(arm)
    return np.array(chosen)


@pytest.mark.parametrize("kwargs, rate", [({}, 0.9), ({"scale": "std"}, 0.9), ({"discount": 0.999}, 0.8)])
def test_ucb_converges_to_the_best_of_well_separated_arms(kwargs, rate):
    chosen = _toy([0.2, 0.4, 0.9, 0.5, 0.3], noise=0.1, rounds=1000, **kwargs)
    assert sorted(chosen[:5].tolist()) == [0, 1, 2, 3, 4]  # each arm once first
    assert np.mean(chosen[500:] == 2) >= rate  # discounting keeps exploring


def test_ucb_std_scale_follows_the_reward_noise():
    bandit, rng = Ucb(2, scale="std", fallback=1.0), np.random.default_rng(1)
    assert bandit.bonus_scale() == 1.0  # nothing to estimate from yet
    for _ in range(200):
        arm = int(rng.integers(2))
        bandit.update(arm, arm + 0.05 * rng.standard_normal())
    assert bandit.bonus_scale() == pytest.approx(0.05, rel=0.2)


def test_ucb_rejects_bad_parameters():
    for kwargs in ({"exploration": -1}, {"discount": 0}, {"scale": "huge"}, {"scale": 0.0}):
        with pytest.raises(UsageError):
            Ucb(3, **kwargs)


def _small(**kw) -> MwjcSettings:
    base = dict(rates_mbps=[24, 36, 54], retry_limits=[0, 3], variants=["plain", "comtune_p0.7"],
                eval_samples=2000, rounds=400)
    return MwjcSettings(**{**base, **kw})


def test_evaluator_ranks_a_clean_fast_link_with_the_plain_model_first():
    # At 60 dB nothing is lost: reward = clean accuracy - lam * latency, so faster is better, and at
    # equal speed the plain model (0.990 clean) beats the tuned one (0.975).
    s = _small(snr_db=60.0, retry_limits=[0])
    truth = evaluate_arms(s, np.random.default_rng(0))
    order = [truth["arms"][i] for i in np.argsort(-truth["mean"])]
    assert order[:2] == [Arm(54.0, 0, "plain"), Arm(54.0, 0, "comtune_p0.7")]
    assert [a.rate_mbps for a in order[::2]] == [54.0, 36.0, 24.0]
    for k, arm in enumerate(truth["arms"]):
        exact = 0.99 if arm.variant == "plain" else 0.975
        exact -= s.lam_per_s * expected_transfer(s.link(arm), s.tensor_bytes, 60.0).latency_s
        assert truth["mean"][k] == pytest.approx(exact, abs=4 * truth["stderr"][k] + 1e-9)


def test_evaluator_prefers_the_tuned_model_on_a_lossy_fast_link():
    # At 20 dB, 36 Mbit/s loses about half its frames without retries; the tuned model shrugs
    # that off, the plain model does not; with lam = 0 only accuracy counts and 24 Mbit/s is clean.
    truth = evaluate_arms(_small(lam_per_s=0.0, rates_mbps=[36], retry_limits=[0]), np.random.default_rng(0))
    assert truth["arms"][truth["best"]] == Arm(36.0, 0, "comtune_p0.7")
    truth = evaluate_arms(_small(), np.random.default_rng(0))
    assert truth["arms"][truth["best"]] == Arm(36.0, 0, "comtune_p0.7")


def test_simulate_finds_the_best_arm_and_is_deterministic():
    s = _small()
    a, b = simulate_mwjc(s, seed=3), simulate_mwjc(s, seed=3)
    assert a == b
    assert a["arms"] == 12 and a["best_arm"] == "36M/r0/comtune_p0.7"
    assert a["best_pick_rate_last_half"] >= 0.8
    assert sum(a["histogram"].values()) == 400 and a["regret"] >= 0
    assert a["placeholder_curves"] == ["comtune_p0.7", "plain"]


def test_ucb_side_observations_count_rounds_not_observations():
    ucb = Ucb(3)
    ucb.update([0, 2], [0.5, 0.7])
    ucb.update(1, 0.1)
    assert ucb.rounds == 2 and ucb.count.tolist() == [1, 1, 1]
    assert ucb.means.tolist() == pytest.approx([0.5, 0.1, 0.7])


def test_variant_rewards_score_every_curve_on_the_same_transfer():
    s = _small()
    curves = [PLACEHOLDER_CURVES["plain"], PLACEHOLDER_CURVES["comtune_p0.7"]]
    tr = sample_transfers(s.link(Arm(36.0, 0, "plain")), s.tensor_bytes, 20.0, np.random.default_rng(1), 50)
    reward, acc = variant_rewards(s, curves, tr, np.random.default_rng(2))
    assert reward.shape == acc.shape == (2, 50)
    lost = 1.0 - np.asarray(tr.delivered_fraction)
    assert acc[1].tolist() == pytest.approx(PLACEHOLDER_CURVES["comtune_p0.7"](lost).tolist())
    np.testing.assert_allclose(acc - reward, s.lam_per_s * np.broadcast_to(tr.latency_s, (2, 50)))


def test_link_feedback_reveals_every_variant_of_the_played_link():
    arm_fb = simulate_mwjc(_small(feedback="arm"), seed=3)
    link_fb = simulate_mwjc(_small(feedback="link"), seed=3)
    assert link_fb["best_arm"] == arm_fb["best_arm"]
    # 6 links x 2 variants: the variant choice is learned from shared transfers, so less regret
    assert link_fb["regret"] < arm_fb["regret"]
    assert link_fb["best_pick_rate_last_half"] >= 0.8


def test_progress_is_reported_each_round():
    seen = []
    simulate_mwjc(_small(rounds=20), seed=0, progress=lambda t, n: seen.append((t, n)))
    assert seen[0] == (1, 20) and seen[-1] == (20, 20) and len(seen) == 20


def test_range_scaling_maps_rewards_into_unit_interval():
    s = _small(reward_scale="range")
    lo, hi = reward_bounds(s)
    truth = evaluate_arms(s, np.random.default_rng(0))
    assert lo < truth["mean"].min() and truth["mean"].max() < hi


def test_measured_curves_replace_placeholders():
    measured = [(0.0, 0.97), (0.5, 0.96), (1.0, 0.1)]
    s = _small(curves={"comtune_p0.7": measured, "mine": measured}, variants=["comtune_p0.7", "mine"])
    curves = s.curve_map()
    assert not curves["comtune_p0.7"].placeholder and curves["mine"](0.5) == pytest.approx(0.96)


@pytest.mark.parametrize("kwargs", [
    {"bogus": 1},
    {"rates_mbps": [11]},
    {"retry_limits": [16]},
    {"variants": ["nope"]},
    {"curves": {"x": [(0.2, 0.9), (1.0, 0.1)]}},
    {"rates_mbps": [24, 24]},
    {"lam_per_s": -1},
    {"reward_scale": "minmax"},
    {"discount": 0},
    {"feedback": "all"},
])
def test_settings_reject_bad_input(kwargs):
    with pytest.raises(ValidationError):
        MwjcSettings(**kwargs)


def test_every_settings_field_is_described():
    assert all(f.description for f in MwjcSettings.model_fields.values())


def test_load_curves_reads_both_layouts_and_names_bad_files(tmp_path):
    from meshlearn.split.mwjc import load_curves

    pts = [[0.0, 0.9], [1.0, 0.1]]
    (tmp_path / "a.json").write_text(json.dumps({"curves": {"x": pts}, "source": "test"}))
    (tmp_path / "b.json").write_text(json.dumps({"x": pts}))
    assert load_curves(tmp_path / "a.json") == load_curves(tmp_path / "b.json") == {"x": [(0.0, 0.9), (1.0, 0.1)]}
    (tmp_path / "c.json").write_text("[1,")
    with pytest.raises(UsageError, match="not a curves file"):
        load_curves(tmp_path / "c.json")
    with pytest.raises(UsageError, match="does not exist"):
        load_curves(tmp_path / "none.json")
