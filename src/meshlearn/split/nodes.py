"""Sans-I/O split-inference nodes: ``SplitHead`` (device) and ``SplitTail`` (server).

The same two classes run in the simulator and as real processes over UDP (``meshlearn split
infer`` / ``meshlearn split serve``). The models are plain callables, so this module needs numpy
only: ``head_fn(sample) -> cut tensor`` and ``tail_fn(cut tensor) -> class index``.

Per sample ``i`` the head::

    z = head_fn(x_i) ─ encode_packets(z, spec, tag=i) ─ injected loss ─▶ TensorChunk datagrams
    ... SplitReply(i, prediction) ─▶ record correct / latency        (or a miss after reply_timeout_s)

**Injected loss** is the application-level loss of the lab framework's experiments: a packet the
draw marks lost is never sent. The draw is keyed, ``default_rng([seed, i]).random(packets) < loss``
(:func:`injected_losses`; with ``burst`` a Gilbert model of that mean burst length drawn from the
same keyed stream), so it does not depend on runtime, timing or which rng stream a node
got: a simulated run and a real run with the same seed drop exactly the same packets. A sample
whose packets are all dropped is a miss at once (the head knows nothing was sent, so no answer
can come). Real network loss comes on top, in real runs and through the simulator's link model.

Sample ``i`` travels as channel tag ``(run + i) mod 2**32``; the CLI draws ``run`` at random
per invocation, so a restarted head never collides with what the tail remembers of the last one.
The tail keys state on ``(src, tag)``; the first packet of a sample arms a deadline timer
(``spec.deadline_s``); the tail runs when the deadline fires, when ``spec.reach_rate`` of the
packets have arrived, or when all have. It reconstructs with zero-fill (``spec.rescale`` applies),
runs ``tail_fn`` and replies with one unreliable ``SplitReply``. Packets of an answered sample are
counted as late and ignored for ``forget_s`` seconds. Bad input is counted in ``stats`` and
dropped, never raised: a chunk with another spec digest (``spec_mismatch``) or one that does not
decode against this spec (``rejected``); log lines about them are rate-limited.

**Settings that differ** between head and tail cannot work, so neither side stays silent about
them: the tail answers a chunk with another digest with its own settings (``SplitSettings``, at
most once per head per ``notice_s``; ``stats["settings_sent"]``), and the head, on receiving
settings other than its own, records a :class:`HeadFailure` naming each differing setting with
both values and stops. With ``give_up_unheard`` the head also stops at the first reply timeout if
nothing at all ever came back from the tail (``HeadFailure("no_reply")``): a wrong address, another
secret or a tail that is not running, rather than 200 silent misses.

Windowing: the head keeps up to ``window`` samples in flight (1 = strictly one after another).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.net.loss import GilbertElliott
from meshlearn.node import Context, Node
from meshlearn.ratelimit import RateLimit
from meshlearn.split.channel import ChannelSpec, decode_packet, encode_packets, reconstruct
from meshlearn.split.packets import SplitReply, SplitSettings, TensorChunk, shared_settings, spec_digest

__all__ = ["SplitHead", "SplitTail", "SampleResult", "HeadFailure", "setting_differences", "injected_losses"]

_TAG_MASK = 0xFFFFFFFF
HeadFn = Callable[[np.ndarray], np.ndarray]
TailFn = Callable[[np.ndarray], int]


def injected_losses(seed: int, sample: int, packets: int, loss: float, burst: float | None = None) -> np.ndarray:
    """Which of a sample's ``packets`` the head drops (True = dropped); keyed on ``(seed, sample)``.

    ``burst`` None: independent (Bernoulli) drops; a mean burst length >= 1 (packets): a simple
    Gilbert model with mean loss ``loss`` whose chain starts from its stationary state per sample.
    """
    if loss <= 0.0:
        return np.zeros(packets, bool)
    rng = np.random.default_rng([int(seed), int(sample)])
    if burst is None:
        return rng.random(packets) < loss
    return GilbertElliott.from_mean(loss, burst).sample(packets, rng)


_SETTING_NAMES = {"per": "elements_per_packet"}  # shared_settings keys as the ChannelSpec calls them


def setting_differences(device: dict[str, Any], server: dict[str, Any]) -> tuple[tuple[str, Any, Any], ...]:
    """``(setting, device value, server value)`` for each shared setting that differs, sorted by name."""
    out = [(_SETTING_NAMES.get(key, key), device.get(key), server.get(key))
           for key in set(device) | set(server) if device.get(key) != server.get(key)]
    return tuple(sorted(out))


@dataclass(frozen=True)
class HeadFailure:
    """Why a head gave up: the tail's channel settings differ, or nothing ever came back from it."""

    reason: Literal["spec_mismatch", "no_reply"]
    differences: tuple[tuple[str, Any, Any], ...] = ()  # (setting, this device's value, the server's)

    def __str__(self) -> str:
        if self.reason == "no_reply":
            return "no reply came from the server"
        if not self.differences:
            return ("split channel settings differ from the server's (other digests, same values): are both "
                    "ends the same meshlearn version?")
        listed = ", ".join(f"{key} (device {mine}, server {theirs})" for key, mine, theirs in self.differences)
        return f"split channel settings differ from the server's: {listed}"


