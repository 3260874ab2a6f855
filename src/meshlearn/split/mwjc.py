"""MWJC: a UCB bandit that jointly picks WLAN link parameters and the split model variant.

techniques-nishio.md §6. An **arm** is (PHY rate, MAC retry limit, model variant). Each round one
split-inference tensor crosses the lossy WLAN of ``wlan.py`` with the arm's rate and retry limit;
the tail runs on what arrived with the arm's model variant. Fast rates with few retries are quick
but lossy; a COMtune variant (fine-tuned with split-layer dropout p) keeps its accuracy under loss,
which is what lets the controller use the faster, less reliable link.

Model variants are **accuracy curves**: accuracy as a function of the fraction of the tensor lost,
linear between given (loss, accuracy) points. ``PLACEHOLDER_CURVES`` are made-up shapes (plain
model collapses with loss; tuned at p = 0.3/0.5/0.7 flatter, slightly lower at 0 loss) until the
COMtune work measures real ones; pass measured points through ``MwjcSettings.curves``.

Reward of a round (``outcome``):
* ``expected`` (default): the variant's accuracy at the *sampled* delivered fraction, i.e. the
  expected correctness of one inference given what this transfer delivered, − λ·latency. The
  randomness the controller can act on (which packets got through, how long it took) stays; the
  Bernoulli coin of one image's correctness, which no link or model choice changes, is left out.
* ``bernoulli``: 1 if one inference is correct (drawn with that accuracy), else 0, − λ·latency.

Policy: UCB1 (Auer, Cesa-Bianchi & Fischer 2002) with bonus c · B · sqrt(2 ln n / n_i); n, n_i
are (optionally discounted, Garivier & Moulines 2011) play counts. ``reward_scale`` sets B:
``none`` uses B = 1 on raw rewards; ``range`` maps rewards to [0, 1] with bounds known before
the run (best curve accuracy at the smallest possible latency, worst accuracy at the largest);
``std`` sets B to the pooled empirical standard deviation of the rewards (UCB for σ-sub-Gaussian
rewards, Lattimore & Szepesvári 2020 ch. 7, with σ estimated from the run itself).

Feedback (``feedback``): with ``arm`` a round teaches the bandit the played arm's reward only.
With ``link`` (default) it also teaches the rewards of every *other model variant on the same
link*: the tensor that arrived (its delivered fraction) and the latency do not depend on the
variant, and with tail-only COMtune the server holds every tail variant, so it can score them all
on what arrived (``variant_rewards``). Variants are then compared on common transfers, which
removes the channel noise from their differences; UCB's ln n still counts rounds.

``evaluate_arms`` finds each arm's expected reward by Monte Carlo (the ground truth),
``simulate_mwjc`` runs the bandit and scores it against that truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, NamedTuple, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meshlearn.errors import UsageError
from meshlearn.split.wlan import RATES_MBPS, SnrProcess, WlanLink, latency_bounds_s, sample_transfers

__all__ = [
    "AccuracyCurve",
    "load_curves",
    "PLACEHOLDER_CURVES",
    "Arm",
    "MwjcSettings",
    "Ucb",
    "make_arms",
    "play_arm",
    "evaluate_arms",
    "reward_bounds",
    "simulate_mwjc",
]


# ----- model variants as accuracy-vs-loss curves -----------------------------------------------
@dataclass(frozen=True)
class AccuracyCurve:
    """Accuracy of a model variant against the fraction of the split tensor lost (0 … 1).

    ``loss`` must rise strictly from 0 to 1; accuracy is interpolated linearly in between.
    """

    name: str
    loss: tuple[float, ...]
    accuracy: tuple[float, ...]
    placeholder: bool = False

    def __post_init__(self) -> None:
        loss, acc = np.asarray(self.loss, float), np.asarray(self.accuracy, float)
        if loss.ndim != 1 or loss.shape != acc.shape or loss.size < 2:
            raise UsageError(f"curve {self.name!r}: give at least two (loss, accuracy) points of equal count")
        if loss[0] != 0.0 or loss[-1] != 1.0 or np.any(np.diff(loss) <= 0):
            raise UsageError(f"curve {self.name!r}: loss points must rise strictly from 0.0 to 1.0, got {list(loss)}")
        if np.any((acc < 0) | (acc > 1)):
            raise UsageError(f"curve {self.name!r}: accuracies must lie in [0, 1], got {list(acc)}")

    @classmethod
    def from_points(cls, name: str, points: Sequence[tuple[float, float]],
                    placeholder: bool = False) -> "AccuracyCurve":
        """Build from ``[(loss, accuracy), ...]`` (e.g. a measured COMtune curve)."""
        pts = sorted((float(x), float(y)) for x, y in points)
        return cls(name, tuple(x for x, _ in pts), tuple(y for _, y in pts), placeholder)

    def __call__(self, loss_rate):
        out = np.interp(loss_rate, self.loss, self.accuracy)
        return float(out) if np.ndim(out) == 0 else out


def load_curves(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Measured curves from a JSON file, ``{"curves": {name: [[loss, acc], ...]}}`` or the bare
    mapping (what ``meshlearn split curve --out`` and ``bench_comtune.py --curves-out`` write)."""
    try:
        data = json.loads(Path(path).read_text())
        raw = data.get("curves", data)
        return {str(n): [(float(x), float(y)) for x, y in pts] for n, pts in raw.items()}
    except FileNotFoundError:
        raise UsageError(f"curves file {path} does not exist; write one with `meshlearn split curve --out`") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise UsageError(f"{path} is not a curves file ({{'curves': {{name: [[loss, acc], ...]}}}}): {exc}") from None


