"""NASC-style search: the split point, bottleneck width and wire encoding that minimise modelled
end-to-end latency under an accuracy constraint, for one device and one link.

techniques-nishio.md §6 (NASC jointly searches architecture and split point under a latency
objective without training every candidate) and §8 (delay = compute + size/rate + propagation).

**Candidate** = (cut, bottleneck width k or None, quantization fp32 | fp16 | uniform, the 8-bit
min-max scheme of ``wire/quant.py``): cut after a
child of the ``nn.Sequential`` model (``split_points``); with k the cut tensor is squeezed by the
trainable encoder/decoder of ``make_bottleneck`` (k must be below the cut's channel/feature width).

**Latency model** (``candidate_costs``; no training, exact for a loss-free link)::

    latency = head FLOPs (encoder incl.) / device FLOP/s             (end_to_end_latency)
            + wire bytes * 8 / link bit/s + propagation latency_s     (last packet's arrival)
            + tail FLOPs (decoder incl.) / server FLOP/s

Wire bytes come from the channel's packet plan: per packet its payload plus the 22-byte split
header plus ``header_bytes`` (IP+UDP) — tested equal to ``transmit``'s ``wire_bytes``; transfer
time equals ``over_loss_model``'s arrival of the last packet. No compression (data-dependent).

**Accuracy** is an ``Estimator``: ``reference`` (the unsplit model's accuracy, a fraction) and a
call ``estimator(candidate) -> accuracy``. A candidate is *feasible* when it loses at most
``max_drop`` percentage points against ``reference``. An estimator that also gives per-sample
correctness (``correct(candidate)`` and ``reference_correct``, boolean arrays over the same
samples) allows a **safety margin**: with ``confidence`` c > 0.5 a candidate is feasible only when
the upper bound of its drop, ``mean(d) + z_c * std(d) / sqrt(n)`` over the paired per-sample
differences d = reference correct - candidate correct (one-sided normal bound, z_0.95 = 1.645),
is at most ``max_drop``; c = 0.5 is the point estimate.

``FinetuneEstimator`` (the real one, in ``nasc_estimator.py``) trains the base model, then per (cut, k) fine-tunes the model
with the bottleneck inserted end to end for ``finetune_epochs`` (cached per (cut, k, fold): one
training serves every quantization). A candidate's correctness is measured with its cut
tensor quantized as on the wire (``simulate_batch``, nothing lost) on samples its models never
trained on:

* ``folds = 1``: one stratified validation split (``val_fraction`` of the training set); the
  models trained on the rest are also the ones reported on the test split;
* ``folds = K >= 2``: K-fold cross-validation over the whole training set (stratified folds). Per
  fold a base model and, per (cut, k), a fine-tuned model train on the other K-1 folds and predict
  the held-out fold, so every training sample is predicted exactly once by a model that did not
  train on it; ``reference`` is the per-fold base models' accuracy measured the same way. The
  models reported on the test split are trained afresh on the whole training set (only for the
  candidates whose test accuracy is asked for).

The test split is only used to report the result, never by the search.

**Strategies** (same answer, different cost):
* ``exhaustive``: estimate every candidate's accuracy, pick the fastest feasible one;
* ``latency_ordered`` (the NASC idea of not training everything): sort candidates by modelled
  latency (cheap) and estimate accuracy in that order; the first feasible one is the optimum,
  so only candidates faster than it are ever trained. Ties break by candidate order in both.

``search`` reports the chosen candidate, its latency parts and accuracy, the **best fixed split
point** (the fastest cut with no bottleneck and fp32, i.e. "split at a layer and send the tensor as
is", whose accuracy is the unsplit model's) and how many candidates were evaluated and trained.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from meshlearn.errors import UsageError
from meshlearn.net.devices import DeviceProfile
from meshlearn.net.packetizer import DEFAULT_HEADER_BYTES
from meshlearn.split.channel import HEADER, ChannelSpec, Latency, end_to_end_latency, packet_plan, simulate_batch
from meshlearn.wire.quant import reject_old_name

if TYPE_CHECKING:
    from meshlearn.split.model import SplitPoint

__all__ = [
    "Candidate", "CandidateCost", "NascSettings", "Estimator", "channel_spec", "wire_bytes",
    "candidate_costs", "feasible", "drop_bound", "Score", "exhaustive_search", "latency_ordered_search",
    "build_estimator", "search",
]

Quant = Literal["fp32", "fp16", "uniform"]


class Candidate(NamedTuple):
    """One configuration: cut after layer ``cut``, bottleneck width (None = none), wire encoding."""

    cut: str
    bottleneck: int | None
    quant: str

    @property
    def label(self) -> str:
        return f"{self.cut}/{'-' if self.bottleneck is None else f'k{self.bottleneck}'}/{self.quant}"


class NascSettings(BaseModel):
    """What to search over and under which device, link and accuracy constraint.

    Invalid values raise pydantic's ValidationError (a ValueError); configs report them as ``key: reason``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_flops: float = Field(2e8, gt=0, description="device compute, FLOP/s (iot median 2e8; mobile 2e9)")
    server_flops: float = Field(1e11, gt=0, description="server compute, FLOP/s (server_profile: 1e11)")
    link_bps: float = Field(1e6, gt=0, description="uplink rate device -> server, bit/s")
    latency_s: float = Field(0.01, ge=0, description="one-way propagation delay of the link, seconds")
    mtu: int = Field(1500, gt=0, description="datagram size on the wire incl. header_bytes, bytes")
    header_bytes: int = Field(DEFAULT_HEADER_BYTES, ge=0, description="per-packet IP+UDP header bytes")
    max_drop: float = Field(0.5, ge=0, le=100,
                            description="largest accepted accuracy loss vs the unsplit model, percentage points")
    cuts: tuple[str, ...] | None = Field(None, description="layers to cut after; None = every split point")
    bottlenecks: tuple[int | None, ...] = Field(
        (None, 1, 2, 4, 8, 16), description="bottleneck widths k to try; None (\"none\" in a file) = no bottleneck; "
                                            "widths >= the cut's channels are skipped")
    quants: tuple[Quant, ...] = Field(("fp32", "fp16", "uniform"),
                                      description="wire encodings to try (uniform: 8-bit min-max)")
    strategy: Literal["exhaustive", "latency_ordered"] = Field(
        "latency_ordered", description="exhaustive: estimate every candidate; latency_ordered: only those "
                                       "faster than the chosen one")
    model: str = Field("split_cnn", description="registered model (an nn.Sequential) for the real estimator")
    dataset: str = Field("digits", description="registered dataset for the real estimator")
    epochs: int = Field(30, ge=1, description="epochs to train the base model (real estimator)")
    finetune_epochs: int = Field(10, ge=1, description="epochs to fine-tune each bottleneck model end to end")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the training set held out for the search "
                                                             "(folds = 1 only)")
    folds: int = Field(5, ge=1, le=50, description="1: one held-out validation split; K >= 2: K-fold "
                                                   "cross-validation over the whole training set")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="one-sided confidence of the drop's upper bound "
                                                             "that must stay <= max_drop; 0.5 = point estimate")


    @field_validator("quants", mode="before")
    @classmethod
    def _renamed(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            for quant in value:
                reject_old_name(quant, "int8", "'uniform' (8-bit min-max)")
        return value

    @field_validator("bottlenecks", mode="before")
    @classmethod
    def _none_spelled(cls, value: object) -> object:
        """TOML has no null: a config file spells "no bottleneck" as "none"."""
        if isinstance(value, (list, tuple)):
            return tuple(None if isinstance(v, str) and v.lower() == "none" else v for v in value)
        return value

    @field_serializer("bottlenecks")
    def _none_as_text(self, value: tuple) -> list:
        return ["none" if k is None else k for k in value]

    @field_validator("bottlenecks", "quants")
    @classmethod
    def _non_empty_unique(cls, value: tuple) -> tuple:
        if not value:
            raise ValueError("give at least one value")
        if len(set(value)) != len(value):
            raise ValueError(f"values must be unique, got {list(value)}")
        return value

    @field_validator("bottlenecks")
    @classmethod
    def _widths(cls, value: tuple) -> tuple:
        if any(k is not None and k < 1 for k in value):
            raise ValueError(f"bottleneck widths must be >= 1 (or None), got {list(value)}")
        return value

    @field_validator("cuts")
    @classmethod
    def _cuts(cls, value: tuple | None) -> tuple | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError(f"cuts must be None or a non-empty list of distinct layer names, got {value}")
        return value

    def device(self) -> DeviceProfile:
        return DeviceProfile(flops=self.device_flops, up_bps=self.link_bps, down_bps=self.link_bps)

    def server(self) -> DeviceProfile:
        return DeviceProfile(flops=self.server_flops, up_bps=self.link_bps, down_bps=self.link_bps)


# ---------------------------------------------------------------- latency model


def channel_spec(settings: NascSettings, quant: str) -> ChannelSpec:
    """The loss-free channel a candidate's tensor crosses (MTU-filling packets, no compression)."""
    return ChannelSpec(quant=quant, mtu=settings.mtu, header_bytes=settings.header_bytes, order="sequential")


def wire_bytes(n_elements: int, spec: ChannelSpec) -> int:
    """Bytes on the wire for one sample of ``n_elements`` (payloads + split headers + IP/UDP headers)."""
    _, per, packets = packet_plan(n_elements, spec)
    counts = [min(per, n_elements - i * per) for i in range(packets)]
    payload = sum(-(-max(c, 0) * spec.element_bits // 8) for c in counts)
    return payload + packets * (HEADER.size + spec.header_bytes)


@dataclass(frozen=True)
class CandidateCost:
    """A candidate's modelled cost: shape and size on the wire, FLOPs per side, latency parts."""

    candidate: Candidate
    cut_shape: tuple[int, ...]
    cut_numel: int
    wire_bytes: int
    head_flops: int
    tail_flops: int
    latency: Latency

    @property
    def latency_s(self) -> float:
        return self.latency.total_s


def _bottleneck_flops(point: SplitPoint, k: int) -> tuple[tuple[int, ...], int, int]:
    from meshlearn.models.zoo import flops_per_sample
    from meshlearn.split.model import make_bottleneck

    encoder, decoder = make_bottleneck(point.shape, k)
    shape = (k, *point.shape[1:])
    return shape, flops_per_sample(encoder, point.shape), flops_per_sample(decoder, shape)


def candidate_costs(points: Sequence[SplitPoint], settings: NascSettings) -> list[CandidateCost]:
    """Every candidate of the settings' space with its modelled latency, in candidate order.

    Order: cuts as in the model, then bottlenecks, then quants as listed. A bottleneck width that is
    not below the cut's channel (or feature) width is skipped; a cut name not in ``points`` raises.
    """
    by_name = {p.name: p for p in points}
    names = list(settings.cuts) if settings.cuts is not None else [p.name for p in points]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UsageError(f"unknown cut(s) {unknown}: valid cut points are {', '.join(by_name)}")
    device, server = settings.device(), settings.server()
    out = []
    for name in names:
        point = by_name[name]
        for k in settings.bottlenecks:
            if k is None:
                shape, enc, dec = point.shape, 0, 0
            elif len(point.shape) in (1, 3) and k < point.shape[0]:
                shape, enc, dec = _bottleneck_flops(point, k)
            else:
                continue
            numel = math.prod(shape)
            head, tail = point.head_flops + enc, point.tail_flops + dec
            for quant in settings.quants:
                nbytes = wire_bytes(numel, channel_spec(settings, quant))
                transfer = nbytes * 8.0 / settings.link_bps + settings.latency_s
                out.append(CandidateCost(Candidate(name, k, quant), tuple(shape), numel, nbytes, head, tail,
                                         end_to_end_latency(head, tail, transfer, device, server)))
    if not out:
        raise UsageError("the candidate space is empty: give cuts/bottlenecks that fit the model")
    return out


# ---------------------------------------------------------------- accuracy and search


class Estimator(Protocol):
    """Accuracy (a fraction) of a candidate; ``reference`` is the unsplit model's accuracy.

    Optionally also ``correct(candidate)`` and ``reference_correct``: per-sample correctness (bool
    arrays over the same samples, in the same order), needed for ``confidence`` > 0.5.
    """

    reference: float

    def __call__(self, candidate: Candidate) -> float: ...


def feasible(accuracy: float, reference: float, max_drop: float) -> bool:
    """True when ``accuracy`` is at most ``max_drop`` percentage points below ``reference``."""
    return 100.0 * (reference - accuracy) <= max_drop + 1e-9


def drop_bound(reference_correct: np.ndarray, correct: np.ndarray, confidence: float) -> tuple[float, float]:
    """(drop, one-sided upper bound of the drop) in points, from paired per-sample correctness.

    d_i = reference correct - candidate correct (each 0 or 1); the bound is
    ``mean(d) + z * std(d, ddof=1) / sqrt(n)`` with z the ``confidence`` quantile of the normal law
    (z = 0 at 0.5: the bound is the drop itself).
    """
    ref, cand = np.asarray(reference_correct, bool), np.asarray(correct, bool)
    if ref.shape != cand.shape or ref.ndim != 1 or len(ref) == 0:
        raise UsageError(f"paired correctness needs two equal-length 1-D arrays, got {ref.shape} and {cand.shape}")
    d = ref.astype(np.float64) - cand.astype(np.float64)
    drop = float(d.mean())
    if confidence <= 0.5 or len(d) < 2:
        return 100.0 * drop, 100.0 * drop
    z = NormalDist().inv_cdf(confidence)
    return 100.0 * drop, 100.0 * (drop + z * float(d.std(ddof=1)) / math.sqrt(len(d)))


class Score(NamedTuple):
    """A candidate's estimated accuracy, drop vs the reference and the drop's upper bound (points)."""

    accuracy: float
    drop_pts: float
    bound_pts: float


@dataclass
class _Run:
    estimator: Estimator
    max_drop: float
    confidence: float = 0.5
    progress: Callable[[dict], None] | None = None
    scores: dict[Candidate, Score] = field(default_factory=dict)

    def __call__(self, cost: CandidateCost) -> Score:
        cand = cost.candidate
        if cand not in self.scores:
            self.scores[cand] = self._score(cand)
            if self.progress is not None:
                s = self.scores[cand]
                self.progress({"candidate": cand.label, "latency_ms": 1e3 * cost.latency_s,
                               "accuracy": s.accuracy, "drop_pts": s.drop_pts, "drop_bound_pts": s.bound_pts,
                               "feasible": self.ok(cand), "evaluated": len(self.scores)})
        return self.scores[cand]

    def _score(self, cand: Candidate) -> Score:
        est = self.estimator
        if hasattr(est, "correct"):
            correct = np.asarray(est.correct(cand), bool)
            drop, bound = drop_bound(est.reference_correct, correct, self.confidence)
            return Score(float(correct.mean()), drop, bound)
        accuracy = float(est(cand))
        drop = 100.0 * (est.reference - accuracy)
        return Score(accuracy, drop, drop)

    def ok(self, cand: Candidate) -> bool:
        return self.scores[cand].bound_pts <= self.max_drop + 1e-9

    @property
    def trained(self) -> int:
        return len({(c.cut, c.bottleneck) for c in self.scores if c.bottleneck is not None})


def _order(costs: Sequence[CandidateCost]) -> list[CandidateCost]:
    return [c for _, c in sorted(enumerate(costs), key=lambda ic: (ic[1].latency_s, ic[0]))]


def exhaustive_search(costs: Sequence[CandidateCost], run: _Run) -> CandidateCost | None:
    """Estimate every candidate; the fastest feasible one (None if none is)."""
    for cost in costs:
        run(cost)
    return next((c for c in _order(costs) if run.ok(c.candidate)), None)


def latency_ordered_search(costs: Sequence[CandidateCost], run: _Run) -> CandidateCost | None:
    """Estimate candidates fastest first and stop at the first feasible one (None if none is)."""
    for cost in _order(costs):
        run(cost)
        if run.ok(cost.candidate):
            return cost
    return None


# ---------------------------------------------------------------- the real estimator


def build_estimator(settings: NascSettings, seed: int):
    """The real estimator for ``settings`` (a ``nasc_estimator.FinetuneEstimator``; trains the base model(s) now)."""
    from meshlearn.split.nasc_estimator import FinetuneEstimator

    return FinetuneEstimator(settings, seed)


def _describe(cost: CandidateCost, run: _Run, estimator: Any) -> dict:
    cand, score = cost.candidate, run.scores[cost.candidate]
    out = {"candidate": cand.label, "cut": cand.cut, "bottleneck": cand.bottleneck, "quant": cand.quant,
           "cut_shape": list(cost.cut_shape), "wire_bytes": cost.wire_bytes,
           "head_flops": cost.head_flops, "tail_flops": cost.tail_flops,
           "latency_s": cost.latency_s, "device_s": cost.latency.device_s, "transfer_s": cost.latency.transfer_s,
           "server_s": cost.latency.server_s, "accuracy": score.accuracy,
           "drop_pts": score.drop_pts, "drop_bound_pts": score.bound_pts}
    if hasattr(estimator, "test_accuracy"):
        out["test_accuracy"] = float(estimator.test_accuracy(cand))
    return out


def search(settings: NascSettings, *, seed: int, progress: Callable[[dict], None] | None = None,
           estimator: Estimator | None = None, points: Sequence[SplitPoint] | None = None) -> dict:
    """Run the configured strategy; returns the chosen candidate, the best fixed split and costs.

    ``estimator`` defaults to ``build_estimator(settings, seed)`` (trains on the dataset); pass a
    stub (or a shared ``FinetuneEstimator``) to reuse one. ``points`` default to the estimator's
    ``points``. ``progress`` gets one dict per candidate whose accuracy is estimated.

    Result keys: ``chosen`` (None if no candidate is feasible), ``baseline`` (best fixed split:
    no bottleneck, fp32; its accuracy counts as an evaluation but trains nothing), ``latency_ratio``
    (chosen / baseline), ``candidates`` (space size), ``evaluated``, ``trained`` (distinct (cut, k)
    bottleneck models this search needed; each is one fine-tune per fold), ``reference_accuracy``,
    ``folds``, ``confidence``, ``strategy``, ``seconds``. ``chosen`` and ``baseline`` carry
    ``accuracy``, ``drop_pts``, ``drop_bound_pts`` and, with the real estimator, ``test_accuracy``.
    """
    t0 = time.perf_counter()
    if estimator is None:
        estimator = build_estimator(settings, seed)
    if settings.confidence > 0.5 and not hasattr(estimator, "correct"):
        raise UsageError("confidence > 0.5 needs an estimator with per-sample correctness "
                         "(correct() and reference_correct)")
    if points is None:
        points = getattr(estimator, "points", None)
        if points is None:
            raise UsageError("pass points= (split_points of the model) with a stub estimator")
    costs = candidate_costs(points, settings)
    run = _Run(estimator, settings.max_drop, settings.confidence, progress)
    strategy = exhaustive_search if settings.strategy == "exhaustive" else latency_ordered_search
    best = strategy(costs, run)
    evaluated, trained = len(run.scores), run.trained
    fixed = [c for c in costs if c.candidate.bottleneck is None and c.candidate.quant == "fp32"]
    if not fixed:
        raise UsageError("the space has no fixed split (bottleneck None with fp32) to compare against; "
                         "include None in bottlenecks and fp32 in quants")
    baseline = _order(fixed)[0]
    run(baseline)
    result = {
        "strategy": settings.strategy, "seed": int(seed), "reference_accuracy": float(estimator.reference),
        "max_drop": settings.max_drop, "folds": settings.folds, "confidence": settings.confidence,
        "candidates": len(costs), "evaluated": evaluated, "trained": trained,
        "chosen": None if best is None else _describe(best, run, estimator),
        "baseline": _describe(baseline, run, estimator),
        "latency_ratio": None if best is None else best.latency_s / baseline.latency_s,
    }
    if hasattr(estimator, "test_reference"):
        result["reference_test_accuracy"] = float(estimator.test_reference)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result
