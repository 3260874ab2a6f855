"""Typed settings of the distillation-based FL algorithms: DS-FL and FD (config sections ↔ these models).

They hold only what is specific to each algorithm; the round control shared with FedAvg (rounds,
fraction, epochs, batch_size, lr, momentum, deadlines, min_completion, joins) comes from the `fl`
section and reaches the builders as the `common` dict. No torch import here: the config layer loads
this module without pulling in the learning stack.

DS-FL defaults other than the spec's (ERA, T = 0.1, 200 open samples per round) come from the sweep in
`benchmarks/bench_dsfl.py` (digits, 20 clients × 2 classes, 600k-parameter MLP): clients distil gently
(1 epoch, lr 0.005) because their distillation feeds the next round's soft labels back to them and a
stronger pull locks in consensus errors; the server, outside that loop, distils harder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from meshlearn.wire.quant import reject_old_name

__all__ = ["DSFLSettings", "FDSettings"]


class DSFLSettings(BaseModel):
    """DS-FL (Itahara et al., IEEE TMC 2023): clients share soft labels on a shared unlabelled set."""

    model_config = ConfigDict(extra="forbid")

    aggregation: Literal["era", "sa"] = Field(
        "era", description="how the server merges client soft labels: era = softmax(mean / temperature), sa = mean")
    temperature: float = Field(0.1, gt=0, description="ERA temperature; the paper's and its re-implementations' 0.1")
    subset_size: int = Field(200, ge=1, description="open-set samples labelled per round (capped at the open set size)")
    distill_epochs: int = Field(1, ge=0, description="client epochs on the previous round's aggregated soft labels")
    distill_lr: float = Field(0.005, gt=0, description="client SGD learning rate on the aggregated soft labels")
    distill_batch_size: int = Field(50, ge=1, description="minibatch size of distillation (clients and server)")
    distill_momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of distillation (clients and server)")
    soft_label_encoding: Literal["fp32", "fp16", "simplex8"] = Field(
        "fp32", description="wire encoding of soft labels both ways: fp32 exact, fp16 half, simplex8 (uint8 "
                            "round(255·p), rows renormalised) a quarter the bytes")
    server_distill: bool = Field(
        True, description="the server distils its own model on each aggregate and evaluates it; if false the "
                          "clients report their test accuracy and the server records the mean")
    server_distill_epochs: int = Field(10, ge=1, description="server epochs on each round's aggregated soft labels")
    server_distill_lr: float = Field(
        0.02, gt=0, description="server SGD learning rate; the server's model feeds nothing back to the clients, so "
                                "it may learn faster than they do (their distillation closes a feedback loop)")

    @field_validator("soft_label_encoding", mode="before")
    @classmethod
    def _renamed(cls, value: object) -> object:
        return reject_old_name(value, "int8", "'simplex8'")


class FDSettings(BaseModel):
    """FD, federated distillation (Jeong et al. 2018): clients share per-label mean logits."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.5, ge=0, description="weight of the distillation term: CE + beta · D(logits, global "
                                               "mean logits of the sample's label)")
    distill_loss: Literal["kl", "mse"] = Field(
        "kl", description="D: kl = KL(softmax(teacher) ‖ softmax(logits)), bounded; mse = MSE of raw logits as in "
                          "the paper, which diverges for confident models unless lr · beta is small")
    exclude_own: bool = Field(True, description="each client's teacher for a label is the mean of the *other* "
                                                "clients' logits (as in the paper), not the mean including its own")