def _placeholder(name: str, points: list[tuple[float, float]]) -> AccuracyCurve:
    return AccuracyCurve.from_points(name, points, placeholder=True)


# PLACEHOLDERS, not measurements: shapes in the spirit of techniques-nishio.md §5 (the plain model
# collapses beyond ~30 % loss; COMtune at p keeps near-clean accuracy up to about p). Replace with
# the measured COMtune curves (MwjcSettings.curves) once they exist.
PLACEHOLDER_CURVES: dict[str, AccuracyCurve] = {
    "plain": _placeholder("plain", [(0, .990), (.1, .960), (.2, .880), (.3, .720), (.5, .400), (.7, .200),
                                    (.9, .110), (1, .100)]),
    "comtune_p0.3": _placeholder("comtune_p0.3", [(0, .986), (.1, .985), (.2, .982), (.3, .975), (.5, .900),
                                                  (.7, .650), (.9, .250), (1, .100)]),
    "comtune_p0.5": _placeholder("comtune_p0.5", [(0, .982), (.3, .978), (.5, .970), (.6, .955), (.7, .930),
                                                  (.8, .820), (.9, .500), (1, .100)]),
    "comtune_p0.7": _placeholder("comtune_p0.7", [(0, .975), (.5, .968), (.7, .955), (.8, .920), (.9, .750),
                                                  (1, .100)]),
}


# ----- arms and settings -------------------------------------------------------------------------
class Arm(NamedTuple):
    """One joint choice: PHY rate (Mbit/s), MAC retry limit, model variant name."""

    rate_mbps: float
    retry_limit: int
    variant: str

    @property
    def label(self) -> str:
        return f"{self.rate_mbps:g}M/r{self.retry_limit}/{self.variant}"