@dataclass(frozen=True)
class SampleResult:
    """What the head learned about one sample. ``prediction`` is -1 for a miss (no reply)."""

    sample: int
    label: int
    prediction: int
    packets: int  # the channel packets of the cut tensor
    sent: int  # packets left after injected loss
    accepted: int  # packets the tail used (0 for a miss)
    wire_bytes: int  # frame bytes the head put on the wire for this sample
    latency_s: float  # head compute + transfer + tail + reply (nan for a miss)

    @property
    def correct(self) -> bool:
        return self.prediction == self.label


class SplitHead(Node):
    """Runs ``head_fn`` on each sample, sends its cut tensor to ``tail``, records the answers.

    Stops (``ctx.stop()``) when every sample was answered or timed out; ``summary()`` then holds
    accuracy, bytes and latency, and ``results`` one :class:`SampleResult` per sample. Stops early,
    with ``failure`` set, when the tail's settings differ or (``give_up_unheard``) it never answers.
    """

    def __init__(self, node_id: str, tail: str, head_fn: HeadFn, samples: Sequence[np.ndarray],
                 labels: Sequence[int], spec: ChannelSpec, *, loss: float = 0.0, burst: float | None = None,
                 seed: int = 0, reply_timeout_s: float = 1.0, window: int = 1, run: int = 0,
                 give_up_unheard: bool = False):
        super().__init__(node_id)
        if len(samples) != len(labels) or not len(samples):
            raise UsageError(f"need as many labels as samples (at least one), got {len(samples)} and {len(labels)}")
        if not 0.0 <= loss < 1.0:
            raise UsageError(f"injected loss must be in [0, 1), got {loss}")
        if burst is not None and not burst >= 1.0:
            raise UsageError(f"injected loss burst is a mean length in packets and must be >= 1, got {burst}")
        if not (reply_timeout_s > 0 and math.isfinite(reply_timeout_s)):
            raise UsageError(f"reply_timeout_s must be a positive number of seconds, got {reply_timeout_s}")
        if int(window) < 1:
            raise UsageError(f"window must be at least 1 sample in flight, got {window}")
        self.tail, self.head_fn, self.samples, self.labels = tail, head_fn, samples, [int(y) for y in labels]
        self.spec, self.digest, self.loss, self.seed = spec, spec_digest(spec), float(loss), int(seed)
        self.burst = None if burst is None else float(burst)
        self.reply_timeout_s, self.window = float(reply_timeout_s), int(window)
        if not 0 <= int(run) <= _TAG_MASK:
            raise UsageError(f"run must fit in 32 bits, got {run}")
        self.run = int(run)  # sample i travels as tag (run + i) mod 2**32: a restarted head is new to the tail
        self.results: dict[int, SampleResult] = {}
        self.give_up_unheard = bool(give_up_unheard)
        self.failure: HeadFailure | None = None
        self._heard = False  # anything at all came back from the tail
        self._flight: dict[int, tuple[float, int, int, int]] = {}  # sample -> (start, packets, sent, bytes)
        self._next = 0

    # ----- events -------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        self._fill(ctx)

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        if src != self.tail or not isinstance(msg, (SplitReply, SplitSettings)):
            return
        self._heard = True
        if isinstance(msg, SplitSettings):
            self._tail_settings(ctx, msg)
            return
        i = (msg.sample - self.run) & _TAG_MASK
        if i not in self._flight:
            return  # a reply after its timeout, or for another run: ignore
        ctx.cancel_timer(f"reply {i}")
        start, packets, sent, nbytes = self._flight.pop(i)
        self._finish(ctx, SampleResult(i, self.labels[i], msg.prediction, packets, sent, msg.accepted, nbytes,
                                       ctx.now - start))

    def on_timer(self, ctx: Context, name: str) -> None:
        kind, _, arg = name.partition(" ")
        if kind == "reply" and int(arg) in self._flight:
            sample = int(arg)
            _, packets, sent, nbytes = self._flight.pop(sample)
            result = SampleResult(sample, self.labels[sample], -1, packets, sent, 0, nbytes, math.nan)
            if self.give_up_unheard and not self._heard:
                self.results[sample] = result
                self._give_up(ctx, HeadFailure("no_reply"))
                return
            self._finish(ctx, result)
        elif kind == "fill":
            self._fill(ctx)

    def _tail_settings(self, ctx: Context, msg: SplitSettings) -> None:
        """The tail says its settings: if they are not ours, nothing this head sends can be used."""
        if msg.spec == self.digest:
            return  # our own settings: nothing differs (a stray or replayed copy)
        self._give_up(ctx, HeadFailure("spec_mismatch", setting_differences(shared_settings(self.spec),
                                                                            msg.settings)))

    def _give_up(self, ctx: Context, failure: HeadFailure) -> None:
        self.failure = failure
        ctx.log(f"giving up: {failure}", level="warning")
        ctx.stop()

    # ----- sending ------------------------------------------------------------------------
    def _fill(self, ctx: Context) -> None:
        while len(self._flight) < self.window and self._next < len(self.samples):
            self._send_sample(ctx, self._next)
            self._next += 1
        if not self._flight and self._next >= len(self.samples):
            self._report(ctx)
            ctx.stop()

    def _send_sample(self, ctx: Context, i: int) -> None:
        start = ctx.now
        z = np.asarray(self.head_fn(self.samples[i]), np.float32)
        bodies = encode_packets(z, self.spec, tag=(self.run + i) & _TAG_MASK)
        dropped = injected_losses(self.seed, i, len(bodies), self.loss, self.burst)
        nbytes = sum(ctx.send(self.tail, TensorChunk(self.digest, body), reliable=False)
                     for body, lost in zip(bodies, dropped) if not lost)
        sent = len(bodies) - int(dropped.sum())
        if sent == 0:  # nothing left the device: a miss now, no reply can come
            self.results[i] = SampleResult(i, self.labels[i], -1, len(bodies), 0, 0, 0, math.nan)
            ctx.set_timer("fill", 0.0)  # not recursively: a long run of misses must not grow the stack
            return
        self._flight[i] = (start, len(bodies), sent, nbytes)
        ctx.set_timer(f"reply {i}", self.reply_timeout_s)

    def _finish(self, ctx: Context, result: SampleResult) -> None:
        self.results[result.sample] = result
        if not math.isnan(result.latency_s):
            ctx.record("split.latency_s", result.latency_s, round=result.sample)
        self._fill(ctx)

    def _report(self, ctx: Context) -> None:
        for key, value in self.summary().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                ctx.record(f"split.{key}", value)

    # ----- results ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return len(self.results) == len(self.samples)

    def predictions(self) -> np.ndarray:
        """Predicted class per sample in order (-1: no answer)."""
        return np.array([self.results[i].prediction if i in self.results else -1 for i in range(len(self.samples))])

    def summary(self) -> dict[str, Any]:
        """Accuracy (misses count as wrong), bytes and latency over the samples finished so far."""
        rs = [self.results[i] for i in sorted(self.results)]
        packets, sent = sum(r.packets for r in rs), sum(r.sent for r in rs)
        answered = [r for r in rs if r.prediction >= 0]
        lat = np.array([r.latency_s for r in answered]) * 1e3
        return {
            "samples": len(rs),
            "accuracy_pct": round(100 * sum(r.correct for r in rs) / max(1, len(rs)), 2),
            "answered": len(answered),
            "misses": len(rs) - len(answered),
            "packets": packets,
            "injected_loss": round(1 - sent / max(1, packets), 4),
            "accepted_of_sent": round(sum(r.accepted for r in answered) / max(1, sum(r.sent for r in answered)), 4),
            "wire_bytes_per_sample": round(sum(r.wire_bytes for r in rs) / max(1, len(rs)), 1),
            "latency_ms_mean": round(float(lat.mean()), 3) if len(lat) else None,
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 3) if len(lat) else None,
        }


