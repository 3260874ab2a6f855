"""Distributed Skip Mesh List experiments: settings, the converged hierarchy, ``simulate_dsml``.

The protocol lives in ``node.py`` (one member: parents found by skip graph walks each round,
partial aggregates with fail-over / splitting / custody). This module runs it at scale:

* every arm (failover, split, tree, flat) sees the same members, the same membership vectors and
  the same crashes: a ``fail_fraction`` of the live members crashes at a uniformly random moment
  of each round (the root excepted with ``protect_root``);
* between rounds the skip graph is reset to the converged structure over the live members, i.e.
  repair is assumed finished (``test_skipgraph`` checks that the protocol's repair gets there);
* the root's tally of every round is audited: delivery ratio of live members' updates, exactness
  (Σ weight × value == the root's total), duplicates (a leaf counted more than once);
* maintenance: ``maintenance_ops`` joins and leaves run through the skip graph protocol on the
  same number of members, counting messages per join / leave.

``dsml_parents`` computes the hierarchy directly from heights (tests compare it with the walks).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from meshlearn.net.link import LinkSpec
from meshlearn.overlay.dsml.node import MODES, UNIT, DsmlNode, DsmlTiming, dsml_height
from meshlearn.overlay.simnet import crash_at, overlay_simulator
from meshlearn.overlay import studies
from meshlearn.overlay.skipgraph.node import (
    Peer, SkipGraphNode, SkipGraphSettings, SkipGraphView, bootstrap_skipgraph, random_mvecs,
)
from meshlearn.study import Study

__all__ = ["DsmlSettings", "simulate_dsml", "dsml_parents", "measure_maintenance"]

_FIRST_ROUND_S = 1.0
_DISCOVERY = ("sg.walk", "sg.found", "sg.walk_end", "dsml.adopt")


class DsmlSettings(BaseModel):
    """One DSML aggregation experiment (``meshlearn overlay sim`` with a [dsml] table)."""

    model_config = ConfigDict(extra="forbid")

    nodes: int = Field(10_000, ge=2, le=1_000_000, description="skip graph members; each is a leaf with one update "
                                                               "per round and possibly an aggregator")
    rounds: int = Field(5, ge=1, le=10_000, description="aggregation rounds per arm")
    arms: list[Literal["failover", "split", "tree", "flat"]] = Field(
        default_factory=lambda: list(MODES), min_length=1,
        description="failover (primary parent, copy to the secondary on timeout), split (half the weight to each "
                    "parent), tree (single parent), flat (everyone to the root); all see the same crashes")
    fail_fraction: float = Field(0.01, ge=0, lt=1, description="share of live members crashing at a uniformly "
                                                                "random moment of each round")
    recover: bool = Field(True, description="crashed members come back (rejoin) before the next round; false: they "
                                            "stay down and the population shrinks")
    protect_root: bool = Field(True, description="the root never crashes (it plays the FL server that owns the model)")
    custody: bool = Field(True, description="failover: a member keeps its aggregate until the parent's own "
                                            "aggregate was accepted above, probing the parent meanwhile")
    round_s: float = Field(2.0, gt=0, description="round length; the root closes the round at its end")
    train_s: float = Field(1.0, gt=0, description="local work: a member's update is ready after train_s × U(0.5, 1.5)")
    level_slot_s: float = Field(0.02, gt=0, description="a height-h member forwards at 1.5·train_s + (h+1)·slot at "
                                                         "the latest, even if some children are missing")
    ack_timeout_s: float = Field(0.01, gt=0, description="failover: no ACK (or probe answer) in this long means the "
                                                          "parent is dead")
    probe_s: float = Field(0.2, gt=0, description="custody: interval between probes of the parent holding my data")
    latency_s: float = Field(0.0005, ge=0, description="one-way link latency")
    jitter_s: float = Field(0.0005, ge=0, description="uniform extra delay in [0, jitter_s)")
    bandwidth_bps: float = Field(1e9, gt=0, description="access link rate of every member")
    datagrams: bool = Field(True, description="packets travel as datagrams (the protocol's own timeouts cover "
                                              "loss); on the lossless default link delivery is the same as reliable "
                                              "sends and the simulation several times cheaper")
    leaf_size: int = Field(4, ge=1, le=64, description="skip graph level-0 neighbours kept per side")
    maintenance_ops: int = Field(20, ge=0, le=10_000, description="protocol joins and as many leaves measured for "
                                                                   "maintenance messages (0: skip)")

    @model_validator(mode="after")
    def _round_fits(self) -> "DsmlSettings":
        if 1.5 * self.train_s + 2 * self.level_slot_s >= self.round_s:
            raise ValueError(f"round_s = {self.round_s} leaves no time to aggregate after the slowest update "
                             f"(1.5 × train_s = {1.5 * self.train_s}); raise round_s or lower train_s")
        return self


# ----- the hierarchy, computed directly ---------------------------------------------------------
def dsml_parents(keys: list[int], mvecs: dict[int, int]) -> tuple[dict[int, list[int]], int]:
    """Parents (primary first) of every member and the root, from heights alone.

    Parents of a height-h member: the nearest strictly taller members on each side; members
    without any use their nearest left member of equal height (the top list); the root has none.
    """
    order = sorted(keys)
    height = {k: dsml_height(mvecs[k]) for k in order}
    left_taller = _nearest_taller(order, height)
    right_taller = _nearest_taller(order[::-1], height)
    parents: dict[int, list[int]] = {}
    last_at: dict[int, int] = {}
    root = None
    for k in order:
        ps = [p for p in (left_taller[k], right_taller[k]) if p is not None]
        if not ps:
            top_left = last_at.get(height[k])
            ps = [] if top_left is None else [top_left]
            root = k if top_left is None else root
        parents[k] = ps
        last_at[height[k]] = k
    return parents, root


def _nearest_taller(order: list[int], height: dict[int, int]) -> dict[int, int | None]:
    stack: list[int] = []
    out: dict[int, int | None] = {}
    for k in order:
        while stack and height[stack[-1]] <= height[k]:
            stack.pop()
        out[k] = stack[-1] if stack else None
        stack.append(k)
    return out


# ----- the shared plan: members, crashes, converged views ---------------------------------------
@dataclass
class _Plan:
    settings: DsmlSettings
    ids: list[str]
    mvecs: list[int]
    root: int
    alive: list[set[int]]  # per round (index r - 1): members alive at its start
    crashes: list[list[tuple[int, float]]]  # per round: (member, crash time)
    _views: dict[int, SkipGraphView] = field(default_factory=dict)

    def start(self, number: int) -> float:
        return _FIRST_ROUND_S + (number - 1) * self.settings.round_s

    def view(self, number: int) -> SkipGraphView:
        if number not in self._views:
            self._views.clear()
            members = [(Peer(k, self.ids[k]), self.mvecs[k]) for k in sorted(self.alive[number - 1])]
            self._views[number] = bootstrap_skipgraph(members, leaf_size=self.settings.leaf_size)
        return self._views[number]


def _plan(s: DsmlSettings, seed: int) -> _Plan:
    rng = np.random.default_rng([seed, 0xD5])
    width = len(str(s.nodes - 1))
    ids = [f"m{k:0{width}d}" for k in range(s.nodes)]
    mvecs = random_mvecs(s.nodes, rng)
    _, root = dsml_parents(list(range(s.nodes)), dict(enumerate(mvecs)))
    alive, crashes, current = [], [], set(range(s.nodes))
    for number in range(1, s.rounds + 1):
        alive.append(set(current))
        candidates = np.array(sorted(current - ({root} if s.protect_root else set())))
        k = min(len(candidates), int(round(s.fail_fraction * len(current))))
        victims = rng.choice(candidates, size=k, replace=False) if k else []
        t0 = _FIRST_ROUND_S + (number - 1) * s.round_s
        times = t0 + rng.uniform(0.0, s.round_s - 0.005, size=k)
        crashes.append([(int(v), float(t)) for v, t in zip(victims, times)])
        if not s.recover:
            current -= {int(v) for v in victims}
    return _Plan(s, ids, mvecs, root, alive, crashes)


# ----- one arm ----------------------------------------------------------------------------------
def _run_arm(plan: _Plan, arm: str, seed: int, tick: Callable[[], None]) -> tuple[dict, list[dict]]:
    s = plan.settings
    timing = DsmlTiming(mode=arm, rounds=s.rounds, first_round_s=_FIRST_ROUND_S, round_s=s.round_s,
                        train_s=s.train_s, level_slot_s=s.level_slot_s, ack_timeout_s=s.ack_timeout_s,
                        probe_s=s.probe_s, custody=s.custody, datagrams=s.datagrams)
    nodes = [DsmlNode(plan.ids[k], k, plan.mvecs[k], timing, flat_root=plan.ids[plan.root])
             for k in range(s.nodes)]
    link = LinkSpec(latency_s=s.latency_s, jitter_s=s.jitter_s, bandwidth_bps=s.bandwidth_bps)
    sim = overlay_simulator(nodes, link=link, seed=seed)
    sent_marks: list[Counter] = []

    def rewire(number: int) -> None:
        sent_marks.append(_sent(nodes))
        if number <= s.rounds and arm != "flat":
            view = plan.view(number)
            for k in plan.alive[number - 1]:
                nodes[k].load(view)

    for number in range(1, s.rounds + 2):
        sim.loop.call_at(plan.start(number) - 1e-3, rewire, number)
    for number, crashes in enumerate(plan.crashes, start=1):
        back = plan.start(number + 1) - 2e-3 if s.recover else None
        for k, t in crashes:
            crash_at(sim, plan.ids[k], t, recover_at=back)
    wall = time.perf_counter()
    rows = []
    for number in range(1, s.rounds + 1):
        sim.run(until=plan.start(number + 1) + 1e-3)
        rows.append(_audit(plan, nodes, number, arm, sent_marks))
        tick()
    summary = _summarize(rows, nodes)
    summary["wall_s"] = round(time.perf_counter() - wall, 2)
    return summary, rows


def _sent(nodes: list[SkipGraphNode]) -> Counter:
    total: Counter = Counter()
    for n in nodes:
        total.update(n.sent)
    return total


def _audit(plan: _Plan, nodes: list[DsmlNode], number: int, arm: str, marks: list[Counter]) -> dict:
    """One round's row: what the root got, checked against every member's own record."""
    tally = nodes[plan.root].tallies.get(number)
    weights = tally.weights if tally else {}
    crashed = {k for k, _ in plan.crashes[number - 1]}
    live = plan.alive[number - 1] - crashed
    delivered = sum(weights.get(k, 0) for k in live) / UNIT
    truth = sum(w * nodes[k].values[number] for k, w in weights.items())
    latency = [tally.arrivals[k] - nodes[k].ready_at[number] for k in weights] if tally else []
    sent = marks[number] - marks[number - 1]
    return {
        "arm": arm, "round": number, "live": len(live), "crashed": len(crashed),
        "delivery_ratio": delivered / len(live) if live else 1.0,
        "complete_ratio": sum(weights.get(k, 0) == UNIT for k in live) / len(live) if live else 1.0,
        "crashed_delivered": sum(weights.get(k, 0) for k in crashed) / UNIT,
        "duplicates": sum(w > UNIT for w in weights.values()),
        "exact": bool(tally) and tally.total == truth,
        "suppressed": tally.suppressed if tally else 0,
        "conflicts": tally.conflicts if tally else 0,
        "latency_p50_s": float(np.percentile(latency, 50)) if latency else None,
        "latency_p99_s": float(np.percentile(latency, 99)) if latency else None,
        "latency_max_s": max(latency) if latency else None,
        "messages": sum(sent.values()),
        "aggregate_msgs": sent["dsml.aggregate"],
        "control_msgs": sent["dsml.ack"],
        "discovery_msgs": sum(sent[k] for k in _DISCOVERY),
        "peak_fan_in": max((n.fan_in.get(number, 0) for n in nodes), default=0),
    }


def _summarize(rows: list[dict], nodes: list[DsmlNode]) -> dict:
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    counts: Counter = Counter()
    for n in nodes:
        counts.update(n.counts)
    lat = [r[k] for r in rows for k in ("latency_p50_s",) if r[k] is not None]
    return {
        "delivery_ratio": mean("delivery_ratio"),
        "delivery_ratio_min": min(r["delivery_ratio"] for r in rows),
        "complete_ratio": mean("complete_ratio"),
        "duplicates": sum(r["duplicates"] for r in rows),
        "exact": all(r["exact"] for r in rows),
        "suppressed": sum(r["suppressed"] for r in rows),
        "conflicts": sum(r["conflicts"] for r in rows),
        "latency_p50_s": float(np.median(lat)) if lat else None,
        "latency_p99_s": max((r["latency_p99_s"] for r in rows if r["latency_p99_s"] is not None), default=None),
        "latency_max_s": max((r["latency_max_s"] for r in rows if r["latency_max_s"] is not None), default=None),
        "messages_per_round": mean("messages"),
        "aggregate_msgs_per_round": mean("aggregate_msgs"),
        "control_msgs_per_round": mean("control_msgs"),
        "discovery_msgs_per_round": mean("discovery_msgs"),
        "peak_fan_in": max(r["peak_fan_in"] for r in rows),
        "failovers": counts["failovers"],
        "gave_up": counts["gave_up"],  # no parent answered in time (the data may still have arrived)
        "no_parent": counts["no_parent"],
    }


# ----- maintenance ------------------------------------------------------------------------------
def measure_maintenance(members: int, ops: int, *, seed: int, leaf_size: int = 4) -> dict:
    """Messages per protocol join and per leave on a converged skip graph of ``members``."""
    rng = np.random.default_rng([seed, 0x3A])
    mvecs = random_mvecs(members + ops, rng)
    settings = SkipGraphSettings(leaf_size=leaf_size, keepalive_s=None)
    old = [SkipGraphNode(f"s{i}", 2 * i, mvecs[i], settings=settings) for i in range(members)]
    join_keys = rng.choice(members, size=ops, replace=False) * 2 + 1
    introducers = rng.integers(0, members, size=ops)
    gap = 0.2  # one operation at a time (an insert at 10,000 members takes ~30 ms)
    new = [SkipGraphNode(f"j{j}", int(join_keys[j]), mvecs[members + j], introducer=f"s{introducers[j]}",
                         join_delay_s=gap * (j + 1), settings=settings) for j in range(ops)]
    view = bootstrap_skipgraph([(n.me, n.mvec) for n in old], leaf_size=leaf_size)
    for n in old:
        n.load(view)
    sim = overlay_simulator([*old, *new], seed=seed)
    sim.run(until=gap * (ops + 2))
    join_msgs = sum(sum(n.sent.values()) for n in old + new)
    leavers = [old[int(i)] for i in rng.choice(members, size=ops, replace=False)]
    start = gap * (ops + 3)
    for j, n in enumerate(leavers):
        sim.loop.call_at(start + gap * j, lambda n: n.leave(sim.context(n.node_id)), n)
    sim.run(until=start + gap * (ops + 2))
    leave_msgs = sum(sum(n.sent.values()) for n in old + new) - join_msgs
    stay = [n for n in old + new if n.active]
    final = bootstrap_skipgraph([(n.me, n.mvec) for n in stay], leaf_size=leaf_size)
    wrong = sum(n.snapshot()[:2] != (final.left[n.key], final.right[n.key]) for n in stay)
    return {"members": members, "joins": ops, "msgs_per_join": join_msgs / max(ops, 1),
            "leaves": ops, "msgs_per_leave": leave_msgs / max(ops, 1), "joined": sum(n.joined for n in new),
            "members_with_wrong_pointers": wrong}


# ----- the entry point --------------------------------------------------------------------------
def simulate_dsml(settings: DsmlSettings, *, seed: int, progress: Callable[[float], None] | None = None) -> dict:
    """Run every arm of ``settings`` on the same members and crashes; summary metrics + per-round rows."""
    plan = _plan(settings, seed)
    steps = len(settings.arms) * settings.rounds + (1 if settings.maintenance_ops else 0)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0] / steps)

    arms, rows = {}, []
    for arm in settings.arms:
        arms[arm], arm_rows = _run_arm(plan, arm, seed, tick)
        rows += arm_rows
    maintenance = None
    if settings.maintenance_ops:
        maintenance = measure_maintenance(settings.nodes, settings.maintenance_ops, seed=seed,
                                          leaf_size=settings.leaf_size)
        tick()
    heights = [dsml_height(m) for m in plan.mvecs]
    return {"nodes": settings.nodes, "rounds": settings.rounds, "fail_fraction": settings.fail_fraction,
            "root": plan.ids[plan.root], "max_height": max(heights), "arms": arms, "maintenance": maintenance,
            "rows": rows}


studies.register(Study("dsml", "Distributed Skip Mesh List aggregation under failures: delivery, exactness, "
                       "duplicates", DsmlSettings, simulate_dsml))