class MwjcSettings(BaseModel):
    """One MWJC experiment: arm set, WLAN channel, tensor, reward weighting and bandit policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rates_mbps: list[float] = Field(list(RATES_MBPS), min_length=1,
                                    description="PHY rates (Mbit/s) the controller may pick; 802.11a/g OFDM rates")
    retry_limits: list[int] = Field([0, 1, 3, 7], min_length=1,
                                    description="MAC retry limits the controller may pick (0 = no retransmission)")
    variants: list[str] = Field(list(PLACEHOLDER_CURVES), min_length=1,
                                description="model variants the controller may pick, by curve name")
    curves: dict[str, list[tuple[float, float]]] = Field(
        {}, description="measured accuracy curves {name: [(loss, accuracy), ...]}; override or add to the "
                        "placeholder curves of the same name")
    tensor_bytes: int = Field(12_544, ge=1, description="bytes of the split tensor per inference (default: "
                              "7x7x128 fp16, the COMtune split of techniques-nishio.md §5)")
    mtu: int = Field(1500, ge=64, le=2310, description="IP MTU; each datagram carries mtu - 28 tensor bytes")
    per_slope_per_db: float = Field(1.5, gt=0, description="steepness of the logistic PER-vs-SNR waterfall (1/dB)")
    snr_db: float = Field(20.0, description="mean SNR of the link (dB); at 20 dB 24 Mbit/s is clean, 36 Mbit/s "
                          "loses ~46 % of 1.5 kB frames per attempt, 48 and 54 Mbit/s lose nearly all")
    snr_std_db: float = Field(0.0, ge=0, description="stationary std of the Gauss-Markov SNR (dB); 0 = fixed SNR")
    snr_correlation: float = Field(0.9, ge=0, lt=1, description="round-to-round correlation of the SNR process")
    lam_per_s: float = Field(50.0, ge=0, description="latency weight: reward = accuracy - lam_per_s * latency (s); "
                             "50/s makes 1 ms of latency cost 5 accuracy points")
    outcome: Literal["expected", "bernoulli"] = Field(
        "expected", description="reward's accuracy term: accuracy at the sampled delivered fraction, or one "
                                "Bernoulli correct/incorrect inference")
    rounds: int = Field(2000, ge=2, description="bandit rounds (one inference each)")
    exploration: float = Field(1.0, ge=0, description="UCB exploration constant c in c * B * sqrt(2 ln n / n_i)")
    reward_scale: Literal["none", "range", "std"] = Field(
        "std", description="B: none = 1 on raw rewards; range = rewards mapped to [0, 1] by a-priori bounds; "
                           "std = pooled empirical reward std")
    discount: float = Field(1.0, gt=0, le=1, description="discounted UCB factor per round (1 = plain UCB1); "
                                                         "below 1 it tracks a drifting SNR")
    feedback: Literal["arm", "link"] = Field(
        "link", description="what one round teaches the bandit: the played arm's reward only (arm), or the "
                           "reward of every model variant on the same transfer (link; the server holds every "
                           "tail variant, so it can score them all on the tensor that arrived)")
    eval_samples: int = Field(20_000, ge=100, description="Monte Carlo transfers per arm for the exhaustive "
                                                          "evaluation that names the best arm")

    @field_validator("rates_mbps")
    @classmethod
    def _known_rates(cls, rates: list[float]) -> list[float]:
        bad = [r for r in rates if float(r) not in RATES_MBPS]
        if bad:
            raise UsageError(f"unknown PHY rates {bad}; use 802.11a/g rates {list(RATES_MBPS)}")
        return rates

    @field_validator("retry_limits")
    @classmethod
    def _retry_range(cls, limits: list[int]) -> list[int]:
        if any(not 0 <= r <= 15 for r in limits):
            raise UsageError(f"retry limits must lie in [0, 15], got {limits}")
        return limits

    @model_validator(mode="after")
    def _variants_known(self) -> "MwjcSettings":
        for name, points in self.curves.items():
            AccuracyCurve.from_points(name, points)  # raises on a malformed curve
        missing = [v for v in self.variants if v not in PLACEHOLDER_CURVES and v not in self.curves]
        if missing:
            raise UsageError(f"variants {missing} have no curve; add them to `curves` or pick from "
                             f"{sorted(set(PLACEHOLDER_CURVES) | set(self.curves))}")
        if len(set(self.arms())) != len(self.arms()):
            raise UsageError("rates_mbps, retry_limits and variants must not repeat entries")
        return self

    def curve_map(self) -> dict[str, AccuracyCurve]:
        """The curve of every variant in play: measured ones where given, else the placeholders."""
        measured = {name: AccuracyCurve.from_points(name, pts) for name, pts in self.curves.items()}
        return {v: measured.get(v) or PLACEHOLDER_CURVES[v] for v in self.variants}

    def arms(self) -> list[Arm]:
        return make_arms(self.rates_mbps, self.retry_limits, self.variants)

    def link(self, arm: Arm) -> WlanLink:
        return WlanLink(arm.rate_mbps, arm.retry_limit, mtu=self.mtu, slope_per_db=self.per_slope_per_db)

    def snr_process(self) -> SnrProcess:
        return SnrProcess(self.snr_db, self.snr_std_db, self.snr_correlation)


def make_arms(rates: Sequence[float], retry_limits: Sequence[int], variants: Sequence[str]) -> list[Arm]:
    """The full product, in a fixed order (rate, then retry limit, then variant)."""
    return [Arm(float(r), int(k), v) for r in rates for k in retry_limits for v in variants]


# ----- the bandit ---------------------------------------------------------------------------------
class Ucb:
    """UCB1 over ``n_arms`` arms as a pure object: ``select(rng) -> arm``, ``update(arm, reward)``.

    Index = mean_i + c · B · sqrt(2 ln n / n_i). Every arm is played once first (in random order).
    ``scale`` is B, a float, or ``"std"`` for the pooled empirical reward std (B = ``fallback``
    until there are at least ``n_arms`` repeat observations to estimate it from). ``discount`` γ < 1
    multiplies all counts and sums before each update (discounted UCB).

    ``update`` takes one arm or several (side observations: one round's outcome also tells the
    rewards other arms would have earned); n in the bonus counts *rounds* (discounted alike), so
    side observations shrink n_i's bonus but do not inflate ln n.
    """

    def __init__(self, n_arms: int, *, exploration: float = 1.0, scale: float | str = 1.0,
                 discount: float = 1.0, fallback: float = 1.0):
        if n_arms < 1 or exploration < 0 or not 0 < discount <= 1:
            raise UsageError("Ucb needs n_arms >= 1, exploration >= 0 and 0 < discount <= 1")
        if scale != "std" and not (isinstance(scale, (int, float)) and scale > 0):
            raise UsageError(f"Ucb scale must be a positive float or 'std', got {scale!r}")
        self.c, self.scale, self.discount, self.fallback = float(exploration), scale, float(discount), fallback
        self.count = np.zeros(n_arms)
        self.total = np.zeros(n_arms)
        self.square = np.zeros(n_arms)
        self.rounds = 0.0

    @property
    def means(self) -> np.ndarray:
        return np.divide(self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0)

    def bonus_scale(self) -> float:
        """B: the fixed scale, or the pooled within-arm standard deviation of rewards seen."""
        if self.scale != "std":
            return float(self.scale)
        played = self.count > 0
        dof = self.count[played].sum() - played.sum()
        if dof < self.count.size:
            return self.fallback
        ss = (self.square - self.total * self.means).clip(min=0).sum()
        return max(float(np.sqrt(ss / dof)), 1e-9)

    def select(self, rng: np.random.Generator) -> int:
        unplayed = np.flatnonzero(self.count == 0)
        if unplayed.size:
            return int(rng.choice(unplayed))
        n = self.rounds
        bonus = self.c * self.bonus_scale() * np.sqrt(2.0 * np.log(max(n, 1.0)) / self.count)
        index = self.means + bonus
        best = np.flatnonzero(index >= index.max() - 1e-12)
        return int(best[0] if best.size == 1 else rng.choice(best))

    def update(self, arm, reward) -> None:
        """One round: ``arm`` (an index or an index array) earned ``reward`` (a float or an array)."""
        if self.discount < 1.0:
            for arr in (self.count, self.total, self.square):
                arr *= self.discount
        self.rounds = self.rounds * self.discount + 1.0
        arm, reward = np.atleast_1d(arm), np.atleast_1d(np.asarray(reward, float))
        np.add.at(self.count, arm, 1.0)
        np.add.at(self.total, arm, reward)
        np.add.at(self.square, arm, reward * reward)


# ----- playing an arm and ground truth ---------------------------------------------------------------
def play_arm(settings: MwjcSettings, arm: Arm, curve: AccuracyCurve, snr_db, rng: np.random.Generator,
             size: int | None = None) -> tuple:
    """One round (or ``size`` rounds) of ``arm``: ``(reward, accuracy, latency_s)``."""
    tr = sample_transfers(settings.link(arm), settings.tensor_bytes, snr_db, rng, size)
    reward, accuracy = variant_rewards(settings, [curve], tr, rng)
    if size is None:
        return float(reward[0]), float(accuracy[0]), float(tr.latency_s)
    return reward[0], accuracy[0], tr.latency_s


def variant_rewards(settings: MwjcSettings, curves: Sequence[AccuracyCurve], transfers,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(reward, accuracy)``, each shaped ``(len(curves), ...)``: what every variant would have
    earned on the same ``transfers`` (same delivered fraction, same latency)."""
    loss = 1.0 - np.asarray(transfers.delivered_fraction)
    accuracy = np.stack([np.asarray(c(loss), float) for c in curves])
    if settings.outcome == "bernoulli":
        accuracy = (rng.random(accuracy.shape) < accuracy).astype(float)
    return accuracy - settings.lam_per_s * np.asarray(transfers.latency_s), accuracy


