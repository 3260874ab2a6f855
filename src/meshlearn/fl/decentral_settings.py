"""Settings of the decentralized algorithms: CMFD, parameter-averaging gossip and Tram-FL.

Plain pydantic models (extra keys rejected, every field described) so they map one-to-one onto a
TOML section; no torch here, so a config can be validated without loading the learning stack.
Defaults follow research/techniques-nishio.md §2 (CMFD) and §3 (Tram-FL), with learning rates
re-tuned for the embedded 8x8 digits and the reference MLP (see benchmarks/bench_cmfd.py and
benchmarks/bench_tram.py for the sweeps behind them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DecentralSettings", "TramSettings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DecentralSettings(_Strict):
    """One synchronous epoch per peer: local SGD, exchange with neighbours, combine (CMFD or gossip)."""

    epochs: int = Field(200, ge=1, description="epochs each peer runs (local epoch + one exchange each)")
    lr: float = Field(0.05, gt=0, description="local SGD learning rate (spec: 0.01 on MNIST for CMFD, 0.1 "
                                              "for averaging; 0.05 suits digits + MLP for both)")
    batch_size: int = Field(32, ge=1, description="local minibatch size (spec: 100 on 1,000 MNIST images)")
    momentum: float = Field(0.0, ge=0, lt=1, description="local SGD momentum (spec: plain SGD)")
    open_size: int = Field(300, ge=1, description="open-set rows whose outputs CMFD exchanges each epoch; "
                                                  ">= the open set means all of it (spec: 1,000 of 1,000)")
    distill_batch_size: int = Field(20, ge=1, description="minibatch size of the CMFD distillation pass "
                                                          "(spec: 100; 20 is best on digits + MLP)")
    cmfd_lr: float = Field(1.0, gt=0, description="CMFD consensus-distillation rate per neighbour, in the "
                                                  "spec's units (MSE averaged over classes); spec: 0.2, which "
                                                  "reaches only ~50% on digits + MLP where 1.0 reaches 83-93%")
    scale_by_degree: bool = Field(True, description="multiply cmfd_lr by the number of neighbours whose "
                                                    "outputs were used (spec: adjust_lr_codis)")
    loss: Literal["mse", "kl"] = Field("mse", description="CMFD distillation loss on softmax outputs")
    self_weight: float = Field(0.1, ge=0, le=1, description="gossip: w <- s*w + (1-s)*mean(neighbours' w)")
    eval_every: int = Field(10, ge=1, description="each peer evaluates its model every this many epochs "
                                                  "(and at the last)")
    epoch_deadline_s: float = Field(30.0, gt=0, description="virtual seconds a peer waits for its neighbours' "
                                                            "outputs before going on without the silent ones")


class TramSettings(_Strict):
    """One model token routed through the nodes; each holder trains a few minibatches and forwards it."""

    routing: Literal["variance", "random", "cycle"] = Field(
        "variance", description="next-hop policy: greedy class balancing, uniform random, fixed ring order")
    transmissions: int = Field(100, ge=1, description="the run stops after this many model transmissions")
    batches_per_hop: int = Field(1, ge=1, description="minibatches the holder trains before forwarding "
                                                      "(spec INTERVAL)")
    batch_size: int = Field(100, ge=1, description="minibatch size (spec BATCHSIZE)")
    lr: float = Field(0.05, gt=0, description="SGD learning rate (spec: 0.005 for a CNN on MNIST; 0.05 suits "
                                              "digits + MLP, see benchmarks/bench_tram.py)")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (momentum state does not travel)")
    eval_every: int = Field(20, ge=1, description="evaluate the token's model every this many transmissions")
    ack_timeout_s: float = Field(30.0, gt=0, description="virtual seconds to wait for the next hop's ack "
                                                         "before routing around it")
    hello_timeout_s: float = Field(10.0, gt=0, description="the origin launches the token when every node "
                                                           "announced its classes, or after this long")
