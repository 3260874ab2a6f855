"""NASC-style search: the latency model, feasibility and its safety margin, the two strategies, the
(cross-)validated estimator and the settings."""

import numpy as np
import pytest

from meshlearn.config import validate_config
from meshlearn.errors import ConfigError, UsageError
from meshlearn.models import build_model
from meshlearn.net import NoLoss
from meshlearn.split import over_loss_model, transmit
from meshlearn.split.model import split_model, split_points
from meshlearn.split import nasc, nasc_estimator
from meshlearn.split.nasc import (
    Candidate,
    NascSettings,
    candidate_costs,
    channel_spec,
    drop_bound,
    feasible,
    search,
    wire_bytes,
)
from meshlearn.split.nasc_estimator import FinetuneEstimator, stratified_folds

SHAPE = (1, 8, 8)


def settings(**kw) -> NascSettings:
    """NascSettings for the unit tests: one validation split and point estimates unless a test says otherwise."""
    return NascSettings(**{"folds": 1, "confidence": 0.5, "max_drop": 1.0, **kw})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the box is shared; torch's default spins on every core
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return build_model("split_cnn", SHAPE, 10, seed=0)


@pytest.fixture(scope="module")
def points(model):
    return split_points(model, SHAPE)


class Stub:
    """Pure accuracy function of the candidate: narrower bottlenecks and earlier cuts lose more."""

    def __init__(self, fn, reference=0.98):
        self.fn, self.reference, self.calls = fn, reference, []

    def __call__(self, cand: Candidate) -> float:
        self.calls.append(cand)
        return self.fn(cand)


def _nasc_like(cand: Candidate) -> float:
    if cand.bottleneck is None:
        return 0.98 - (0.002 if cand.quant == "uniform" else 0.0)
    penalty = {1: 0.08, 2: 0.03, 4: 0.008, 8: 0.004, 16: 0.002}[cand.bottleneck]
    early = 0.02 if cand.cut in ("conv1", "relu1") else 0.0
    return 0.98 - penalty - early - (0.001 if cand.quant == "uniform" else 0.0)


@pytest.mark.parametrize("quant", ["fp32", "fp16", "uniform"])
@pytest.mark.parametrize("numel", [1, 64, 2048, 5000])
def test_wire_bytes_equal_the_channel(quant, numel):
    spec = channel_spec(settings(), quant)
    x = np.random.default_rng(0).standard_normal(numel).astype(np.float32)
    deliver = over_loss_model(NoLoss(), np.random.default_rng(0), bandwidth_bps=1e6, latency_s=0.01,
                              header_bytes=spec.header_bytes)
    result = transmit(x, spec, deliver)
    assert wire_bytes(numel, spec) == result.wire_bytes
    assert result.transfer_s == pytest.approx(result.wire_bytes * 8 / 1e6 + 0.01)


def test_latency_model_adds_up_its_parts(model, points):
    s = settings(device_flops=3e8, server_flops=5e10, link_bps=2e6, latency_s=0.005)
    costs = candidate_costs(points, s)
    assert len({c.candidate for c in costs}) == len(costs)
    for c in costs:
        lat = c.latency
        assert lat.total_s == pytest.approx(lat.device_s + lat.transfer_s + lat.server_s)
        assert lat.device_s == pytest.approx(c.head_flops / 3e8)
        assert lat.server_s == pytest.approx(c.tail_flops / 5e10)
        assert lat.transfer_s == pytest.approx(c.wire_bytes * 8 / 2e6 + 0.005)
        assert c.wire_bytes == wire_bytes(c.cut_numel, channel_spec(s, c.candidate.quant))
    # bottleneck FLOPs and shapes equal those of the real split model
    for c in costs:
        if c.candidate.quant == "fp32" and c.candidate.cut in ("relu2", "pool3", "relu_fc"):
            sm = split_model(model, c.candidate.cut, SHAPE, bottleneck=c.candidate.bottleneck)
            assert (sm.head_flops, sm.tail_flops, sm.cut_shape) == (c.head_flops, c.tail_flops, c.cut_shape)
    # widths not below the cut's channels are skipped: relu_fc has 64 features, pool2 32 channels
    ks = {c.candidate.bottleneck for c in candidate_costs(points, settings(bottlenecks=(None, 32, 48)))
          if c.candidate.cut == "pool2"}
    assert ks == {None}


def test_feasible_is_in_points():
    assert feasible(0.97, 0.98, 1.0) and not feasible(0.969, 0.98, 1.0)
    assert feasible(0.99, 0.98, 0.0)


