"""The propagation experiment: one arm on a converged Chord ring under Poisson crashes (a driver).

What lives here: ``PropagationSettings`` (the protocol's ``PropagationConfig`` plus ring size,
duration and churn: one flat TOML table), ``simulate_propagation``, the simulation set-up (ring
from ``bootstrap_ring``, crash schedule that depends on the seed only, so every arm faces the same
failures), the ground truth taken just before each crash (which live nodes hold the failed node f:
its true backpointers; in the stateful arm also the will f's successor holds), and the per-failure
analysis after the run. The protocol itself is in ``chord/propagation.py``.

Per failure: first-detection delay; time until every live holder of f has dropped it (holders
that crash first are excluded; one never repaired makes the row ``None``); notifications sent;
precision and recall of each detector's estimate against the true holders, with the detector's
ring distance to f in nodes (``distance_bucket``).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from typing import Callable

import numpy as np
from pydantic import Field, model_validator

from meshlearn.errors import UsageError
from meshlearn.overlay.chord.node import bootstrap_ring, chord_id
from meshlearn.overlay.chord.packets import Peer
from meshlearn.overlay.chord.propagation import (
    PropagationConfig,
    PropagationNode,
    estimate_regions,
    estimated_targets,
)
from meshlearn.overlay.simnet import crash_at, overlay_simulator
from meshlearn.overlay import studies
from meshlearn.study import Study

__all__ = ["PropagationSettings", "simulate_propagation", "distance_bucket"]


class PropagationSettings(PropagationConfig):
    """One propagation experiment: the members' protocol settings, ring size, duration and churn."""

    nodes: int = Field(10_000, ge=8, description="ring size at the start")
    duration_s: float = Field(60.0, gt=0, description="simulated seconds")
    warmup_s: float = Field(5.0, ge=0, description="no crashes and no message counting before this time")
    drain_s: float = Field(15.0, ge=0, description="no crashes in the last drain_s seconds, so repairs can finish")
    churn_per_min: float = Field(0.01, ge=0, description="Poisson crash rate, as a fraction of `nodes` per minute")

    @model_validator(mode="after")
    def _time_for_crashes(self) -> "PropagationSettings":
        if self.warmup_s + self.drain_s >= self.duration_s:
            raise UsageError("warmup_s + drain_s must be below duration_s (no time left for crashes)")
        return self


def simulate_propagation(settings: PropagationSettings, *, seed: int,
                         progress: Callable[[float], None] | None = None) -> dict:
    """Run ``settings.arm`` on a converged ring under Poisson crashes; summary metrics plus per-failure rows.

    The ring, the crash times and the victims depend on ``seed`` only (not on the arm), so arms
    run with the same seed face the same failures. ``progress`` gets the fraction of simulated
    time done.
    """
    wall0 = time.perf_counter()
    peers = sorted(_unique_peers(settings.nodes, settings.bits))
    states = bootstrap_ring(peers, bits=settings.bits, successors=settings.successors)
    nodes = [PropagationNode(name, settings=settings, ring_id=ident, state=states[name]) for ident, name in peers]
    sim = overlay_simulator(nodes, seed=seed)
    exp = _Experiment(settings, sim, nodes, peers)
    for t, name in _crash_schedule(settings, [p[1] for p in peers], seed):
        sim.loop.call_at(t, exp.snapshot, name)  # scheduled first: runs before the crash at t
        crash_at(sim, name, t)
    sim.loop.call_at(settings.warmup_s, exp.count_start)
    steps = 100
    for k in range(1, steps + 1):
        sim.run(until=settings.duration_s * k / steps)
        if progress is not None:
            progress(k / steps)
    result = exp.summary()
    result.update(seed=seed, events=sim.loop.events_run, wall_s=round(time.perf_counter() - wall0, 2))
    return result


def _unique_peers(n: int, bits: int) -> list[Peer]:
    peers, seen, i = [], set(), 0
    while len(peers) < n:
        name = f"n{i}"
        ident = chord_id(name, bits)
        if ident not in seen:
            seen.add(ident)
            peers.append((ident, name))
        i += 1
    return peers


def _crash_schedule(s: PropagationSettings, names: list[str], seed: int) -> list[tuple[float, str]]:
    """Poisson crash times in [warmup, duration − drain) and distinct uniform victims."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC4A5]))
    rate, t, times = s.churn_per_min * s.nodes / 60.0, s.warmup_s, []
    end = s.duration_s - s.drain_s
    while rate > 0:
        t += rng.exponential(1.0 / rate)
        if t >= end or len(times) >= len(names) // 2:
            break
        times.append(float(t))
    victims = rng.permutation(len(names))[: len(times)]
    return [(t, names[v]) for t, v in zip(times, victims)]


def distance_bucket(ahead: int, ring_size: int, successors: int) -> str:
    """Label of a detector's distance to f: ``ahead`` nodes from it clockwise to f (1 = pred(f))."""
    if ahead == ring_size - 1:
        return "succ(f)"
    if ahead == 1:
        return "pred(f)"
    if ahead <= successors:
        return f"2..{successors}"
    if ahead <= 64:
        return f"{successors + 1}..64"
    return "65..1024" if ahead <= 1024 else ">1024"


