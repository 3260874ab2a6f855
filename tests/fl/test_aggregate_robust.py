"""Robust aggregation (issue 12): the rules on hand-built updates, their config, the attacks, strangers refused."""

import numpy as np
import pytest

from meshlearn.errors import ConfigError, UsageError
from meshlearn.executors import InlineExecutor
from meshlearn.experiment.fl.build import build_simulation, build_workspace
from meshlearn.experiment.fl.kind import check
from meshlearn.experiment.fl.schema import fl_config
from meshlearn.fl import messages as kinds
from meshlearn.fl.aggregate import (AGGREGATORS, coordinate_median, norm_clip, trim_count, trimmed_mean, update_norm,
                                    weighted_mean)
from meshlearn.fl.attacks import ATTACKS, AttackSettings, MaliciousClient, random_noise, scale, sign_flip
from meshlearn.fl.client import FLClient
from meshlearn.fl.server import FLServer, RoundSettings
from meshlearn.learn import initial_params
from meshlearn.testing import NodeHarness
from meshlearn.wire import Message

CURRENT = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(3, np.float32)}


def params(value: float, b: float | None = None) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 2), value, np.float32), "b": np.full(3, value if b is None else b, np.float32)}


HONEST = [(params(1.0), 10), (params(1.1), 10), (params(0.9), 10), (params(1.05), 10)]
OUTLIER = (params(1e30), 10)  # finite, so check_update lets it through


# ----- the rules on hand-built updates ------------------------------------------------------------
def test_every_rule_is_registered():
    assert AGGREGATORS.names() == ["mean", "median", "norm_clip", "trimmed_mean"]


def test_the_weighted_mean_is_unchanged_and_ignores_the_current_model():
    out = weighted_mean([(params(1.0), 1), (params(5.0), 3)], CURRENT)
    assert np.allclose(out["w"], 4.0) and out["w"].dtype == np.float32
    assert np.allclose(weighted_mean([(params(1.0), 1), (params(5.0), 3)])["b"], 4.0)
    assert weighted_mean(HONEST + [OUTLIER], CURRENT)["w"][0, 0] > 1e28  # what one attacker does to it


def test_the_median_ignores_one_huge_outlier_per_coordinate():
    out = coordinate_median(HONEST + [OUTLIER], CURRENT)
    assert np.allclose(out["w"], 1.05) and np.allclose(out["b"], 1.05)
    mixed = coordinate_median([(params(1.0, b=-1e30), 1), (params(2.0), 1), (params(3.0), 1)], CURRENT)
    assert np.allclose(mixed["w"], 2.0) and np.allclose(mixed["b"], 2.0)  # each coordinate on its own


def test_the_median_ignores_sample_counts_a_liar_reports():
    out = coordinate_median([(params(1.0), 1), (params(1.2), 1), (params(-50.0), 10**9)], CURRENT)
    assert np.allclose(out["w"], 1.0)


def test_the_trimmed_mean_drops_the_extremes_at_each_end():
    updates = HONEST + [OUTLIER]  # five: trim 0.2 drops one lowest and one highest per coordinate
    out = trimmed_mean(updates, CURRENT, trim=0.2)
    assert np.allclose(out["w"], np.mean([1.0, 1.05, 1.1]))
    assert np.allclose(trimmed_mean(HONEST, CURRENT, trim=0.0)["w"], np.mean([1.0, 1.1, 0.9, 1.05]))


def test_trimming_always_keeps_at_least_one_value():
    assert [trim_count(n, 0.2) for n in (1, 4, 5, 20)] == [0, 0, 1, 4]
    assert trim_count(2, 0.49) == 0 and trim_count(3, 0.49) == 1
    assert np.allclose(trimmed_mean([(params(2.0), 1)], CURRENT, trim=0.4)["w"], 2.0)
    with pytest.raises(UsageError, match="trim"):
        trimmed_mean(HONEST, CURRENT, trim=0.5)


