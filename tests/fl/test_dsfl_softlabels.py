"""Soft-label aggregation (SA, ERA) and wire encodings, with hand-built inputs; DS-FL/FD settings."""

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from meshlearn.config import validate_config
from meshlearn.errors import ConfigError, ProtocolError, RegistryError, UsageError
from meshlearn.fl.dsfl import DSFLSettings
from meshlearn.fl.fd import FDSettings
from meshlearn.fl.softlabels import (SOFT_AGGREGATORS, check_soft_labels, decode_soft, encode_soft, entropy, era,
                                     sa, soft_bytes)


def non_iid_votes(rng, clients=20, n=300, classes=10, per_client=2):
    """What DS-FL clients upload under a 2-class split: a client holding a sample's class predicts it
    confidently; every other client confidently predicts one of its own classes."""
    y, out = rng.integers(0, classes, n), []
    for k in range(clients):
        own = np.array([(per_client * k + j) % classes for j in range(per_client)])
        pick = np.where(np.isin(y, own), y, own[rng.integers(0, per_client, n)])
        logits = rng.normal(0, 1, (n, classes))
        logits[np.arange(n), pick] += rng.uniform(3, 8, n)
        p = np.exp(logits - logits.max(1, keepdims=True))
        out.append((p / p.sum(1, keepdims=True)).astype(np.float32))
    return out


def test_sa_is_the_exact_mean_on_hand_inputs():
    a = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], np.float32)
    b = np.array([[0.0, 1.0, 0.0], [0.1, 0.1, 0.8]], np.float32)
    assert np.array_equal(sa([a, b]), np.array([[0.5, 0.5, 0.0], [0.3, 0.3, 0.4]], np.float32))
    assert sa([a]).dtype == np.float32 and np.array_equal(sa([a]), a)


def test_era_is_softmax_of_the_mean_over_temperature():
    a = np.array([[0.6, 0.3, 0.1]], np.float32)
    b = np.array([[0.2, 0.5, 0.3]], np.float32)
    z = np.array([0.4, 0.4, 0.2]) / 0.1
    want = np.exp(z) / np.exp(z).sum()
    assert np.allclose(era([a, b]), want, atol=1e-6)
    assert np.allclose(era([a, b], temperature=1e9), 1 / 3, atol=1e-6)  # T → ∞: uniform


def test_era_entropy_is_at_most_sa_entropy_sample_wise_when_temperature_is_below_one_over_c():
    votes = non_iid_votes(np.random.default_rng(0))
    h_sa, h_era = entropy(sa(votes)), entropy(era(votes, temperature=0.05))
    assert np.all(h_era <= h_sa)
    assert h_era.mean() < h_sa.mean() - 0.2
    assert np.array_equal(era(votes, 0.05).argmax(1), sa(votes).argmax(1))  # sharpening keeps the vote


def test_at_the_default_temperature_era_is_near_neutral_on_ten_classes():
    """Near uniform, softmax(p/T) − u ≈ (p − u)/(T·C): T = 0.1 with C = 10 neither sharpens nor flattens
    to first order, so on DS-FL-like aggregates the spec's sample-wise ERA ≤ SA entropy does not hold."""
    votes = non_iid_votes(np.random.default_rng(0))
    h_sa, h_era = entropy(sa(votes)), entropy(era(votes, temperature=0.1))
    assert abs(h_era.mean() - h_sa.mean()) < 0.1
    assert np.mean(h_era > h_sa) > 0.5


def test_era_lifts_zero_mass_classes_of_sparse_or_confident_aggregates():
    """softmax(p̄/T) caps class ratios at e^(1/T), so classes with no mass are lifted."""
    two_way = np.array([[0.5, 0.5] + [0.0] * 8], np.float32)
    assert entropy(era([two_way], temperature=0.05))[0] > entropy(sa([two_way]))[0]
    one_hot = np.eye(10, dtype=np.float32)[:1]
    assert 0.999 < era([one_hot])[0, 0] < 1.0


def test_aggregators_validate_and_are_registered():
    assert SOFT_AGGREGATORS.names() == ["era", "sa"]
    with pytest.raises(RegistryError, match="valid: era, sa"):
        SOFT_AGGREGATORS.get("mean")
    with pytest.raises(UsageError):
        sa([])
    with pytest.raises(UsageError):
        sa([np.ones((2, 3)), np.ones((3, 3))])
    with pytest.raises(UsageError):
        era([np.ones((2, 3))], temperature=0.0)


