"""Message kinds of the federated-learning protocol (server ⇄ clients).

ONLY APPEND to this list: the strings are part of the wire protocol between versions.

    client → server  fl.join      meta: {}                          "I am here, send me work"
    server → client  fl.train     meta: round, epochs, batch_size,  tensors: global parameters
                                        lr, momentum, weight_decay,
                                        prox_mu, seed
    client → server  fl.update    meta: round, num_samples, loss    tensors: trained parameters
    server → client  fl.shutdown  meta: reason                      the run is over

Meta keys added later (optional: receivers tolerate their absence, old senders omit them):

    fl.join    flops, up_bps, down_bps, num_samples   the client's nominal resources (FedCS telemetry)
    fl.update  sq_loss                                mean squared per-sample training loss (Oort)
"""

from typing import NamedTuple

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

__all__ = ["JOIN", "TRAIN", "UPDATE", "SHUTDOWN", "Kinds", "FL_KINDS"]
