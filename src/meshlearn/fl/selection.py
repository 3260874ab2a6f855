"""Client selection: which of the joined clients train in a round. Small objects with no I/O.

``FLServer`` talks to a selector through three calls:

    telemetry(client, info)          resources the client reported in fl.join (the FedCS "resource
                                     request"). The values are nominal and may be stale.
    select(candidates, k, now, rng)  returns up to k of the candidates, in candidate order.
    feedback(round, results)         one ClientFeedback per selected client, after the round closed.

Built-ins, in ``SELECTORS``:

* ``random``: k clients uniformly at random. It makes the same rng draws the server has always made.
* ``fedcs``: deadline-aware greedy on the reported resources (Nishio & Yonetani, ICC 2019). Each
  step adds the client that increases the estimated round time (download + train + upload) least,
  and selection stops at k clients or when the next client would pass the deadline.
* ``mab``: a bandit on each client's observed round time instead of its reports (after Yoshida et
  al., 2020). The time statistics are discounted so that they follow resources that fluctuate.
  By default it ranks clients by optimistic training throughput (samples per second of the
  lower confidence bound on round time) among those that fit the deadline; ``objective="time"``
  is the FedCS greedy on the optimistic times (the k fastest).
* ``oort``: Oort's training selector (Lai et al., OSDI 2021; SymbioticLab/Oort ``oort/oort.py``).
  It scores clients by statistical utility times a system-speed penalty, adds a staleness bonus,
  explores ε-greedy, and paces the preferred round duration.

All randomness comes from the ``rng`` passed to ``select``. Selectors never read a clock.

Settings: each selector takes its own pydantic settings model whole (``FedCSSettings``,
``MABSettings``, ``OortSettings``: the ``[selection.<name>]`` sections of an experiment), plus the
server's round deadline and the ``CostModel`` of one round (``cost_model``). ``SelectionSettings``
is the ``[selection]`` section: which selector, its sections, and fluctuating device resources.
Every selector is built the same way: ``SELECTORS.get(name)(settings, deadline_s=..., cost=...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meshlearn.errors import UsageError
from meshlearn.learn.tasks import TRAIN_FLOPS_FACTOR
from meshlearn.net.dynamics import DynamicsSettings
from meshlearn.registry import Registry

__all__ = ["SELECTORS", "ClientFeedback", "CostModel", "Selector", "RandomSelector", "FedCSSelector",
           "MABSelector", "OortSelector", "FedCSSettings", "MABSettings", "OortSettings", "SelectionSettings",
           "deadline_greedy", "make_selector", "clean_telemetry", "cost_model"]

TELEMETRY_KEYS = ("flops", "up_bps", "down_bps", "num_samples")  # what FLClient reports in fl.join


# ----- settings ------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FedCSSettings(_Strict):
    """FedCS (Nishio & Yonetani, ICC 2019): deadline greedy on the resources clients report."""

    request_fraction: float = Field(0.3, gt=0, le=1, description="share of clients asked for resources each "
                                                                 "round (the paper's C); the greedy picks among them. "
                                                                 "1 = always the same fastest k (little data diversity)")
    uploads: Literal["parallel", "sequential"] = Field(
        "parallel", description="time model: parallel = own uplink per client (as the simulator does), "
                                "sequential = updates share one uplink in turn (the paper's model)")


class MABSettings(_Strict):
    """A bandit on observed round times under the round deadline (after Yoshida et al. 2020)."""

    objective: Literal["throughput", "time"] = Field(
        "throughput", description="rank clients that fit the deadline by optimistic samples per second "
                                  "(throughput) or by optimistic round time alone (time: the FedCS greedy)")
    time_floor: float = Field(0.05, gt=0, le=1, description="throughput: optimistic times are floored at this "
                                                            "share of the deadline")

    exploration: float = Field(0.05, ge=0, description="UCB width c in mean τ − c·sqrt(ln N / n), τ = time/deadline; "
                                                        "an explored straggler costs the whole round, keep it small")
    discount: float = Field(0.99, gt=0, le=1, description="per-round decay of the time statistics; < 1 follows "
                                                          "fluctuating resources, 1 = plain UCB")
    miss_factor: float = Field(2.0, ge=1, description="a missed deadline counts as a round time of miss_factor × "
                                                      "deadline")


class OortSettings(_Strict):
    """Oort (Lai et al., OSDI 2021): utility × speed penalty, ε-greedy, pacer. Defaults follow the spec."""

    alpha: float = Field(2.0, ge=0, description="round penalty: utility × (T/t)^alpha for clients slower than T")
    epsilon: float = Field(0.9, ge=0, le=1, description="initial exploration share ε")
    epsilon_decay: float = Field(0.95, gt=0, le=1, description="ε is multiplied by this every round")
    epsilon_min: float = Field(0.2, ge=0, le=1, description="floor of ε while unexplored clients remain")
    cut_off: float = Field(0.7, ge=0, le=1, description="exploit only clients scoring >= cut_off × the k-th best")
    clip: float = Field(0.98, gt=0, le=1, description="rewards are clipped at this quantile")
    staleness: float = Field(0.1, ge=0, description="staleness bonus sqrt(staleness · ln R / L)")
    percentile: float = Field(30.0, gt=0, le=100, description="preferred duration T = this percentile of known "
                                                              "client durations (100 = no penalty)")
    pacer_step: int = Field(20, ge=1, description="the pacer looks at the utility every this many rounds")
    pacer_delta: float = Field(5.0, ge=0, description="percentile points the pacer moves T by")
    sample_window: float = Field(5.0, ge=1, description="exploration samples from the top sample_window × n "
                                                        "unexplored clients by data size")
    miss_factor: float = Field(2.0, ge=1, description="a missed deadline counts as a duration of miss_factor × "
                                                      "deadline")

    @model_validator(mode="after")
    def _ordered(self) -> "OortSettings":
        if self.epsilon_min > self.epsilon:
            raise ValueError(f"epsilon_min ({self.epsilon_min}) must not exceed epsilon ({self.epsilon})")
        return self


class SelectionSettings(_Strict):
    """Which clients train each round (``[selection]``), and how device resources fluctuate."""

    selector: str = Field("random", description="client selector: random, fedcs, mab, oort (or a plugin name)")
    fedcs: FedCSSettings = Field(default_factory=FedCSSettings, description="fedcs parameters")
    mab: MABSettings = Field(default_factory=MABSettings, description="mab parameters")
    oort: OortSettings = Field(default_factory=OortSettings, description="oort parameters")
    dynamics: DynamicsSettings = Field(default_factory=DynamicsSettings, description="fluctuating resources")

    @field_validator("selector")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in SELECTORS.names():
            raise ValueError(f"unknown selector {value!r} (valid: {', '.join(SELECTORS.names())})")
        return value

    @model_validator(mode="after")
    def _sections_used(self) -> "SelectionSettings":
        for name, field in type(self).model_fields.items():
            if name in SELECTORS and name != self.selector and getattr(self, name) != field.default_factory():
                raise ValueError(f"[selection.{name}] is set but selection.selector = {self.selector!r}: those "
                                 f"settings would be ignored; drop them or set selector = {name!r}")
        return self

    def make_selector(self, *, deadline_s: float, cost: "CostModel | None" = None) -> "Selector":
        """The configured selector for a server whose round deadline is ``deadline_s``; FedCS needs ``cost``."""
        return make_selector(self.selector, getattr(self, self.selector, None), deadline_s=deadline_s, cost=cost)


def cost_model(params: Mapping[str, np.ndarray], forward_flops_per_sample: float, epochs: int,
               overhead_s: float = 0.0) -> "CostModel":
    """The CostModel of one FedAvg round: fp32 parameters down and up, 3 × forward FLOPs per sample per epoch."""
    bits = 8.0 * sum(np.asarray(p).nbytes for p in params.values())
    return CostModel(bits, TRAIN_FLOPS_FACTOR * float(forward_flops_per_sample) * epochs, overhead_s)


@dataclass(frozen=True)
class ClientFeedback:
    """How one selected client did in a round.

    ``duration`` is the virtual time in seconds from the server sending fl.train to the update
    arriving. It is None when the update missed the deadline, and then the other fields are
    empty too. ``sq_loss`` is the mean of the squared per-sample training losses that Oort uses.
    It is None when the client did not report it.
    """

    duration: float | None
    num_samples: int = 0
    loss: float | None = None
    sq_loss: float | None = None


def clean_telemetry(info: Mapping[str, Any]) -> dict[str, float]:
    """The known keys of a peer's report whose values are positive finite numbers. Others are dropped."""
    out = {}
    for key in TELEMETRY_KEYS:
        value = info.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf:
            out[key] = float(value)
    return out