@pytest.fixture
def probs():
    return sa(non_iid_votes(np.random.default_rng(1), n=200))  # (200, 10), realistic spread


def test_fp32_encoding_is_exact_and_4_bytes_per_value(probs):
    t = encode_soft(probs, "fp32")
    assert t["probs"].nbytes == soft_bytes(200, 10, "fp32") == 200 * 10 * 4
    assert np.array_equal(decode_soft(t), probs)


def test_fp16_encoding_error_is_within_half_precision_rounding(probs):
    t = encode_soft(probs, "fp16")
    assert t["probs"].nbytes == soft_bytes(200, 10, "fp16") == 200 * 10 * 2
    err = np.abs(decode_soft(t) - probs)
    assert np.all(err <= np.maximum(2.0**-11 * probs, 2.0**-25))


def test_simplex8_encoding_error_is_within_the_documented_bound(probs):
    t = encode_soft(probs, "simplex8")
    assert t["probs_q8"].dtype == np.uint8 and t["probs_q8"].nbytes == soft_bytes(200, 10, "simplex8") == 2000
    back = decode_soft(t)
    assert np.allclose(back.sum(1), 1.0, atol=1e-6)  # renormalised
    c = probs.shape[1]
    assert np.all(np.abs(back - probs) <= (1 + c * probs) / (510 - c) + 1e-7)
    assert np.abs(back - probs).max() < 0.01  # typical error is far below the worst case


def test_simplex8_keeps_every_row_decodable_even_with_many_classes():
    wide = np.full((2, 600), 1 / 600, np.float32)  # every entry rounds to 0
    back = decode_soft(encode_soft(wide, "simplex8"))
    assert np.allclose(back.sum(1), 1.0)


@pytest.mark.parametrize("tensors, match", [
    ({}, "no soft labels"),
    ({"probs": np.ones((2, 3), np.int32)}, "float32/float16"),
    ({"probs": np.ones(3, np.float32)}, "2-D"),
    ({"probs_q8": np.ones((2, 3), np.int8)}, "uint8"),
    ({"probs_q8": np.zeros((2, 3), np.uint8)}, "all-zero row"),
])
def test_decode_rejects_malformed_peer_tensors(tensors, match):
    with pytest.raises(ProtocolError, match=match):
        decode_soft(tensors)


def test_encode_rejects_bad_arguments():
    for old in ("bf16", "int8"):
        with pytest.raises(UsageError, match="valid: fp32, fp16, simplex8"):
            encode_soft(np.ones((2, 2)), old)
    with pytest.raises(UsageError):
        encode_soft(np.ones(4), "fp32")


@pytest.mark.parametrize("bad, match", [
    (np.full((5, 3), 1 / 3, np.float32)[:4], "shape"),
    (np.array([[np.nan, 0.5, 0.5]] * 5, np.float32), "NaN"),
    (np.array([[-0.1, 0.6, 0.5]] * 5, np.float32), "negative"),
    (np.array([[0.5, 0.5, 0.5]] * 5, np.float32), "sum to 1"),
])
def test_check_soft_labels_rejects_what_a_peer_may_get_wrong(bad, match):
    check_soft_labels(np.full((5, 3), 1 / 3, np.float32), (5, 3))
    with pytest.raises(ProtocolError, match=match):
        check_soft_labels(bad, (5, 3))


def test_settings_forbid_unknown_keys_and_describe_every_field():
    assert DSFLSettings().aggregation == "era" and DSFLSettings().temperature == 0.1
    with pytest.raises(ValidationError):
        DSFLSettings(temprature=0.2)
    with pytest.raises(ValidationError):
        DSFLSettings(aggregation="mean")
    with pytest.raises(ValidationError):
        FDSettings(beta=-1)
    for model in (DSFLSettings, FDSettings):
        assert all(f.description for f in model.model_fields.values())


def test_settings_and_softlabels_do_not_import_torch():
    code = "import sys, meshlearn.fl.dsfl, meshlearn.fl.fd, meshlearn.fl.softlabels; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_old_int8_setting_fails_in_one_line_naming_simplex8():
    with pytest.raises(ConfigError) as err:
        validate_config(DSFLSettings, {"soft_label_encoding": "int8"})
    assert str(err.value) == "soft_label_encoding: 'int8' was renamed: use 'simplex8'"
    assert validate_config(DSFLSettings, {"soft_label_encoding": "simplex8"}).soft_label_encoding == "simplex8"