@pytest.mark.parametrize("strategy", ["exhaustive", "latency_ordered"])
def test_infeasible_candidates_are_never_chosen(points, strategy):
    s = settings(strategy=strategy, max_drop=0.3)
    est = Stub(_nasc_like)
    r = search(s, seed=0, estimator=est, points=points)
    chosen = r["chosen"]
    assert chosen["drop_pts"] <= 0.3 + 1e-9
    assert chosen["bottleneck"] in (None, 16)  # every narrower width loses >= 0.4 points
    costs = {c.candidate.label: c.latency_s for c in candidate_costs(points, s)}
    faster = [lab for lab, t in costs.items() if t < chosen["latency_s"]]
    assert all(not feasible(_nasc_like(Candidate(*_parse(lab))), 0.98, 0.3) for lab in faster)
    # nothing feasible: no choice, the baseline is still reported
    r = search(s, seed=0, estimator=Stub(lambda c: 0.5), points=points)
    assert r["chosen"] is None and r["latency_ratio"] is None and r["baseline"]["quant"] == "fp32"


def _parse(label: str) -> tuple:
    cut, k, quant = label.split("/")
    return cut, None if k == "-" else int(k[1:]), quant


def test_cheap_search_matches_exhaustive_with_fewer_evaluations(points):
    results = {}
    for strategy in ("exhaustive", "latency_ordered"):
        est = Stub(_nasc_like)
        results[strategy] = search(settings(strategy=strategy, max_drop=1.0), seed=0, estimator=est,
                                   points=points)
    ex, lo = results["exhaustive"], results["latency_ordered"]
    assert ex["chosen"]["candidate"] == lo["chosen"]["candidate"]
    assert ex["chosen"]["latency_s"] == lo["chosen"]["latency_s"]
    assert ex["evaluated"] == ex["candidates"] and lo["evaluated"] < ex["evaluated"]
    assert 0 < lo["trained"] < ex["trained"]
    # the constructed optimum: k=4 uniform after a late-enough cut beats the best fixed split
    assert lo["chosen"]["bottleneck"] == 4 and lo["latency_ratio"] < 1
    assert lo["baseline"]["bottleneck"] is None and lo["baseline"]["quant"] == "fp32"


def test_baseline_is_the_fastest_fixed_split(points):
    s = settings(link_bps=1e6)
    r = search(s, seed=0, estimator=Stub(_nasc_like), points=points)
    fixed = [c for c in candidate_costs(points, s) if c.candidate.bottleneck is None and c.candidate.quant == "fp32"]
    assert r["baseline"]["latency_s"] == min(c.latency_s for c in fixed)


@pytest.mark.parametrize("bad", [
    {"link_bps": 0}, {"latency_s": -1}, {"max_drop": -0.1}, {"quants": ()}, {"quants": ("fp32", "fp32")},
    {"quants": ("int4",)}, {"bottlenecks": (None, 0)}, {"bottlenecks": (4, 4)}, {"cuts": ()},
    {"strategy": "random"}, {"device": "iot"}, {"val_fraction": 1.0}, {"folds": 0}, {"folds": 2.5},
    {"confidence": 0.4}, {"confidence": 1.0},
])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError):
        settings(**bad)
    with pytest.raises(ConfigError, match=f"^{next(iter(bad))}(\\[\\d+\\])?: "):
        validate_config(NascSettings, bad)


def test_old_int8_quant_fails_in_one_line_naming_uniform():
    with pytest.raises(ConfigError) as err:
        validate_config(NascSettings, {"quants": ["fp16", "int8"]})
    assert str(err.value) == "quants: 'int8' was renamed: use 'uniform' (8-bit min-max)"


def test_bad_space_raises(points):
    with pytest.raises(UsageError, match="unknown cut"):
        candidate_costs(points, settings(cuts=("nope",)))
    with pytest.raises(UsageError, match="no fixed split"):
        search(settings(bottlenecks=(4,)), seed=0, estimator=Stub(_nasc_like), points=points)
    with pytest.raises(UsageError, match="points="):
        search(settings(), seed=0, estimator=Stub(_nasc_like))