@dataclass(frozen=True)
class CostModel:
    """What one round asks of a client. It turns reported resources into estimated times."""

    model_bits: float  # bits of the model sent down and of the update sent up
    train_flops_per_sample: float  # FLOPs of one round's local training per local sample
    overhead_s: float = 0.0  # fixed extra per round: latencies, framing

    def times(self, info: Mapping[str, float]) -> tuple[float, float] | None:
        """(download + train, upload) seconds, or None when the report lacks a key."""
        if any(key not in info for key in TELEMETRY_KEYS):
            return None
        ready = self.model_bits / info["down_bps"] + info["num_samples"] * self.train_flops_per_sample / info["flops"]
        return ready + self.overhead_s, self.model_bits / info["up_bps"]


class Selector:
    """Base class. It ignores telemetry and feedback; subclasses implement ``select``.

    A selector is built as ``cls(settings, *, deadline_s, cost)``: ``settings`` is its own section
    (None for selectors without one), ``deadline_s`` the server's round deadline, ``cost`` the
    ``CostModel`` of one round (None when unknown).
    """

    def __init__(self, settings: BaseModel | None = None, *, deadline_s: float | None = None,
                 cost: CostModel | None = None):
        self.deadline_s, self.cost = deadline_s, cost

    def telemetry(self, client: str, info: Mapping[str, Any]) -> None:
        """Remember what ``client`` reported about its resources."""

    def select(self, candidates: list[str], k: int, now: float, rng: np.random.Generator) -> list[str]:
        raise NotImplementedError

    def feedback(self, round: int, results: Mapping[str, ClientFeedback]) -> None:
        """Learn from a closed round. ``results`` has one entry per selected client."""


