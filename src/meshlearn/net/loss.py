"""Packet loss models: which packets of a stream a link drops.

A loss model is a small stateful object. ``sample(n, rng)`` returns a bool mask of the next ``n``
packets (True = lost) and keeps its state between calls, so a burst that starts at the end of one
call continues into the next. Models never own randomness: every draw uses the ``rng`` passed in.

Built-ins, registered in ``LOSS_MODELS``: ``none``, ``bernoulli``, ``gilbert_elliott`` and
``trace``. ``make_loss_model(spec)`` builds one from a config dict such as
``{"model": "gilbert_elliott", "loss": 0.05, "burst": 4}``.

A bad parameter raises ``ConfigError`` keyed on its name in that dict (``p``, ``burst``, ``path``,
``model``), so the config layer reports it as ``network.uplink_loss.p: ...``. Every value is
checked (type, range, a readable trace file) when the model is built, which config validation
does: nothing about a loss model is left to fail when a run is already going.
"""

from __future__ import annotations

import inspect
import math
import numbers
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from meshlearn.errors import ConfigError, DataError, UsageError
from meshlearn.registry import Registry

__all__ = [
    "LOSS_MODELS",
    "LossModel",
    "NoLoss",
    "BernoulliLoss",
    "GilbertElliott",
    "TraceLoss",
    "make_loss_model",
]

LOSS_MODELS: Registry[type["LossModel"]] = Registry("loss_models")
_SHORT = 32  # below this many packets the Gilbert–Elliott chain is stepped packet by packet


def _number(key: str, what: str, value: Any) -> float:
    """``value`` as a float; ConfigError at ``key`` unless it is a real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(key, f"{what} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _check_prob(key: str, what: str, value: Any) -> float:
    value = _number(key, what, value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"{what} must be a probability in [0, 1], got {value}")
    return value


def _check_count(n: int) -> int:
    if int(n) != n or n < 0:
        raise UsageError(f"n must be a non-negative integer packet count, got {n!r}")
    return int(n)


class LossModel(ABC):
    """Base class: a stateful generator of per-packet loss masks (True = lost)."""

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Return a bool array of length ``n`` for the next ``n`` packets; True = lost."""

    def lose_one(self, rng: np.random.Generator) -> bool:
        """Whether the next single packet is lost: ``sample(1, rng)[0]`` without the array."""
        return bool(self.sample(1, rng)[0])

    def reset(self) -> None:
        """Forget the state carried between ``sample`` calls (stateless models: no-op)."""

    @property
    @abstractmethod
    def mean_loss(self) -> float:
        """Long-run fraction of packets lost."""

    @classmethod
    def from_spec(cls, params: dict[str, Any]) -> "LossModel":
        """Build from config parameters (the spec dict without ``model``)."""
        return _call_checked(cls, params)


def _call_checked(factory: Any, params: dict[str, Any]) -> Any:
    """Call ``factory(**params)``, rejecting unknown and missing keys with the valid ones listed."""
    signature = inspect.signature(factory)
    valid = list(signature.parameters)
    for key in params:
        if key not in valid:
            raise ConfigError(str(key), "unknown parameter of this loss model", valid)
    for name, param in signature.parameters.items():
        if param.default is inspect.Parameter.empty and name not in params:
            raise ConfigError(name, "required parameter is missing", valid)
    return factory(**params)