def test_small_real_search_on_digits():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    s = settings(cuts=("pool3", "relu_fc"), bottlenecks=(None, 8), quants=("fp32", "uniform"), epochs=3,
                     finetune_epochs=1, max_drop=100.0, strategy="exhaustive")
    events = []
    est = FinetuneEstimator(s, seed=0)
    r = search(s, seed=0, progress=events.append, estimator=est)
    assert r["candidates"] == 8 and r["evaluated"] == 8 and r["trained"] == 2 and len(events) == 8
    assert 0 < r["reference_accuracy"] <= 1 and 0 < r["reference_test_accuracy"] <= 1
    fastest = min(candidate_costs(split_points(build_model("split_cnn", SHAPE, 10, seed=0), SHAPE), s),
                  key=lambda c: c.latency_s)
    assert r["chosen"]["candidate"] == fastest.candidate.label  # everything is feasible at 100 points
    assert r["chosen"]["bottleneck"] == 8 and r["chosen"]["quant"] == "uniform"
    assert r["baseline"]["accuracy"] == pytest.approx(r["reference_accuracy"])  # fp32 split == unsplit
    assert r["latency_ratio"] < 1 and "test_accuracy" in r["chosen"]
    # one fold = the old hold-out protocol: the models reported on test are the validated ones
    (fold,) = est.folds
    assert len(fold.held) == round(0.2 * len(est.y)) and not set(fold.train) & set(fold.held)
    assert est.base(None) is est.base(0) and est.split_model("pool3", 8) is est.split_model("pool3", 8, 0)
    assert est.trainings == 2  # pool3/k8 and relu_fc/k8, each once for fp32 and uniform


# ---------------------------------------------------------------- safety margin


def test_drop_bound_is_the_paired_normal_bound():
    ref = np.ones(100, bool)
    cand = ref.copy()
    cand[:3] = False  # 3 worse
    d = np.r_[np.ones(3), np.zeros(97)]
    se = d.std(ddof=1) / np.sqrt(100)
    assert drop_bound(ref, cand, 0.5) == pytest.approx((3.0, 3.0))
    assert drop_bound(ref, cand, 0.95) == pytest.approx((3.0, 100 * (0.03 + 1.6448536 * se)))
    # paired: the same samples right (or wrong) on both sides add no uncertainty
    assert drop_bound(ref, ref, 0.99) == (0.0, 0.0)
    with pytest.raises(UsageError, match="equal-length"):
        drop_bound(ref, cand[:50], 0.95)


class PairedStub(Stub):
    """Per-sample correctness: 1,000 samples, the reference right on 980."""

    def __init__(self, fn):
        self.reference_correct = np.r_[np.ones(980, bool), np.zeros(20, bool)]
        super().__init__(fn, reference=0.98)

    def correct(self, cand: Candidate) -> np.ndarray:
        self.calls.append(cand)
        return self.fn(cand)


def _flip(worse: int, better: int) -> np.ndarray:
    ok = np.r_[np.ones(980, bool), np.zeros(20, bool)]
    ok[:worse] = False
    ok[980:980 + better] = True
    return ok


def test_margin_rejects_a_candidate_whose_drop_bound_exceeds_max_drop(points):
    # both bottlenecks lose 0.4 points on average, but k=1 disagrees with the reference on 20 samples
    # (12 worse, 8 better) and k=2 on 4: bounds (95%) 1.14 and 0.73 points
    table = {1: _flip(12, 8), 2: _flip(4, 0)}

    def fn(c: Candidate) -> np.ndarray:
        if c.bottleneck is None and c.quant == "fp32":
            return _flip(0, 0)  # the fixed split is the unsplit model
        return table[c.bottleneck] if c.cut == "relu1" and c.bottleneck and c.quant == "uniform" else _flip(50, 0)

    s = dict(cuts=("relu1", "relu_fc"), bottlenecks=(None, 1, 2), quants=("fp32", "uniform"), max_drop=1.0)
    loose = search(settings(**s, confidence=0.5), seed=0, estimator=PairedStub(fn), points=points)
    assert loose["chosen"]["candidate"] == "relu1/k1/uniform"  # the point estimate accepts the fastest
    assert loose["chosen"]["drop_pts"] == pytest.approx(0.4) == loose["chosen"]["drop_bound_pts"]
    events = []
    safe = search(settings(**s, confidence=0.95), seed=0, estimator=PairedStub(fn), points=points,
                  progress=events.append)
    assert [e["candidate"] for e in events[:2]] == ["relu1/k1/uniform", "relu1/k2/uniform"]
    assert events[0]["drop_bound_pts"] == pytest.approx(1.14, abs=0.01) and not events[0]["feasible"]
    chosen = safe["chosen"]
    assert chosen["candidate"] == "relu1/k2/uniform" and chosen["drop_pts"] == pytest.approx(0.4)
    assert chosen["drop_bound_pts"] == pytest.approx(0.73, abs=0.01)
    assert safe["baseline"]["drop_bound_pts"] == 0.0 and safe["confidence"] == 0.95
    # every candidate faster than the chosen one was estimated and rejected
    faster = {c.candidate for c in candidate_costs(points, settings(**s)) if c.latency_s < chosen["latency_s"]}
    assert faster == {Candidate("relu1", 1, "uniform")}