SELECTORS: Registry[Callable[..., Selector]] = Registry("selectors")


def make_selector(name: str, settings: BaseModel | None = None, *, deadline_s: float,
                  cost: CostModel | None = None) -> Selector:
    """Build the selector registered as ``name``: its settings section, the round deadline, the round's cost."""
    return SELECTORS.get(name)(settings, deadline_s=deadline_s, cost=cost)


def in_order(picked: Iterable[str], candidates: list[str]) -> list[str]:
    """``picked`` sorted the way ``candidates`` are."""
    chosen = set(picked)
    return [c for c in candidates if c in chosen]


@SELECTORS.register("random")
class RandomSelector(Selector):
    """k clients uniformly at random, without replacement."""

    def select(self, candidates: list[str], k: int, now: float, rng: np.random.Generator) -> list[str]:
        picked = rng.choice(len(candidates), size=min(k, len(candidates)), replace=False)
        return [candidates[i] for i in sorted(picked)]


# ----- FedCS and the deadline greedy ---------------------------------------------------------
def round_time(items: list[tuple[float, float]], uploads: str) -> float:
    """Round time for clients given as (ready, upload) seconds, where ready means the update is
    trained. With "parallel" every client has its own uplink. With "sequential" the updates take
    turns on one shared uplink, in the order they become ready."""
    if uploads == "parallel":
        return max((r + u for r, u in items), default=0.0)
    end = 0.0
    for ready, up in sorted(items):
        end = max(end, ready) + up
    return end