def evaluate_arms(settings: MwjcSettings, rng: np.random.Generator) -> dict:
    """Each arm's expected reward by Monte Carlo over ``eval_samples`` transfers (SNR drawn from
    its stationary law): ``{"arms", "mean", "stderr", "accuracy", "latency_s", "best"}``."""
    arms, curves, snr = settings.arms(), settings.curve_map(), settings.snr_process()
    n = settings.eval_samples
    rows = []
    for arm in arms:
        snrs = snr.stationary(rng, n) if settings.snr_std_db > 0 else settings.snr_db
        reward, acc, lat = play_arm(settings, arm, curves[arm.variant], snrs, rng, n)
        rows.append((reward.mean(), reward.std(ddof=1) / np.sqrt(n), np.mean(acc), np.mean(lat)))
    mean, stderr, acc, lat = (np.array(col) for col in zip(*rows))
    return {"arms": arms, "mean": mean, "stderr": stderr, "accuracy": acc, "latency_s": lat,
            "best": int(np.argmax(mean))}


def reward_bounds(settings: MwjcSettings) -> tuple[float, float]:
    """Rewards any arm can produce lie in [lo, hi], known without simulating (for ``range`` scaling)."""
    curves = settings.curve_map().values()
    best_acc = max(max(c.accuracy) for c in curves)
    worst_acc = 0.0 if settings.outcome == "bernoulli" else min(min(c.accuracy) for c in curves)
    bounds = [latency_bounds_s(settings.link(arm), settings.tensor_bytes) for arm in settings.arms()]
    fastest, slowest = min(b[0] for b in bounds), max(b[1] for b in bounds)
    hi = (1.0 if settings.outcome == "bernoulli" else best_acc) - settings.lam_per_s * fastest
    return worst_acc - settings.lam_per_s * slowest, hi