class SplitTail(Node):
    """Collects each sample's chunks until its cut, runs ``tail_fn``, replies with the class."""

    def __init__(self, node_id: str, tail_fn: TailFn, cut_shape: Sequence[int], spec: ChannelSpec, *,
                 forget_s: float | None = None, notice_s: float = 1.0):
        super().__init__(node_id)
        if spec.deadline_s is None:
            raise UsageError("a real receiver needs a deadline: set ChannelSpec(deadline_s=...), e.g. 0.05 on a LAN")
        self.tail_fn, self.spec, self.digest = tail_fn, spec, spec_digest(spec)
        self.cut_shape = tuple(int(d) for d in cut_shape)
        self.n = int(np.prod(self.cut_shape, dtype=np.int64))
        self.forget_s = float(forget_s) if forget_s is not None else max(1.0, 10 * spec.deadline_s)
        self.stats: Counter = Counter({k: 0 for k in ("samples", "packets", "late", "duplicates",
                                                       "spec_mismatch", "rejected", "settings_sent")})
        self._settings = SplitSettings.of(spec)
        self._notices = RateLimit(burst=1, period_s=notice_s)  # settings sent: one per head per notice_s
        self._log_limit = RateLimit()  # log lines about dropped chunks, per counter
        self._pending: dict[tuple[str, int], dict[int, bytes]] = {}
        self._answered: dict[tuple[str, int], float] = {}  # -> when; late chunks are ignored until forget_s

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        if not isinstance(msg, TensorChunk):
            return
        if msg.spec != self.digest:
            self._reject(ctx, "spec_mismatch", src, f"chunk with spec digest {msg.spec:#010x}, this tail's is "
                         f"{self.digest:#010x}: run head and tail with the same channel options")
            if self._notices.admit(src, ctx.now) is not None:
                ctx.send(src, self._settings, reliable=False)
                self.stats["settings_sent"] += 1
            return
        try:
            decode_packet(msg.body, self.spec, self.n)
        except ProtocolError as exc:
            self._reject(ctx, "rejected", src, f"undecodable chunk: {exc}")
            return
        key = (src, msg.sample)
        if key in self._answered:
            if ctx.now - self._answered[key] < self.forget_s:
                self.stats["late"] += 1
                return
            del self._answered[key]  # long ago: the same tag again is a new sample
        got = self._pending.get(key)
        if got is None:
            got = self._pending[key] = {}
            ctx.set_timer(self._timer(key), self.spec.deadline_s)
        if msg.index in got:
            self.stats["duplicates"] += 1
            return
        got[msg.index] = msg.body
        self.stats["packets"] += 1
        need = msg.total
        if self.spec.reach_rate is not None:
            need = min(need, max(1, math.ceil(self.spec.reach_rate * msg.total - 1e-9)))
        if len(got) >= need:
            ctx.cancel_timer(self._timer(key))
            self._answer(ctx, key, msg.total)

    def on_timer(self, ctx: Context, name: str) -> None:
        _, sample, src = name.split(" ", 2)  # "cut SAMPLE SRC": the id last, whatever it contains
        key = (src, int(sample))
        if key in self._pending:
            self._answer(ctx, key, TensorChunk(0, next(iter(self._pending[key].values()))).total)

    @staticmethod
    def _timer(key: tuple[str, int]) -> str:
        return f"cut {key[1]} {key[0]}"

    def _answer(self, ctx: Context, key: tuple[str, int], total: int) -> None:
        got = self._pending.pop(key)
        tensor, _ = reconstruct(got.values(), self.spec, self.cut_shape)
        prediction = int(self.tail_fn(tensor))
        ctx.send(key[0], SplitReply(key[1], prediction, len(got), total), reliable=False)
        self.stats["samples"] += 1
        now = ctx.now
        self._answered = {k: t for k, t in self._answered.items() if now - t < self.forget_s}
        self._answered[key] = now

    def _reject(self, ctx: Context, counter: str, src: str, text: str) -> None:
        self.stats[counter] += 1
        admitted = self._log_limit.admit(counter, ctx.now)  # log a few, then a summary now and then; count all
        if admitted is not None:
            ctx.log(f"dropped a chunk from {src!r}: {text}{admitted.suffix(counter)}", level="warning")