def deadline_greedy(estimates: list[tuple[str, float, float]], k: int, deadline_s: float,
                    uploads: str = "parallel") -> list[str]:
    """FedCS's greedy. ``estimates`` holds (client, ready, upload) tuples. At each step it adds the
    client whose addition gives the smallest round time, and it stops at ``k`` clients or when
    the round would pass ``deadline_s``. When no client fits, it returns the fastest one so that
    the round can still run. Ties go to the earlier entry."""
    if uploads == "parallel":  # adding the smallest total is the greedy step; sort once
        ranked = sorted(estimates, key=lambda e: e[1] + e[2])
        fits = [c for c, r, u in ranked[:k] if r + u <= deadline_s]
        return fits or [c for c, _, _ in ranked[:1]]
    names: list[str] = []
    chosen: list[tuple[float, float]] = []
    left = list(estimates)
    while left and len(names) < k:
        times = [round_time([*chosen, (r, u)], uploads) for _, r, u in left]
        best = int(np.argmin(times))
        if times[best] > deadline_s and names:
            break
        client, r, u = left.pop(best)
        chosen.append((r, u))
        names.append(client)
        if times[best] > deadline_s:  # nothing fits: the fastest alone
            break
    return names


@SELECTORS.register("fedcs")
class FedCSSelector(Selector):
    """Deadline greedy on reported resources.

    Each round only a random ``request_fraction`` of the candidates (at least k) is asked for resources
    (FedCS step 2). Clients that never reported are left out, and when none has reported the selector
    falls back to random. The reports come from join time, so under fluctuating resources they
    go stale. That staleness is the weakness the MAB selector addresses.
    """

    def __init__(self, settings: "FedCSSettings | None" = None, *, deadline_s: float, cost: CostModel | None = None):
        if cost is None:
            raise UsageError("the fedcs selector estimates round times from reported resources: pass cost=cost_model(...)")
        if not deadline_s > 0:
            raise UsageError(f"fedcs needs a positive round deadline, got {deadline_s}")
        super().__init__(settings, deadline_s=deadline_s, cost=cost)
        self.settings = settings or FedCSSettings()
        self.request_fraction, self.uploads = self.settings.request_fraction, self.settings.uploads
        self.reports: dict[str, dict[str, float]] = {}

    def telemetry(self, client: str, info: Mapping[str, Any]) -> None:
        self.reports[client] = clean_telemetry(info)

    def select(self, candidates: list[str], k: int, now: float, rng: np.random.Generator) -> list[str]:
        asked = candidates
        if self.request_fraction < 1:
            n = min(len(candidates), max(k, math.ceil(self.request_fraction * len(candidates))))
            asked = [candidates[i] for i in sorted(rng.choice(len(candidates), size=n, replace=False))]
        estimates = []
        for c in asked:
            t = self.cost.times(self.reports.get(c, {}))
            if t is not None:
                estimates.append((c, *t))
        if not estimates:
            return RandomSelector().select(candidates, k, now, rng)
        return in_order(deadline_greedy(estimates, k, self.deadline_s, self.uploads), candidates)