def test_confidence_needs_per_sample_correctness(points):
    with pytest.raises(UsageError, match="per-sample correctness"):
        search(settings(confidence=0.9), seed=0, estimator=Stub(_nasc_like), points=points)


# ---------------------------------------------------------------- cross-validated estimator


def test_stratified_folds_partition_every_class():
    y = np.repeat(np.arange(4), [10, 7, 13, 1])
    fold = stratified_folds(y, 3, seed=1)
    assert set(fold) == {0, 1, 2}
    assert np.ptp(np.bincount(fold)) <= 1  # sizes 11, 10, 10
    for label in range(4):
        per = np.bincount(fold[y == label], minlength=3)
        assert np.ptp(per) <= 1  # each class spread evenly
    assert np.array_equal(fold, stratified_folds(y, 3, seed=1))
    assert not np.array_equal(fold, stratified_folds(y, 3, seed=2))
    for bad in (1, 32):
        with pytest.raises(UsageError, match="folds must be in"):
            stratified_folds(y, bad, seed=0)


def test_cross_validation_predicts_each_training_sample_once_out_of_fold(monkeypatch):
    torch = pytest.importorskip("torch")
    fits = []
    real_fit = nasc_estimator.fit_classifier

    def recording_fit(model, x, y, **kw):
        fits.append((model, x, y))
        return real_fit(model, x, y, **kw)

    monkeypatch.setattr(nasc_estimator, "fit_classifier", recording_fit)
    est = FinetuneEstimator(settings(folds=3, epochs=1, finetune_epochs=1), seed=0)
    n = len(est.y)
    # every training sample is held out by exactly one fold, and no fold trains on what it holds out
    assert np.array_equal(np.sort(est.eval_idx), np.arange(n))
    for f in est.folds:
        assert not set(f.train) & set(f.held) and len(f.train) + len(f.held) == n
    # the reference: each fold's own base model (trained on that fold's train part) on its held-out part
    assert len(fits) == 3 and est.trainings == 0
    for i, f in enumerate(est.folds):
        model, x, _ = fits[i]
        assert model is est.base(i) and torch.equal(x, est.x[f.train])
    assert len(est.reference_correct) == n and est.reference == pytest.approx(est.reference_correct.mean())

    cand = Candidate("relu_fc", 8, "fp32")
    correct = est.correct(cand)
    assert len(correct) == n and est.trainings == 3
    start = 0
    for i, f in enumerate(est.folds):
        model, x, _ = fits[3 + i]
        assert model is est.split_model("relu_fc", 8, i) and torch.equal(x, est.x[f.train])
        with torch.no_grad():
            mine = (model(est.x[f.held]).argmax(1) == est.y[f.held]).numpy()  # fp32 crosses unchanged
        assert np.array_equal(correct[start:start + len(f.held)], mine)
        start += len(f.held)
    # one fine-tune per (cut, k, fold) serves every wire encoding
    for quant in ("fp16", "uniform"):
        est(Candidate("relu_fc", 8, quant))
    assert est.trainings == 3 and len(fits) == 6
    # the test split is reported by final models trained on all training samples (only when asked)
    est.test_accuracy(Candidate("relu_fc", 8, "uniform"))
    assert est.trainings == 4 and len(fits) == 8
    assert fits[6][0] is est.base(None) and fits[7][0] is est.split_model("relu_fc", 8)
    assert torch.equal(fits[6][1], est.x) and torch.equal(fits[7][1], est.x)

    # a search through the shared estimator trains nothing more for the same (cut, k)
    s = settings(folds=3, cuts=("relu_fc",), bottlenecks=(None, 8), quants=("fp32", "uniform"), max_drop=100.0,
                     confidence=0.9)
    r = search(s, seed=0, estimator=est)
    assert r["chosen"]["candidate"] == "relu_fc/k8/uniform" and r["trained"] == 1 and est.trainings == 4
    assert r["folds"] == 3 and r["chosen"]["drop_bound_pts"] >= r["chosen"]["drop_pts"]
    assert r["baseline"]["drop_pts"] == 0.0 and r["baseline"]["test_accuracy"] == r["reference_test_accuracy"]
