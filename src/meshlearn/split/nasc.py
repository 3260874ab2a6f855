"""NASC-style search: the split point, bottleneck width and wire encoding that minimise modelled
end-to-end latency under an accuracy constraint, for one device and one link.

techniques-nishio.md §6 (NASC jointly searches architecture and split point under a latency
objective without training every candidate) and §8 (delay = compute + size/rate + propagation).

**Candidate** = (cut, bottleneck width k or None, quantization fp32 | fp16 | int8): cut after a
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
``max_drop`` percentage points against ``reference``. ``FinetuneEstimator`` (the real one) trains
the base model once, then per (cut, k) fine-tunes the model with the bottleneck inserted end to
end for ``finetune_epochs`` (cached: one training serves all three quantizations); a candidate's
accuracy is measured on a held-out **validation** split with its cut tensor quantized as on the
wire (``simulate_batch``, nothing lost). The test split is only used to report the result.

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
from typing import Any, Callable, Literal, NamedTuple, Protocol, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from meshlearn.errors import UsageError
from meshlearn.models.zoo import flops_per_sample
from meshlearn.net.devices import DeviceProfile
from meshlearn.net.packetizer import DEFAULT_HEADER_BYTES
from meshlearn.split.channel import HEADER, ChannelSpec, Latency, end_to_end_latency, packet_plan, simulate_batch
from meshlearn.split.model import SplitPoint, fit_classifier, make_bottleneck, split_model, split_points

__all__ = [
    "Candidate", "CandidateCost", "NascSettings", "Estimator", "FinetuneEstimator", "channel_spec", "wire_bytes",
    "candidate_costs", "feasible", "exhaustive_search", "latency_ordered_search", "build_estimator", "search",
]

Quant = Literal["fp32", "fp16", "int8"]


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

    Invalid values raise :class:`UsageError`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_flops: float = Field(2e8, gt=0, description="device compute, FLOP/s (iot median 2e8; mobile 2e9)")
    server_flops: float = Field(1e11, gt=0, description="server compute, FLOP/s (server_profile: 1e11)")
    link_bps: float = Field(1e6, gt=0, description="uplink rate device -> server, bit/s")
    latency_s: float = Field(0.01, ge=0, description="one-way propagation delay of the link, seconds")
    mtu: int = Field(1500, gt=0, description="datagram size on the wire incl. header_bytes, bytes")
    header_bytes: int = Field(DEFAULT_HEADER_BYTES, ge=0, description="per-packet IP+UDP header bytes")
    max_drop: float = Field(1.0, ge=0, le=100,
                            description="largest accepted accuracy loss vs the unsplit model, percentage points")
    cuts: tuple[str, ...] | None = Field(None, description="layers to cut after; None = every split point")
    bottlenecks: tuple[int | None, ...] = Field(
        (None, 1, 2, 4, 8, 16), description="bottleneck widths k to try; None = no bottleneck; "
                                            "widths >= the cut's channels are skipped")
    quants: tuple[Quant, ...] = Field(("fp32", "fp16", "int8"), description="wire encodings to try")
    strategy: Literal["exhaustive", "latency_ordered"] = Field(
        "latency_ordered", description="exhaustive: estimate every candidate; latency_ordered: only those "
                                       "faster than the chosen one")
    model: str = Field("split_cnn", description="registered model (an nn.Sequential) for the real estimator")
    dataset: str = Field("digits", description="registered dataset for the real estimator")
    epochs: int = Field(30, ge=1, description="epochs to train the base model (real estimator)")
    finetune_epochs: int = Field(10, ge=1, description="epochs to fine-tune each bottleneck model end to end")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the training set held out for the search")

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise UsageError(f"invalid NascSettings: {exc}") from None

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
    """Accuracy (a fraction) of a candidate; ``reference`` is the unsplit model's accuracy."""

    reference: float

    def __call__(self, candidate: Candidate) -> float: ...


def feasible(accuracy: float, reference: float, max_drop: float) -> bool:
    """True when ``accuracy`` is at most ``max_drop`` percentage points below ``reference``."""
    return 100.0 * (reference - accuracy) <= max_drop + 1e-9


@dataclass
class _Run:
    estimator: Estimator
    max_drop: float
    progress: Callable[[dict], None] | None = None
    accuracy: dict[Candidate, float] = field(default_factory=dict)

    def __call__(self, cost: CandidateCost) -> float:
        cand = cost.candidate
        if cand not in self.accuracy:
            self.accuracy[cand] = float(self.estimator(cand))
            if self.progress is not None:
                self.progress({"candidate": cand.label, "latency_ms": 1e3 * cost.latency_s,
                               "accuracy": self.accuracy[cand],
                               "feasible": self.ok(cand), "evaluated": len(self.accuracy)})
        return self.accuracy[cand]

    def ok(self, cand: Candidate) -> bool:
        return feasible(self.accuracy[cand], self.estimator.reference, self.max_drop)

    @property
    def trained(self) -> int:
        return len({(c.cut, c.bottleneck) for c in self.accuracy if c.bottleneck is not None})


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