# ----- MAB: UCB on observed round times --------------------------------------------------------
@SELECTORS.register("mab")
class MABSelector(Selector):
    """A bandit on observed round times, with FedCS's deadline as the constraint.

    A duration is stored as τ = duration / deadline. A missed deadline counts as ``miss_factor``.
    A client's optimistic round time is ``(mean τ − c·sqrt(ln N / n)) · deadline``, where n is the
    client's discounted count and N the total discounted count. Each round every count and sum is
    multiplied by ``discount``, so old observations fade and a client left out for a while
    becomes worth trying again. Clients never observed go first, in random order (UCB plays every
    arm once).

    ``objective`` says what the observed clients are ranked by, among those whose optimistic time
    fits the deadline:

    * ``"throughput"`` (default): samples per optimistic second, ``num_samples / max(t, floor)``,
      the reward-per-cost index of budgeted bandits. FedAvg weights an update by its sample count,
      so a round's progress grows with the samples it aggregates, and a client with much data is
      worth a somewhat longer round. The sample count is the client's report at join, then what it
      trained on in its last round; unknown counts are 1. ``floor`` is ``time_floor`` × deadline: it
      keeps the index finite when the confidence bound goes below zero.
    * ``"time"``: the k fastest (the FedCS greedy: the most clients within the deadline).

    When no observed client fits, the fastest one is chosen so that the round can still run.
    """

    def __init__(self, settings: "MABSettings | None" = None, *, deadline_s: float, cost: CostModel | None = None):
        if not deadline_s > 0:
            raise UsageError(f"mab needs a positive round deadline, got {deadline_s}")
        super().__init__(settings, deadline_s=deadline_s, cost=cost)
        s = self.settings = settings or MABSettings()
        self.c, self.discount, self.miss_factor = s.exploration, s.discount, s.miss_factor
        self.objective, self.time_floor = s.objective, s.time_floor
        self.count: dict[str, float] = {}
        self.total: dict[str, float] = {}
        self.samples: dict[str, float] = {}

    def telemetry(self, client: str, info: Mapping[str, Any]) -> None:
        samples = clean_telemetry(info).get("num_samples")  # data size is reported; resources are not trusted
        if samples is not None:
            self.samples[client] = samples

    def estimate(self, client: str, big_n: float | None = None) -> float:
        """Optimistic round time of ``client`` in seconds; -inf when it was never observed."""
        n = self.count.get(client, 0.0)
        if n <= 1e-9:
            return -math.inf
        big_n = max(sum(self.count.values()) if big_n is None else big_n, math.e)
        return (self.total[client] / n - self.c * math.sqrt(math.log(big_n) / n)) * self.deadline_s

    def select(self, candidates: list[str], k: int, now: float, rng: np.random.Generator) -> list[str]:
        order = rng.permutation(len(candidates))  # random tie-break among the never observed
        big_n = sum(self.count.values())
        estimates = [(candidates[i], self.estimate(candidates[i], big_n), 0.0) for i in order]
        if self.objective == "time":
            return in_order(deadline_greedy(estimates, k, self.deadline_s), candidates)
        unseen = [c for c, t, _ in estimates if t == -math.inf]
        seen = [(c, t) for c, t, _ in estimates if t != -math.inf]
        fits = [(c, t) for c, t in seen if t <= self.deadline_s] or sorted(seen, key=lambda e: e[1])[:1]
        floor = self.time_floor * self.deadline_s
        ranked = sorted(fits, key=lambda e: -self.samples.get(e[0], 1.0) / max(e[1], floor))  # stable: ties keep order
        return in_order(unseen[:k] + [c for c, _ in ranked[: max(0, k - len(unseen))]], candidates)

    def feedback(self, round: int, results: Mapping[str, ClientFeedback]) -> None:
        for client in self.count:
            self.count[client] *= self.discount
            self.total[client] *= self.discount
        for client, fb in results.items():
            tau = self.miss_factor if fb.duration is None else fb.duration / self.deadline_s
            self.count[client] = self.count.get(client, 0.0) + 1.0
            self.total[client] = self.total.get(client, 0.0) + tau
            if fb.duration is not None and fb.num_samples > 0:
                self.samples[client] = float(fb.num_samples)


# ----- Oort ------------------------------------------------------------------------------------
@dataclass
class _Arm:
    reward: float  # statistical utility of the last participation; the data size until then
    duration: float | None  # last observed round time (or the estimate from the reports)
    last_round: int = 0  # L_i: last round the client took part in
    count: int = 0  # rounds taken part in; 0 means unexplored