# ----- the experiment ---------------------------------------------------------------------------------
def _policy(settings: MwjcSettings, n_arms: int) -> tuple[Ucb, Callable[[float], float]]:
    """The bandit and the map from raw reward to what it is fed."""
    if settings.reward_scale == "range":
        lo, hi = reward_bounds(settings)
        bandit = Ucb(n_arms, exploration=settings.exploration, scale=1.0, discount=settings.discount)
        return bandit, lambda r: (r - lo) / (hi - lo)
    scale: float | str = "std" if settings.reward_scale == "std" else 1.0
    bandit = Ucb(n_arms, exploration=settings.exploration, scale=scale, discount=settings.discount)
    return bandit, lambda r: r


def simulate_mwjc(settings: MwjcSettings, *, seed: int,
                  progress: Callable[[int, int], None] | None = None) -> dict:
    """Evaluate every arm exhaustively, run the bandit for ``settings.rounds`` rounds, score it.

    Returns the best arm and its margin over the runner-up, the best-arm pick rate over the last
    half of the rounds, pseudo-regret (sum of expected-reward gaps of the arms played), mean
    reward / accuracy / latency, and histograms of chosen arms (all rounds and last half).
    """
    eval_rng, bandit_rng, channel_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    truth = evaluate_arms(settings, eval_rng)
    arms, curves, snr = truth["arms"], settings.curve_map(), settings.snr_process()
    bandit, feed = _policy(settings, len(arms))
    chosen = np.empty(settings.rounds, dtype=np.int64)
    outcome = np.empty((settings.rounds, 3))
    observed = _observed_arms(arms, settings.feedback)
    for t in range(settings.rounds):
        k = bandit.select(bandit_rng)
        tr = sample_transfers(settings.link(arms[k]), settings.tensor_bytes, snr.step(channel_rng), channel_rng)
        reward, accuracy = variant_rewards(settings, [curves[arms[j].variant] for j in observed[k]], tr, channel_rng)
        bandit.update(observed[k], feed(reward))
        at = observed[k].index(k)
        outcome[t] = reward[at], accuracy[at], tr.latency_s
        chosen[t] = k
        if progress is not None:
            progress(t + 1, settings.rounds)
    report = _report(settings, truth, chosen, outcome)
    report["bonus_scale"] = bandit.bonus_scale()  # B at the end (in the units the bandit is fed)
    return report