def test_norm_clip_bounds_every_delta_by_the_given_norm():
    current = params(1.0)
    far = {k: v + 10.0 for k, v in current.items()}  # a delta of norm 10 · sqrt(7)
    out = norm_clip([(far, 1)], current, clip_norm=2.0)
    assert update_norm(out, current) == pytest.approx(2.0, rel=1e-5)
    near = {k: v + 0.1 for k, v in current.items()}
    assert np.allclose(norm_clip([(near, 1)], current, clip_norm=2.0)["w"], 1.1)  # under the bound: untouched


def test_norm_clip_defaults_to_the_median_norm_so_an_outlier_moves_the_model_like_a_typical_client():
    out = norm_clip(HONEST + [OUTLIER], CURRENT)
    typical = float(np.median([update_norm(p, CURRENT) for p, _ in HONEST + [OUTLIER]]))
    assert update_norm(out, CURRENT) <= typical * (1 + 1e-6)
    assert np.all(np.abs(out["w"]) < 2.0)
    assert np.allclose(norm_clip(HONEST, CURRENT, clip_norm=1e9)["w"], weighted_mean(HONEST)["w"])  # no clip = mean


@pytest.mark.parametrize("rule", ["mean", "median", "trimmed_mean", "norm_clip"])
def test_no_update_is_a_usage_error(rule):
    with pytest.raises(UsageError, match="at least one update"):
        AGGREGATORS.get(rule)([], CURRENT)


# ----- config -----------------------------------------------------------------------------------------
def test_an_unknown_aggregator_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        fl_config({"fl": {"aggregator": "krum"}})
    assert err.value.key == "fl.aggregator"
    assert "valid: mean, median, norm_clip, trimmed_mean" in str(err.value)


@pytest.mark.parametrize("fl,key", [({"trim": 0.3}, "fl.trim"),
                                    ({"aggregator": "median", "clip_norm": 1.0}, "fl.clip_norm"),
                                    ({"aggregator": "trimmed_mean", "trim": 0.5}, "fl.trim"),
                                    ({"aggregator": "norm_clip", "clip_norm": 0}, "fl.clip_norm")])
def test_rule_options_are_validated_and_only_set_for_the_rule_that_reads_them(fl, key):
    with pytest.raises(ConfigError) as err:
        fl_config({"fl": fl})
    assert err.value.key == key


def test_the_configured_rule_gets_its_options():
    assert RoundSettings().aggregation().func is weighted_mean
    bound = RoundSettings(aggregator="trimmed_mean", trim=0.3).aggregation()
    assert bound.func is trimmed_mean and bound.keywords == {"trim": 0.3}
    assert RoundSettings(aggregator="norm_clip").aggregation().keywords == {"clip_norm": None}
    assert all(f.description for f in RoundSettings.model_fields.values())
    assert all(f.description for f in AttackSettings.model_fields.values())


@pytest.mark.parametrize("data,key", [
    ({"fl": {"algorithm": "fd", "aggregator": "median"}}, "fl.aggregator"),
    ({"fl": {"algorithm": "fd"}, "attack": {"clients": ["client-00"]}}, "attack"),
    ({"fl": {"algorithm": "gossip"}, "attack": {"kind": "random"}}, "attack"),
    ({"fl": {"algorithm": "fedavg"}, "attack": {"clients": ["client-99"]}}, "attack.clients"),
])
def test_robustness_keys_are_checked_against_the_algorithm_and_the_run(data, key):
    with pytest.raises(ConfigError) as err:
        check(fl_config({"data": {"clients": 6}, **data}))
    assert err.value.key == key


def test_an_unknown_attack_is_a_config_error_and_a_valid_attack_passes_the_checks():
    with pytest.raises(ConfigError, match="valid: random, scale, sign_flip"):
        fl_config({"attack": {"kind": "flood"}})
    check(fl_config({"fl": {"algorithm": "fedprox", "aggregator": "median"}, "attack": {"clients": ["client-01"]}}))


# ----- attacks ------------------------------------------------------------------------------------------
def test_attacks_are_pure_finite_float32_functions_of_the_honest_update():
    rng = np.random.default_rng(0)
    trained = params(0.5)
    assert np.allclose(scale(CURRENT, trained, rng, strength=10)["w"], 5.0)
    assert np.allclose(sign_flip(CURRENT, trained, rng, strength=2)["w"], -1.0)
    huge = scale(CURRENT, {k: v + 1e20 for k, v in CURRENT.items()}, rng, strength=1e30)
    assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in huge.values())
    assert ATTACKS.names() == ["random", "scale", "sign_flip"]