@LOSS_MODELS.register("none")
class NoLoss(LossModel):
    """A perfect link: never loses a packet."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(_check_count(n), dtype=bool)

    def lose_one(self, rng: np.random.Generator) -> bool:
        return False

    @property
    def mean_loss(self) -> float:
        return 0.0

    def __repr__(self) -> str:
        return "NoLoss()"


@LOSS_MODELS.register("bernoulli")
class BernoulliLoss(LossModel):
    """Independent losses: each packet is lost with probability ``p``."""

    def __init__(self, p: float):
        self.p = _check_prob("p", "bernoulli p", p)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.random(_check_count(n)) < self.p

    def lose_one(self, rng: np.random.Generator) -> bool:
        return rng.random() < self.p

    @property
    def mean_loss(self) -> float:
        return self.p

    def __repr__(self) -> str:
        return f"BernoulliLoss(p={self.p})"


@LOSS_MODELS.register("gilbert_elliott")
class GilbertElliott(LossModel):
    """Two-state Markov (Gilbert–Elliott) bursty loss, in netem ``gemodel`` notation.

    ``p`` = P(good→bad), ``r`` = P(bad→good) per packet; ``k`` and ``h`` are the *delivery*
    probabilities in the good and bad state (loss 1-k and 1-h). Defaults ``h=0, k=1`` give the
    simple Gilbert model: the bad state always loses, the good state never does.

    The state chain is drawn as alternating geometric run lengths, not a per-packet loop. The first
    packet ever sampled starts from the stationary distribution; later calls continue the chain.
    """

    def __init__(self, p: float, r: float, h: float = 0.0, k: float = 1.0):
        self.p = _check_prob("p", "gilbert_elliott p (good→bad)", p)
        self.r = _check_prob("r", "gilbert_elliott r (bad→good)", r)
        self.h = _check_prob("h", "gilbert_elliott h (delivery prob. in bad state)", h)
        self.k = _check_prob("k", "gilbert_elliott k (delivery prob. in good state)", k)
        if self.p + self.r == 0.0:
            raise ConfigError("p", "gilbert_elliott needs p > 0 or r > 0; with both 0 the chain never moves")
        self._bad: bool | None = None  # state of the last packet sampled; None = not started

    @classmethod
    def from_mean(cls, loss: float, burst: float) -> "GilbertElliott":
        """Simple Gilbert model with mean loss rate ``loss`` and mean burst length ``burst`` packets."""
        loss = _number("loss", "gilbert_elliott loss", loss)
        if not 0.0 <= loss < 1.0:
            raise ConfigError("loss", f"gilbert_elliott loss must be in [0, 1), got {loss}")
        burst = _number("burst", "gilbert_elliott burst", burst)
        if not 1.0 <= burst < math.inf:
            raise ConfigError("burst", f"gilbert_elliott burst is a mean length in packets and must be >= 1 "
                                       f"(and finite), got {burst}")
        r = 1.0 / burst
        return cls(p=loss * r / (1.0 - loss), r=r)

    @classmethod
    def from_spec(cls, params: dict[str, Any]) -> "GilbertElliott":
        if "loss" in params or "burst" in params:
            both = [key for key in ("p", "r", "h", "k") if key in params]
            if both:
                raise ConfigError(both[0], "give either loss+burst or p, r[, h, k], not both", ["loss", "burst"])
            return _call_checked(cls.from_mean, params)
        return _call_checked(cls, params)

    @property
    def stationary_bad(self) -> float:
        """Long-run fraction of packets sent in the bad state."""
        return self.p / (self.p + self.r)

    @property
    def mean_loss(self) -> float:
        pi_bad = self.stationary_bad
        return pi_bad * (1.0 - self.h) + (1.0 - pi_bad) * (1.0 - self.k)

    def reset(self) -> None:
        self._bad = None

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = _check_count(n)
        if n == 0:
            return np.zeros(0, dtype=bool)
        bad = self._states(n, rng, self._first_state(rng))
        self._bad = bool(bad[-1])
        if self.h == 0.0 and self.k == 1.0:
            return bad
        loss_prob = np.where(bad, 1.0 - self.h, 1.0 - self.k)
        return rng.random(n) < loss_prob

    def _first_state(self, rng: np.random.Generator) -> bool:
        """State of the next packet: stationary draw at start, else one chain step."""
        if self._bad is None:
            return bool(rng.random() < self.stationary_bad)
        leave = self.r if self._bad else self.p
        return self._bad != bool(rng.random() < leave)

    def _states(self, n: int, rng: np.random.Generator, first_bad: bool) -> np.ndarray:
        """Bad-state mask of ``n`` packets from alternating geometric runs starting in ``first_bad``."""
        if n <= _SHORT:
            return self._states_stepwise(n, rng, first_bad)
        leave = (self.r, self.p) if first_bad else (self.p, self.r)
        runs = _alternating_runs(n, rng, leave)
        values = np.zeros(len(runs), dtype=bool)
        values[0 if first_bad else 1 :: 2] = True
        return np.repeat(values, runs)

    def _states_stepwise(self, n: int, rng: np.random.Generator, first_bad: bool) -> np.ndarray:
        """Same chain, one step per packet: cheaper than drawing runs for a handful of packets."""
        state, out = first_bad, [first_bad]
        for u in rng.random(n - 1).tolist():
            state = state != (u < (self.r if state else self.p))
            out.append(state)
        return np.array(out, dtype=bool)

    def __repr__(self) -> str:
        return f"GilbertElliott(p={self.p:.6g}, r={self.r:.6g}, h={self.h:.6g}, k={self.k:.6g})"


def _geometric(rng: np.random.Generator, leave: float, size: int, cap: int) -> np.ndarray:
    """Run lengths (>= 1) in a state left with probability ``leave`` per packet, capped at ``cap``."""
    if leave == 0.0:
        return np.full(size, cap, dtype=np.int64)
    return np.minimum(rng.geometric(leave, size), cap)


def _alternating_runs(n: int, rng: np.random.Generator, leave: tuple[float, float]) -> np.ndarray:
    """Alternating run lengths (state A, B, A, ...) trimmed to sum exactly to ``n``."""
    mean_pair = sum(math.inf if q == 0.0 else 1.0 / q for q in leave)
    chunks, total = [], 0
    while total < n:
        pairs = int(1.1 * (n - total) / mean_pair) + 16
        chunk = np.empty(2 * pairs, dtype=np.int64)
        chunk[0::2] = _geometric(rng, leave[0], pairs, n)
        chunk[1::2] = _geometric(rng, leave[1], pairs, n)
        chunks.append(chunk)
        total += int(chunk.sum())
    runs = np.concatenate(chunks)
    ends = np.cumsum(runs)
    last = int(np.searchsorted(ends, n))  # first run reaching packet n
    runs = runs[: last + 1]
    runs[-1] -= ends[last] - n
    return runs


@LOSS_MODELS.register("trace")
class TraceLoss(LossModel):
    """Replays a recorded loss pattern (True/1 = lost) cyclically, continuing across calls."""

    def __init__(self, pattern: Sequence[bool | int] | np.ndarray):
        arr = _pattern_array(pattern)
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError("pattern", "trace pattern must be a non-empty 1-D sequence of 0/1 or bools")
        if not np.isin(arr, (0, 1)).all():
            raise ConfigError("pattern", "trace pattern may only contain 0/1 or True/False (1 = lost)")
        self.pattern = arr.astype(bool)
        self.pattern.setflags(write=False)
        self._pos = 0

    @classmethod
    def from_file(cls, path: str | Path) -> "TraceLoss":
        """Load a text file of 0/1 characters (whitespace and commas ignored, ``#`` starts a comment)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise DataError(f"cannot read loss trace {path}: {exc}; pass a text file of 0/1") from exc
        body = "".join(line.split("#", 1)[0] for line in text.splitlines())
        digits = body.replace(",", "").translate(str.maketrans("", "", " \t\r\n"))
        if not digits or set(digits) - {"0", "1"}:
            raise DataError(f"loss trace {path} must contain only 0/1 characters (1 = lost), and at least one")
        return cls(np.frombuffer(digits.encode(), dtype=np.uint8) - ord("0"))

    @classmethod
    def from_spec(cls, params: dict[str, Any]) -> "TraceLoss":
        """From config: ``path`` (a 0/1 text file, read now) or ``pattern``; a bad file is a ConfigError."""
        if "path" not in params:
            return _call_checked(cls, params)
        path = params["path"]
        if not isinstance(path, (str, Path)):
            raise ConfigError("path", f"expected the path of a 0/1 text file, got {path!r} ({type(path).__name__})")
        try:
            return _call_checked(cls.from_file, params)
        except DataError as exc:
            raise ConfigError("path", str(exc)) from None

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        n = _check_count(n)
        idx = (self._pos + np.arange(n)) % self.pattern.size
        self._pos = (self._pos + n) % self.pattern.size
        return self.pattern[idx]

    def reset(self) -> None:
        self._pos = 0

    @property
    def mean_loss(self) -> float:
        return float(self.pattern.mean())

    def __repr__(self) -> str:
        return f"TraceLoss(len={self.pattern.size}, mean_loss={self.mean_loss:.4g})"


def _pattern_array(pattern: Any) -> np.ndarray:
    """``pattern`` as an array; anything numpy cannot read as one (ragged, odd objects) is a ConfigError."""
    try:
        return np.asarray(pattern)
    except (TypeError, ValueError):
        raise ConfigError("pattern", "trace pattern must be a non-empty 1-D sequence of 0/1 or bools") from None


def make_loss_model(spec: dict[str, Any] | None) -> LossModel:
    """Build a loss model from a config dict (``{"model": name, **params}``); None → no loss."""
    if spec is None:
        return NoLoss()
    params = dict(spec)
    name = params.pop("model", None)
    if name is None:
        raise ConfigError("model", "missing: say which loss model to use", LOSS_MODELS.names())
    if not isinstance(name, str) or name not in LOSS_MODELS.names():
        raise ConfigError("model", f"unknown loss model {name!r}", LOSS_MODELS.names())
    factory = LOSS_MODELS.get(name)
    build = getattr(factory, "from_spec", None)
    return build(params) if build is not None else _call_checked(factory, params)
