"""NASC-style search: the latency model, feasibility, the two strategies and the settings."""

import numpy as np
import pytest

from meshlearn.errors import UsageError
from meshlearn.models import build_model
from meshlearn.net import NoLoss
from meshlearn.split import over_loss_model, transmit
from meshlearn.split.model import split_model, split_points
from meshlearn.split.nasc import (
    Candidate,
    NascSettings,
    candidate_costs,
    channel_spec,
    feasible,
    search,
    wire_bytes,
)

SHAPE = (1, 8, 8)


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
        return 0.98 - (0.002 if cand.quant == "int8" else 0.0)
    penalty = {1: 0.08, 2: 0.03, 4: 0.008, 8: 0.004, 16: 0.002}[cand.bottleneck]
    early = 0.02 if cand.cut in ("conv1", "relu1") else 0.0
    return 0.98 - penalty - early - (0.001 if cand.quant == "int8" else 0.0)


@pytest.mark.parametrize("quant", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("numel", [1, 64, 2048, 5000])
def test_wire_bytes_equal_the_channel(quant, numel):
    spec = channel_spec(NascSettings(), quant)
    x = np.random.default_rng(0).standard_normal(numel).astype(np.float32)
    deliver = over_loss_model(NoLoss(), np.random.default_rng(0), bandwidth_bps=1e6, latency_s=0.01,
                              header_bytes=spec.header_bytes)
    result = transmit(x, spec, deliver)
    assert wire_bytes(numel, spec) == result.wire_bytes
    assert result.transfer_s == pytest.approx(result.wire_bytes * 8 / 1e6 + 0.01)


def test_latency_model_adds_up_its_parts(model, points):
    s = NascSettings(device_flops=3e8, server_flops=5e10, link_bps=2e6, latency_s=0.005)
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
    ks = {c.candidate.bottleneck for c in candidate_costs(points, NascSettings(bottlenecks=(None, 32, 48)))
          if c.candidate.cut == "pool2"}
    assert ks == {None}


def test_feasible_is_in_points():
    assert feasible(0.97, 0.98, 1.0) and not feasible(0.969, 0.98, 1.0)
    assert feasible(0.99, 0.98, 0.0)


@pytest.mark.parametrize("strategy", ["exhaustive", "latency_ordered"])
def test_infeasible_candidates_are_never_chosen(points, strategy):
    s = NascSettings(strategy=strategy, max_drop=0.3)
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
        results[strategy] = search(NascSettings(strategy=strategy, max_drop=1.0), seed=0, estimator=est,
                                   points=points)
    ex, lo = results["exhaustive"], results["latency_ordered"]
    assert ex["chosen"]["candidate"] == lo["chosen"]["candidate"]
    assert ex["chosen"]["latency_s"] == lo["chosen"]["latency_s"]
    assert ex["evaluated"] == ex["candidates"] and lo["evaluated"] < ex["evaluated"]
    assert 0 < lo["trained"] < ex["trained"]
    # the constructed optimum: k=4 int8 after a late-enough cut beats the best fixed split
    assert lo["chosen"]["bottleneck"] == 4 and lo["latency_ratio"] < 1
    assert lo["baseline"]["bottleneck"] is None and lo["baseline"]["quant"] == "fp32"


def test_baseline_is_the_fastest_fixed_split(points):
    s = NascSettings(link_bps=1e6)
    r = search(s, seed=0, estimator=Stub(_nasc_like), points=points)
    fixed = [c for c in candidate_costs(points, s) if c.candidate.bottleneck is None and c.candidate.quant == "fp32"]
    assert r["baseline"]["latency_s"] == min(c.latency_s for c in fixed)


@pytest.mark.parametrize("bad", [
    {"link_bps": 0}, {"latency_s": -1}, {"max_drop": -0.1}, {"quants": ()}, {"quants": ("fp32", "fp32")},
    {"quants": ("int4",)}, {"bottlenecks": (None, 0)}, {"bottlenecks": (4, 4)}, {"cuts": ()},
    {"strategy": "random"}, {"device": "iot"}, {"val_fraction": 1.0},
])
def test_bad_settings_raise(bad):
    with pytest.raises(UsageError, match="invalid NascSettings"):
        NascSettings(**bad)


def test_bad_space_raises(points):
    with pytest.raises(UsageError, match="unknown cut"):
        candidate_costs(points, NascSettings(cuts=("nope",)))
    with pytest.raises(UsageError, match="no fixed split"):
        search(NascSettings(bottlenecks=(4,)), seed=0, estimator=Stub(_nasc_like), points=points)
    with pytest.raises(UsageError, match="points="):
        search(NascSettings(), seed=0, estimator=Stub(_nasc_like))


def test_small_real_search_on_digits():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    s = NascSettings(cuts=("pool3", "relu_fc"), bottlenecks=(None, 8), quants=("fp32", "int8"), epochs=3,
                     finetune_epochs=1, max_drop=100.0, strategy="exhaustive")
    events = []
    r = search(s, seed=0, progress=events.append)
    assert r["candidates"] == 8 and r["evaluated"] == 8 and r["trained"] == 2 and len(events) == 8
    assert 0 < r["reference_accuracy"] <= 1 and 0 < r["reference_test_accuracy"] <= 1
    fastest = min(candidate_costs(split_points(build_model("split_cnn", SHAPE, 10, seed=0), SHAPE), s),
                  key=lambda c: c.latency_s)
    assert r["chosen"]["candidate"] == fastest.candidate.label  # everything is feasible at 100 points
    assert r["chosen"]["bottleneck"] == 8 and r["chosen"]["quant"] == "int8"
    assert r["baseline"]["accuracy"] == pytest.approx(r["reference_accuracy"])  # fp32 split == unsplit
    assert r["latency_ratio"] < 1 and "test_accuracy" in r["chosen"]