def test_random_noise_has_the_update_scale_times_the_strength():
    rng = np.random.default_rng(1)
    current = {"w": np.zeros((200, 50), np.float32)}
    trained = {"w": rng.normal(0, 0.01, (200, 50)).astype(np.float32)}
    out = random_noise(current, trained, rng, strength=3)
    assert out["w"].std() == pytest.approx(0.03, rel=0.05)


def test_attack_settings_make_only_the_listed_clients_malicious():
    settings = AttackSettings(clients=["c1"], kind="sign_flip", strength=2.0)
    evil, honest = settings.client("c1", "server"), settings.client("c2", "server")
    assert isinstance(evil, MaliciousClient) and type(honest) is FLClient
    assert np.allclose(evil.attack(CURRENT, params(1.0), None)["w"], -2.0)


# ----- strangers ----------------------------------------------------------------------------------------
def echo_update(src, msg):
    """An honest client stub: answers each round with the model it got."""
    if msg.kind == kinds.TRAIN:
        return Message(kinds.UPDATE, {"round": msg.meta["round"], "num_samples": 10}, msg.tensors)
    return None


def stranger_run(cfg, clients):
    """The server with three honest stubs; 30 made-up ids join first (and one sends an update)."""
    ws = build_workspace(cfg)
    ids, strangers = ["client-00", "client-01", "client-02"], [f"evil-{i:02d}" for i in range(30)]
    server = FLServer("server", initial_params(ws), cfg.fl, min_clients=3, clients=clients(ids))
    h = NodeHarness(server, peers={**dict.fromkeys(ids, echo_update), **dict.fromkeys(strangers)},
                    executor=InlineExecutor(ws))
    for s in strangers:
        h.deliver(s, Message(kinds.JOIN, {}))
    h.deliver(strangers[0], Message(kinds.UPDATE, {"round": 1, "num_samples": 5}, server.params))
    for c in ids:
        h.deliver(c, Message(kinds.JOIN, {}))
    h.advance(100.0)
    return h, server


def test_thirty_made_up_ids_are_refused_and_rounds_still_succeed(small_cfg):
    cfg = small_cfg(fl__round_deadline_s=5.0)
    h, server = stranger_run(cfg, lambda ids: ids)
    assert server.completed_round == 3 and h.metrics("round_ok") == [1.0, 1.0, 1.0]
    assert server.roster == {"client-00", "client-01", "client-02"}
    assert h.peer_errors == 31 and server.strangers == 31
    assert any("not a client of this deployment" in line for line in h.logs("server"))
    # without the deployment's ids (the old behaviour) the strangers are selected and the rounds fail
    h, server = stranger_run(cfg, lambda ids: None)
    assert h.metrics("round_ok") == [0.0, 0.0, 0.0] and len(server.roster) == 33 and h.peer_errors == 0


def test_the_fedavg_server_knows_the_deployment_ids(small_cfg):
    s = build_simulation(small_cfg())
    assert s.server.clients == {f"client-0{i}" for i in range(6)}


# ----- end to end -------------------------------------------------------------------------------------
def attacked(small_cfg, rule):
    cfg = small_cfg(data={"clients": 8, "partition": "iid"}, fl={"rounds": 3, "epochs": 1, "aggregator": rule},
                    network={"devices": "uniform"}, runtime={"executor": "vectorized", "checkpoint": False},
                    attack={"clients": ["client-03"], "kind": "scale", "strength": 1e30})
    s = build_simulation(cfg)
    s.sim.run()
    return s.sim.sink.series("accuracy")[-1]


def test_one_1e30_attacker_wrecks_the_mean_but_not_the_robust_rules(small_cfg):
    assert attacked(small_cfg, "mean") < 0.2
    for rule in ("median", "trimmed_mean", "norm_clip"):
        assert attacked(small_cfg, rule) > 0.7, rule