@SELECTORS.register("oort")
class OortSelector(Selector):
    """Oort's training selector.

    Utility of an explored client: U = clip(reward) normalised to [0, 1], plus the staleness
    bonus sqrt(staleness · ln R / L). The reward is |B|·sqrt(mean squared per-sample loss), clipped
    at the ``clip`` quantile. A client slower than the preferred duration T is multiplied by
    (T/t)^alpha. T is the ``percentile``-th percentile of the known durations (100 turns it off).
    Every ``pacer_step`` rounds the pacer raises the percentile by ``pacer_delta`` points when the
    exploited utility went flat, and lowers it when the utility changed sharply. Exploitation
    draws (1 − ε)·k clients, with probability ∝ utility, from those scoring above ``cut_off`` times
    the k-th best. Exploration draws the rest from the unexplored clients, weighted by data size
    and the speed penalty. ε starts at ``epsilon`` and decays by ``epsilon_decay`` each round down
    to ``epsilon_min``; it drops to 0 once every client has been explored, as in Oort's code.
    A missed deadline counts as a duration of ``miss_factor`` · deadline.
    """

    def __init__(self, settings: "OortSettings | None" = None, *, deadline_s: float | None = None,
                 cost: CostModel | None = None):
        super().__init__(settings, deadline_s=deadline_s, cost=cost)
        s = self.settings = settings or OortSettings()
        self.alpha, self.epsilon, self.epsilon_decay, self.epsilon_min = s.alpha, s.epsilon, s.epsilon_decay, s.epsilon_min
        self.cut_off, self.clip, self.staleness = s.cut_off, s.clip, s.staleness
        self.percentile, self.pacer_step, self.pacer_delta = s.percentile, s.pacer_step, s.pacer_delta
        self.sample_window, self.miss_factor = s.sample_window, s.miss_factor
        self.arms: dict[str, _Arm] = {}
        self.round = 0
        self.exploited: list[str] = []
        self.succeeded: set[str] = set()
        self.exploit_history: list[float] = []

    def telemetry(self, client: str, info: Mapping[str, Any]) -> None:
        report = clean_telemetry(info)
        times = self.cost.times(report) if self.cost else None
        arm = self.arms.setdefault(client, _Arm(report.get("num_samples", 1.0), None))
        if arm.count == 0:
            arm.reward, arm.duration = report.get("num_samples", 1.0), None if times is None else sum(times)

    # ----- selection -------------------------------------------------------------------
    def select(self, candidates: list[str], k: int, now: float, rng: np.random.Generator) -> list[str]:
        self.round += 1
        for c in candidates:
            self.arms.setdefault(c, _Arm(1.0, None))
        self._pace()
        pref = self.preferred_duration()
        scores = self.scores([c for c in candidates if self.arms[c].count > 0], pref)
        self.epsilon = max(self.epsilon * self.epsilon_decay, self.epsilon_min)
        picked = self._exploit(scores, min(int(k * (1 - self.epsilon)), len(scores)), rng)
        self.exploited = list(picked)
        unexplored = [c for c in candidates if self.arms[c].count == 0]
        if unexplored:
            picked += self._explore(unexplored, min(len(unexplored), k - len(picked)), pref, rng)
        else:
            self.epsilon = self.epsilon_min = 0.0
        taken = set(picked)
        rest = [c for c in candidates if c not in taken]
        fill = min(k - len(picked), len(rest))
        if fill > 0:
            picked += [rest[i] for i in rng.choice(len(rest), size=fill, replace=False)]
        return in_order(picked, candidates)

    def preferred_duration(self) -> float:
        """T: the pacer's percentile of all known client durations (inf when it is at 100)."""
        known = sorted(a.duration for a in self.arms.values() if a.duration is not None)
        if self.percentile >= 100 or not known:
            return math.inf
        return known[min(int(len(known) * self.percentile / 100), len(known) - 1)]

    def scores(self, explored: list[str], pref: float) -> dict[str, float]:
        """Utility of each explored client: normalised clipped reward + staleness, speed-penalised."""
        if not explored:
            return {}
        rewards = sorted(self.arms[c].reward for c in explored)
        clip_at = rewards[min(int(len(rewards) * self.clip), len(rewards) - 1)]
        low = rewards[0] * 0.999
        span = max(rewards[-1] - low, 1e-4)
        out = {}
        for c in explored:
            arm = self.arms[c]
            bonus = math.sqrt(self.staleness * math.log(max(self.round, 1)) / max(arm.last_round, 1))
            out[c] = ((min(arm.reward, clip_at) - low) / span + bonus) * self._penalty(arm.duration, pref)
        return out

    def _penalty(self, duration: float | None, pref: float) -> float:
        if duration is None or duration <= pref:
            return 1.0
        return (pref / max(duration, 1e-4)) ** self.alpha

    def _exploit(self, scores: dict[str, float], n: int, rng: np.random.Generator) -> list[str]:
        if n <= 0:
            return []
        ranked = sorted(scores, key=lambda c: -scores[c])
        floor = scores[ranked[min(n, len(ranked) - 1)]] * self.cut_off
        pool = [c for c in ranked if scores[c] >= floor]
        return _weighted_sample(pool, [scores[c] for c in pool], n, rng)

    def _explore(self, unexplored: list[str], n: int, pref: float, rng: np.random.Generator) -> list[str]:
        if n <= 0:
            return []
        weight = {c: self.arms[c].reward * self._penalty(self.arms[c].duration, pref) for c in unexplored}
        ranked = sorted(unexplored, key=lambda c: -weight[c])[: max(n, int(self.sample_window * n))]
        return _weighted_sample(ranked, [weight[c] for c in ranked], n, rng)

    def _pace(self) -> None:
        """Oort's pacer: widen T when the exploited utility is flat, narrow it when it jumps."""
        done = [self.arms[c].reward for c in self.exploited if c in self.succeeded]
        self.exploit_history.append(sum(done) / (len(done) + 1e-4))
        self.succeeded = set()
        step = self.pacer_step
        if self.round < 2 * step or self.round % step:
            return
        before, recent = sum(self.exploit_history[-2 * step : -step]), sum(self.exploit_history[-step:])
        if abs(recent - before) <= 0.1 * before:
            self.percentile = min(100.0, self.percentile + self.pacer_delta)
        elif abs(recent - before) >= 5 * before:
            self.percentile = max(self.pacer_delta, self.percentile - self.pacer_delta)

    # ----- feedback --------------------------------------------------------------------
    def feedback(self, round: int, results: Mapping[str, ClientFeedback]) -> None:
        self.round = max(self.round, round)
        for client, fb in results.items():
            arm = self.arms.setdefault(client, _Arm(1.0, None))
            arm.last_round, arm.count = round, arm.count + 1
            if fb.duration is None:  # missed the deadline: slow now, utility unknown
                arm.duration = self.miss_factor * self.deadline_s if self.deadline_s else arm.duration
                arm.reward = arm.reward if arm.count > 1 else 0.0
                continue
            arm.duration = fb.duration
            arm.reward = self.utility(fb, arm.reward)
            self.succeeded.add(client)

    @staticmethod
    def utility(fb: ClientFeedback, old: float) -> float:
        """|B| · sqrt(mean squared loss); the mean loss stands in when sq_loss is missing."""
        sq = fb.sq_loss if fb.sq_loss is not None else (None if fb.loss is None else fb.loss**2)
        if sq is None or not math.isfinite(sq) or fb.num_samples <= 0:
            return old
        return fb.num_samples * math.sqrt(max(sq, 0.0))


def _weighted_sample(items: list[str], weights: list[float], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct items drawn with probability ∝ weight (weights floored at 1e-6)."""
    w = np.maximum(np.asarray(weights, dtype=float), 1e-6)
    idx = rng.choice(len(items), size=min(n, len(items)), replace=False, p=w / w.sum())
    return [items[i] for i in idx]