class _Experiment:
    """Ground truth at each crash, counters, and the per-failure analysis after the run."""

    def __init__(self, settings: PropagationSettings, sim, nodes: list[PropagationNode], peers: list[Peer]):
        self.s, self.sim, self.nodes = settings, sim, nodes
        self.ids = [p[0] for p in peers]  # sorted
        self.by_name = {nd.node_id: nd for nd in nodes}
        self.name_of = {p[0]: p[1] for p in peers}
        self.crashed: dict[str, float] = {}
        self.truth: dict[str, dict] = {}
        self.count0: dict[str, int] = {}

    def snapshot(self, name: str) -> None:
        """Just before ``name`` crashes: who holds it (the true backpointers), and its will."""
        f = self.by_name[name]
        crashed = self.crashed
        holders = {nd.id for nd in self.nodes if name in nd.watch and nd.node_id not in crashed and nd.node_id != name}
        will = None
        if self.s.arm == "stateful":
            k = bisect_right(self.ids, f.id)
            while self.name_of[self.ids[k % len(self.ids)]] in self.crashed:
                k += 1
            entry = self.by_name[self.name_of[self.ids[k % len(self.ids)]]].wills.get(name)
            will = set() if entry is None else {p[0] for p in entry[1]}
        self.crashed[name] = self.sim.loop.now
        self.truth[name] = dict(t=self.sim.loop.now, holders=holders, will=will)

    def counters(self) -> dict[str, int]:
        out = dict(check=0, will=0, notify=0, repair=0)
        for nd in self.nodes:
            out["check"] += nd.n_probe + nd.n_ack
            out["will"] += nd.n_will
            out["notify"] += nd.n_notify
            out["repair"] += sum(nd.sent.values())
        out["bytes"] = sum(self.sim.network.bytes_sent.values())
        return out

    def count_start(self, _arg=None) -> None:
        self.count0 = self.counters()

    def summary(self) -> dict:
        s, end = self.s, self.sim.loop.now
        counts = {k: v - self.count0.get(k, 0) for k, v in self.counters().items()}
        node_s = len(self.nodes) * (end - s.warmup_s) - sum(end - t for t in self.crashed.values())
        detects, learns = self._events()
        rows, by_bucket = self._failures(detects, learns)
        delays = [r["detect_delay_s"] for r in rows if r["detect_delay_s"] is not None]
        repairs = [r["repair_delay_s"] for r in rows if r["repair_delay_s"] is not None]
        first = [r for r in rows if r["precision"] is not None]

        def per(key: str) -> float:
            return round(counts[key] / node_s, 4)

        out = dict(
            arm=s.arm, nodes=s.nodes, successors=s.successors, duration_s=s.duration_s,
            failures=len(rows), failures_detected=len(delays),
            detection_delay_s=_stats(delays), repair_delay_s=_stats(repairs),
            repair_incomplete=sum(r["repair_delay_s"] is None for r in rows),
            check_msgs_per_node_s=per("check"), maintenance_msgs_per_node_s=per("will"),
            failure_check_msgs_per_node_s=round((counts["check"] + counts["will"]) / node_s, 4),
            repair_msgs_per_node_s=per("repair"), bytes_per_node_s=round(counts["bytes"] / node_s, 1),
            notify_msgs_per_failure=round(counts["notify"] / max(1, len(rows)), 2),
            estimate_precision=_mean([r["precision"] for r in first]),
            estimate_recall=_mean([r["recall"] for r in first]),
            estimate_by_distance={k: dict(n=len(v), precision=_mean([x[0] for x in v]), recall=_mean([x[1] for x in v]))
                                  for k, v in _in_bucket_order(by_bucket, s.successors)},
            first_detector_by_distance=_tally([r["detector_bucket"] for r in rows if r["detector_bucket"]],
                                              s.successors),
            holders_self_detected=_mean([r["self_detected"] / r["holders"] for r in rows if r["holders"]]),
        )
        if s.arm == "stateful":
            out["will_precision"] = _mean([r["will_precision"] for r in rows])
            out["will_recall"] = _mean([r["will_recall"] for r in rows])
        out["rows"] = rows
        return out

    def _events(self) -> tuple[dict, dict]:
        detects: dict[int, list] = {}
        learns: dict[int, dict] = {}
        for row in self.sim.sink.rows:
            if row["key"] == "prop.detect":
                detects.setdefault(int(row["value"]), []).append((row["t_sim"], row["node"]))
            elif row["key"] == "prop.learn":
                learns.setdefault(int(row["value"]), {}).setdefault(row["node"], row["t_sim"])
        return detects, learns

    def _failures(self, detects: dict, learns: dict) -> tuple[list[dict], dict]:
        estimates: dict[int, list] = {}
        for nd in self.nodes:
            for t, fid, gap, exact in nd.estimates:
                estimates.setdefault(fid, []).append((t, nd.id, gap, exact))
        live = list(self.ids)
        rows, by_bucket = [], {}
        for name, truth in sorted(self.truth.items(), key=lambda kv: kv[1]["t"]):
            fid, t0 = self.by_name[name].id, truth["t"]
            ring_with_f = list(live)
            live.remove(fid)
            holders = truth["holders"]
            rows.append(self._row(name, fid, t0, holders, detects.get(fid, []), learns.get(fid, {}), truth["will"]))
            for t, det, gap, exact in sorted(estimates.get(fid, [])):
                regions = estimate_regions(fid, gap, self.s.bits, self.s.successors)
                targets = estimated_targets(live, fid, regions, self.s.bits)
                prec, rec = _precision_recall(targets, holders)
                bucket = distance_bucket(_ahead(ring_with_f, det, fid), len(ring_with_f), self.s.successors)
                by_bucket.setdefault(bucket, []).append((prec, rec))
                if det == rows[-1]["detector_id"] and rows[-1]["precision"] is None:
                    rows[-1].update(precision=prec, recall=rec, detector_bucket=bucket, exact_pred=exact)
        for r in rows:
            r.pop("detector_id")
        return rows, by_bucket

    def _row(self, name, fid, t0, holders, detects, learns, will) -> dict:
        first = min(((t, n) for t, n in detects if t >= t0), default=None)
        end, missing, last = self.sim.loop.now, 0, t0
        for h in holders:
            hname = self.name_of[h]
            t = learns.get(hname)
            if t is not None and t < self.crashed.get(hname, end + 1):
                last = max(last, t)
            elif hname not in self.crashed:
                missing += 1
        notify = sum(nd.notify_by_failed.get(fid, 0) for nd in self.nodes)
        self_detected = len({self.by_name[n].id for t, n in detects} & holders)
        row = dict(node=name, t_crash=round(t0, 4), holders=len(holders), self_detected=self_detected,
                   notify_msgs=notify,
                   detect_delay_s=None if first is None else round(first[0] - t0, 4),
                   detector=None if first is None else first[1],
                   detector_id=None if first is None else self.by_name[first[1]].id,
                   repair_delay_s=None if missing else round(last - t0, 4), unrepaired=missing,
                   precision=None, recall=None, detector_bucket=None, exact_pred=None)
        if will is not None:
            row["will_precision"], row["will_recall"] = _precision_recall(will, holders)
        return row


