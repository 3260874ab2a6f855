"""One directed link: latency, bandwidth, jitter, MTU, a loss model and a FIFO send queue.

A ``Link`` turns "send n bytes at time t" into an arrival time in virtual seconds; it never reads
a clock. Transfers queue: one cannot start before the previous one finished serializing
(``busy_until``). Two delivery semantics:

* reliable (``transmit``): every lost packet is sent again after ``rto_s``; each loss costs
  ``rto_s`` plus that packet's serialization time. A packet lost ``MAX_ATTEMPTS`` times in a row
  makes the transfer fail (``delivered=False``, ``arrival=inf``), so a dead link cannot hang.
* datagram (``transmit_datagram``): lost packets are gone; the receiver gets a mask.

The link is busy only while serializing (first sends and resends); the RTO waits and the
propagation latency do not block the next transfer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from meshlearn.errors import UsageError
from meshlearn.net.loss import LossModel, make_loss_model
from meshlearn.net.packetizer import DEFAULT_HEADER_BYTES, packet_sizes, payload_size

__all__ = ["LinkSpec", "Link", "Transfer", "DatagramTransfer", "MAX_ATTEMPTS"]

MAX_ATTEMPTS = 50  # sends of one packet before a reliable transfer gives up


class LinkSpec(BaseModel):
    """Parameters of a link, as written in a config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_s: float = Field(0.01, ge=0, allow_inf_nan=False, description="one-way propagation delay, seconds")
    bandwidth_bps: float = Field(1e8, gt=0, description="link rate, bits per second")
    jitter_s: float = Field(0.0, ge=0, allow_inf_nan=False,
                            description="extra delay drawn uniformly from [0, jitter_s)")
    mtu: int = Field(1500, gt=0, description="packet size on the wire incl. headers, bytes")
    header_bytes: int = Field(DEFAULT_HEADER_BYTES, ge=0, description="per-packet header bytes")
    loss: dict[str, Any] | None = Field(None, description='e.g. {"model": "bernoulli", "p": 0.01}')
    rto_s: float = Field(0.2, ge=0, allow_inf_nan=False, description="retransmission timeout of reliable transfers")

    @field_validator("loss")
    @classmethod
    def _loss_builds(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        make_loss_model(value)  # raise now, at config time, not at first send
        return value

    @model_validator(mode="after")
    def _header_fits(self) -> "LinkSpec":
        payload_size(self.mtu, self.header_bytes)
        return self


@dataclass(frozen=True)
class Transfer:
    """Outcome of one message transfer.

    ``lost`` counts dropped packet transmissions (a packet lost twice counts twice);
    ``retransmissions`` counts resends; ``wire_bytes`` counts every byte serialized, headers and
    resends included. ``delivered`` is False when the message did not get through (reliable: a
    packet hit ``MAX_ATTEMPTS``; unreliable: any packet lost), and then ``arrival`` is inf.
    """

    arrival: float
    packets: int
    lost: int
    retransmissions: int
    delivered: bool = True
    start: float = 0.0
    wire_bytes: int = 0


@dataclass(frozen=True, eq=False)
class DatagramTransfer:
    """Outcome of a datagram send: ``mask[i]`` (read-only) is True when packet ``i`` arrived.

    ``arrival`` is when the last packet arrives (or would have, had it not been lost). Compared by
    identity, since it holds an array.
    """

    arrival: float
    mask: np.ndarray
    packets: int
    start: float = 0.0
    wire_bytes: int = 0

    def __post_init__(self) -> None:
        self.mask.setflags(write=False)

    @property
    def lost(self) -> int:
        return int(self.packets - np.count_nonzero(self.mask))

    @property
    def delivered(self) -> bool:
        """True when every packet arrived."""
        return bool(self.mask.all())


class Link:
    """Stateful directed link: FIFO send queue plus loss-model state, driven by ``rng``."""

    def __init__(self, spec: LinkSpec, rng: np.random.Generator):
        self.spec = spec
        self.rng = rng
        self.loss_model: LossModel = make_loss_model(spec.loss)
        self.busy_until = 0.0
        self.max_payload = spec.mtu - spec.header_bytes  # message bytes that fit one packet
        self._scalars = (spec.latency_s, spec.jitter_s, spec.header_bytes)

    def reset(self) -> None:
        """Empty the queue and forget the loss-model state."""
        self.busy_until = 0.0
        self.loss_model.reset()

    def transmit(
        self, nbytes: int, now: float, reliable: bool = True, bandwidth_bps: float | None = None
    ) -> Transfer:
        """Send ``nbytes`` at ``now``; reliable resends lost packets, unreliable gives up on them."""
        sizes, bps, start = self._prepare(nbytes, now, bandwidth_bps)
        wire = sizes + self.spec.header_bytes
        if reliable:
            lost, resends, missing, resend_cost, resent_bytes = self._reliable_losses(wire, bps)
        else:
            lost = missing = int(np.count_nonzero(self.loss_model.sample(len(sizes), self.rng)))
            resends, resend_cost, resent_bytes = 0, 0.0, 0
        wire_bytes = int(wire.sum()) + resent_bytes
        self.busy_until = start + wire_bytes * 8.0 / bps
        arrival = start + int(wire.sum()) * 8.0 / bps + resend_cost + self._delay()
        return Transfer(
            arrival=arrival if missing == 0 else math.inf, packets=len(sizes), lost=lost,
            retransmissions=resends, delivered=missing == 0, start=start, wire_bytes=wire_bytes,
        )

    def transmit_datagram(
        self, nbytes: int, now: float, bandwidth_bps: float | None = None
    ) -> DatagramTransfer:
        """Send ``nbytes`` as datagrams at ``now``; lost packets are gone (see ``mask``)."""
        sizes, bps, start = self._prepare(nbytes, now, bandwidth_bps)
        mask = ~self.loss_model.sample(len(sizes), self.rng)
        wire_bytes = int(sizes.sum()) + len(sizes) * self.spec.header_bytes
        self.busy_until = start + wire_bytes * 8.0 / bps
        return DatagramTransfer(
            arrival=self.busy_until + self._delay(), mask=mask, packets=len(sizes),
            start=start, wire_bytes=wire_bytes,
        )

    def small_datagram(self, nbytes: int, now: float, bandwidth_bps: float) -> tuple[float | None, int]:
        """One datagram of at most one packet: (arrival or None when lost, wire bytes).

        The scalar fast path of ``transmit_datagram`` for overlay gossip (thousands of tiny
        packets per virtual second): same queue, loss and delay rules, no arrays.
        """
        latency, jitter, header = self._scalars
        wire = nbytes + header
        start = now if now > self.busy_until else self.busy_until
        self.busy_until = done = start + wire * 8.0 / bandwidth_bps
        lost = self.loss_model.lose_one(self.rng)
        arrival = done + (latency + (self.rng.random() * jitter if jitter > 0 else 0.0))  # drawn even if lost,
        return (None if lost else arrival), wire  # as in the array path: the same random stream

    def serialization_s(self, nbytes: int, bandwidth_bps: float | None = None) -> float:
        """Time to put ``nbytes`` of message (plus its packet headers) on the wire."""
        sizes = packet_sizes(nbytes, self.spec.mtu, self.spec.header_bytes)
        bps = self._bandwidth(bandwidth_bps)
        return float((sizes.sum() + len(sizes) * self.spec.header_bytes) * 8.0 / bps)

    def _prepare(self, nbytes: int, now: float, bandwidth_bps: float | None):
        if not math.isfinite(now):
            raise UsageError(f"now must be a finite virtual time, got {now}")
        sizes = packet_sizes(nbytes, self.spec.mtu, self.spec.header_bytes)
        return sizes, self._bandwidth(bandwidth_bps), max(float(now), self.busy_until)

    def _bandwidth(self, bandwidth_bps: float | None) -> float:
        bps = self.spec.bandwidth_bps if bandwidth_bps is None else float(bandwidth_bps)
        if not bps > 0:
            raise UsageError(f"bandwidth_bps must be > 0, got {bandwidth_bps}")
        return bps

    def _delay(self) -> float:
        jitter = self.rng.random() * self.spec.jitter_s if self.spec.jitter_s > 0 else 0.0  # = uniform(0, j)
        return self.spec.latency_s + jitter

    def _reliable_losses(self, wire: np.ndarray, bps: float) -> tuple[int, int, int, float, int]:
        """Resend rounds until every packet got through or one failed ``MAX_ATTEMPTS`` times.

        Returns (lost transmissions, resends, packets never delivered, resend time, resent bytes).
        """
        pending = np.arange(len(wire))
        lost = resends = resent_bytes = 0
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if attempt > 1:
                resends += len(pending)
                resent_bytes += int(wire[pending].sum())
            pending = pending[self.loss_model.sample(len(pending), self.rng)]
            lost += len(pending)
            if len(pending) == 0:
                break
        cost = resends * self.spec.rto_s + resent_bytes * 8.0 / bps
        return lost, resends, len(pending), cost, resent_bytes