class FinetuneEstimator:
    """Trains ``settings.model`` on ``settings.dataset`` once; per (cut, k) fine-tunes a bottleneck.

    ``reference`` and ``__call__`` use the validation split; ``test_accuracy`` the test split.
    Fine-tuned models are cached, so the estimator can be shared by several searches (``trainings``
    counts the fine-tunes actually run).
    """

    def __init__(self, settings: NascSettings, seed: int):
        from meshlearn.data import load_dataset
        from meshlearn.data.datasets import stratified_split
        from meshlearn.models import build_model

        self.settings, self.seed = settings, int(seed)
        train_set, test_set = load_dataset(settings.dataset, seed=self.seed)
        tr, va = stratified_split(train_set.y, settings.val_fraction, self.seed)
        t = torch.from_numpy
        self.x, self.y = t(train_set.x[tr]), t(train_set.y[tr])
        self.data = {"val": (t(train_set.x[va]), train_set.y[va]), "test": (t(test_set.x), test_set.y)}
        self.input_shape = tuple(train_set.input_shape)
        self.base = build_model(settings.model, self.input_shape, train_set.num_classes, seed=self.seed)
        fit_classifier(self.base, self.x, self.y, epochs=settings.epochs, seed=self.seed, lr=2e-3)
        self.points = split_points(self.base, self.input_shape)
        self._models: dict[tuple[str, int | None], torch.nn.Module] = {}
        self.trainings = 0
        self.reference = self._plain("val")
        self.test_reference = self._plain("test")

    def _plain(self, split: str) -> float:
        x, y = self.data[split]
        with torch.no_grad():
            return float((self.base(x).argmax(1).numpy() == y).mean())

    def split_model(self, cut: str, k: int | None):
        key = (cut, k)
        if key not in self._models:
            model = split_model(self.base, cut, self.input_shape, bottleneck=k, seed=self.seed)
            if k is not None:
                fit_classifier(model, self.x, self.y, epochs=self.settings.finetune_epochs,
                               seed=self.seed + 7919 * (k + 1), lr=1e-3)
                self.trainings += 1
            self._models[key] = model
        return self._models[key]

    def accuracy(self, candidate: Candidate, split: str = "val") -> float:
        model = self.split_model(candidate.cut, candidate.bottleneck)
        x, y = self.data[split]
        spec = channel_spec(self.settings, candidate.quant)
        with torch.no_grad():
            z = model.encode(x).numpy()
            _, _, packets = packet_plan(model.cut_numel, spec)
            z_hat, _ = simulate_batch(z, spec, np.ones((len(z), packets), bool))
            pred = model.decode(torch.from_numpy(z_hat)).argmax(1).numpy()
        return float((pred == y).mean())

    def test_accuracy(self, candidate: Candidate) -> float:
        return self.accuracy(candidate, "test")

    def __call__(self, candidate: Candidate) -> float:
        return self.accuracy(candidate, "val")


def build_estimator(settings: NascSettings, seed: int) -> FinetuneEstimator:
    """The real estimator for ``settings`` (trains the base model now)."""
    return FinetuneEstimator(settings, seed)


def _describe(cost: CandidateCost, run: _Run, estimator: Any) -> dict:
    cand = cost.candidate
    out = {"candidate": cand.label, "cut": cand.cut, "bottleneck": cand.bottleneck, "quant": cand.quant,
           "cut_shape": list(cost.cut_shape), "wire_bytes": cost.wire_bytes,
           "head_flops": cost.head_flops, "tail_flops": cost.tail_flops,
           "latency_s": cost.latency_s, "device_s": cost.latency.device_s, "transfer_s": cost.latency.transfer_s,
           "server_s": cost.latency.server_s, "accuracy": run.accuracy[cand],
           "drop_pts": 100.0 * (estimator.reference - run.accuracy[cand])}
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
    (chosen / baseline), ``candidates`` (space size), ``evaluated``, ``trained`` (distinct
    bottleneck fine-tunes this search needed), ``reference_accuracy``, ``strategy``, ``seconds``.
    """
    t0 = time.perf_counter()
    if estimator is None:
        estimator = build_estimator(settings, seed)
    if points is None:
        points = getattr(estimator, "points", None)
        if points is None:
            raise UsageError("pass points= (split_points of the model) with a stub estimator")
    costs = candidate_costs(points, settings)
    run = _Run(estimator, settings.max_drop, progress)
    strategy = exhaustive_search if settings.strategy == "exhaustive" else latency_ordered_search
    best = strategy(costs, run)
    evaluated, trained = len(run.accuracy), run.trained
    fixed = [c for c in costs if c.candidate.bottleneck is None and c.candidate.quant == "fp32"]
    if not fixed:
        raise UsageError("the space has no fixed split (bottleneck None with fp32) to compare against; "
                         "include None in bottlenecks and fp32 in quants")
    baseline = _order(fixed)[0]
    run(baseline)
    result = {
        "strategy": settings.strategy, "seed": int(seed), "reference_accuracy": float(estimator.reference),
        "max_drop": settings.max_drop, "candidates": len(costs), "evaluated": evaluated, "trained": trained,
        "chosen": None if best is None else _describe(best, run, estimator),
        "baseline": _describe(baseline, run, estimator),
        "latency_ratio": None if best is None else best.latency_s / baseline.latency_s,
    }
    if hasattr(estimator, "test_reference"):
        result["reference_test_accuracy"] = float(estimator.test_reference)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result