def _ahead(ring: list[int], detector: int, failed: int) -> int:
    """Nodes from ``detector`` clockwise to ``failed`` on ``ring`` (1 = pred(f), len − 1 = succ(f))."""
    return (bisect_right(ring, failed) - bisect_right(ring, detector)) % len(ring)


def _precision_recall(estimate: set[int], truth: set[int]) -> tuple[float, float]:
    hit = len(estimate & truth)
    return (hit / len(estimate) if estimate else 1.0), (hit / len(truth) if truth else 1.0)


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(float(np.mean(xs)), 4) if xs else None


def _stats(xs: list[float]) -> dict:
    if not xs:
        return dict(n=0, mean=None, p50=None, p99=None, max=None)
    a = np.asarray(xs)
    return dict(n=len(xs), mean=round(float(a.mean()), 4), p50=round(float(np.percentile(a, 50)), 4),
                p99=round(float(np.percentile(a, 99)), 4), max=round(float(a.max()), 4))


def _bucket_order(successors: int) -> list[str]:
    return ["pred(f)", f"2..{successors}", f"{successors + 1}..64", "65..1024", ">1024", "succ(f)"]


def _in_bucket_order(by_bucket: dict, successors: int) -> list[tuple]:
    return [(k, by_bucket[k]) for k in _bucket_order(successors) if k in by_bucket]


def _tally(labels, successors: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for label in labels:
        out[label] = out.get(label, 0) + 1
    return {k: out[k] for k in _bucket_order(successors) if k in out}


studies.register(Study("propagation", "failure-information propagation on a Chord ring: baseline, stateful or "
                       "stateless", PropagationSettings, simulate_propagation))
