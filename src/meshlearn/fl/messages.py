"""Message kinds and typed instructions of the federated-learning protocol (server ⇄ clients).

ONLY APPEND to the kinds: the strings are part of the wire protocol between versions.

    client → server  fl.join      meta: {}                          "I am here, send me work"
    server → client  fl.train     meta: round, LocalTraining,       tensors: global parameters
                                        seed
    client → server  fl.update    meta: round, num_samples, loss    tensors: trained parameters
    server → client  fl.shutdown  meta: reason                      the run is over

Meta keys added later (optional: receivers tolerate their absence, old senders omit them):

    fl.join    flops, up_bps, down_bps, num_samples   the client's nominal resources (FedCS telemetry)
    fl.update  sq_loss                                mean squared per-sample training loss (Oort)

``RoundTag`` (round number and the seed of the round's randomness) and ``LocalTraining`` (how a
client trains one round (epochs, batch_size, lr, momentum,
weight_decay and, for FedAvg/FedProx, prox_mu) are frozen records that the server writes into
meta and the client reads back with ``from_meta`` (ProtocolError on bad input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from meshlearn.learn.tasks import TrainTask
from meshlearn.wire.meta import MetaRecord

JOIN = "fl.join"
TRAIN = "fl.train"
UPDATE = "fl.update"
SHUTDOWN = "fl.shutdown"


class Kinds(NamedTuple):
    """The four message kinds of one server-based protocol (FedAvg's below; DS-FL and FD have their own)."""

    join: str
    round: str
    upload: str
    shutdown: str


FL_KINDS = Kinds(JOIN, TRAIN, UPDATE, SHUTDOWN)


@dataclass(frozen=True)
class RoundTag(MetaRecord):
    """Which round a message belongs to, and the seed of that round's local randomness."""

    round: int
    seed: int

    def problems(self) -> list[str]:
        return [rule for rule, ok in (("round >= 1", self.round >= 1), ("seed >= 0", self.seed >= 0)) if not ok]


@dataclass(frozen=True)
class LocalTraining(MetaRecord):
    """Local SGD of one round; ``prox_mu`` is sent only by FedAvg/FedProx (0 = plain FedAvg)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float | None = None

    def problems(self) -> list[str]:
        rules = (("epochs >= 0", self.epochs >= 0), ("batch_size >= 1", self.batch_size >= 1), ("lr > 0", self.lr > 0),
                 ("0 <= momentum < 1", 0 <= self.momentum < 1), ("weight_decay >= 0", self.weight_decay >= 0),
                 ("prox_mu >= 0", self.prox_mu is None or self.prox_mu >= 0))
        return [rule for rule, ok in rules if not ok]

    def task(self, client: str, params: dict[str, np.ndarray], seed: int) -> TrainTask:
        """The TrainTask that carries out this training on ``client``'s data."""
        return TrainTask(client=client, params=params, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                         momentum=self.momentum, weight_decay=self.weight_decay, prox_mu=self.prox_mu or 0.0,
                         seed=seed)


__all__ = ["JOIN", "TRAIN", "UPDATE", "SHUTDOWN", "Kinds", "FL_KINDS", "RoundTag", "LocalTraining"]