def _observed_arms(arms: list[Arm], feedback: str) -> list[list[int]]:
    """Per arm, the arms whose reward one play of it reveals: itself (``arm``), or every variant on
    the same (rate, retry limit) link (``link``)."""
    if feedback == "arm":
        return [[i] for i in range(len(arms))]
    link = [(a.rate_mbps, a.retry_limit) for a in arms]
    return [[j for j in range(len(arms)) if link[j] == link[i]] for i in range(len(arms))]


def _histogram(arms: list[Arm], chosen: np.ndarray) -> dict[str, int]:
    counts = np.bincount(chosen, minlength=len(arms))
    order = np.argsort(-counts, kind="stable")
    return {arms[i].label: int(counts[i]) for i in order if counts[i] > 0}


def _report(settings: MwjcSettings, truth: dict, chosen: np.ndarray, outcome: np.ndarray) -> dict:
    arms, mean, best = truth["arms"], truth["mean"], truth["best"]
    half = chosen[settings.rounds // 2:]
    ranked = np.argsort(-mean)
    return {
        "arms": len(arms),
        "best_arm": arms[best].label,
        "best_expected_reward": float(mean[best]),
        "runner_up": arms[ranked[1]].label if len(arms) > 1 else None,
        "best_margin": float(mean[best] - mean[ranked[1]]) if len(arms) > 1 else None,
        "eval_stderr": float(truth["stderr"][best]),
        "top5": [{"arm": arms[i].label, "expected_reward": round(float(mean[i]), 5),
                  "accuracy": round(float(truth["accuracy"][i]), 4),
                  "latency_ms": round(1e3 * float(truth["latency_s"][i]), 3)} for i in ranked[:5]],
        "best_pick_rate_last_half": float(np.mean(half == best)),
        "regret": float(np.sum(mean[best] - mean[chosen])),
        "mean_reward": float(outcome[:, 0].mean()),
        "mean_accuracy": float(outcome[:, 1].mean()),
        "mean_latency_ms": float(1e3 * outcome[:, 2].mean()),
        "histogram": _histogram(arms, chosen),
        "histogram_last_half": _histogram(arms, half),
        "placeholder_curves": sorted(n for n, c in settings.curve_map().items() if c.placeholder),
    }
