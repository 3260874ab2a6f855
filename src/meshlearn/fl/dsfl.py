"""DS-FL (Itahara et al., IEEE TMC 2023): federated learning by sharing soft labels on an open set.

Models never travel. Each client keeps its own model across rounds; per round r (spec §1):

    server  picks I_r ⊂ open set (its ctx.rng), sends I_r and the previous aggregate ŷ_{r-1} on I_{r-1}
    client  distils on (I_{r-1}, ŷ_{r-1}) [KL] → trains on its private data [CE] → predicts softmax on I_r
            → uploads the (|I_r|, C) probabilities
    server  validates each upload (shape, finite, rows sum to 1: else rejected and logged), aggregates
            them with SA or ERA (`fl.softlabels`), distils its own model on (I_r, ŷ_r), evaluates it,
            records the round (the same metrics as FLServer), checkpoints, next round

Round control (joins, selection, deadline, min_completion, crash, rejoin) is FLServer's, adapted by
`DistillRoundServer` / `DistillRoundClient` to payloads that are not parameters (FD reuses them). A
client's model survives a crash (it is on the device's disk); a *resumed* run restarts client models
from the initial parameters: only the server checkpoints (its model, ŷ and I of the last round).

Message kinds. ONLY APPEND: the strings are part of the wire protocol between versions.

    client → server  dsfl.join      meta: {}
    server → client  dsfl.round     meta: round, epochs, batch_size, lr,        tensors: indices (int32, I_r),
                                          momentum, weight_decay, distill_*,      [prev_indices (int32, I_{r-1}),
                                          encoding, evaluate, seed                 probs | probs_q8 (ŷ_{r-1})]
    client → server  dsfl.upload    meta: round, num_samples, loss,             tensors: probs | probs_q8
                                          [test_accuracy, test_loss]                     (|I_r|, C)
    server → client  dsfl.shutdown  meta: reason

The round message's meta is three typed records (`fl.messages.RoundTag`, `LocalTraining`,
`Distillation` with the prefix ``distill_``) plus `SoftLabelRound` (encoding, evaluate).

Settings (`DSFLSettings`, the ``[dsfl]`` section) defaults other than the spec's (ERA, T = 0.1, 200
open samples per round) come from the sweep in `benchmarks/bench_dsfl.py` (digits, 20 clients × 2
classes, 600k-parameter MLP): clients distil gently (1 epoch, lr 0.005) because their distillation
feeds the next round's soft labels back to them and a stronger pull locks in consensus errors; the
server, outside that loop, distils harder.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.fl import spec
from meshlearn.fl.client import FLClient
from meshlearn.fl.messages import Kinds, LocalTraining, RoundTag
from meshlearn.fl.selection import CostModel, Selector
from meshlearn.fl.server import FLServer, RoundSettings, _finite, _positive_int, _Round
from meshlearn.fl.softlabels import (SOFT_AGGREGATORS, check_indices, check_soft_labels, decode_soft, encode_soft,
                                     entropy)
from meshlearn.learn.tasks import TRAIN_FLOPS_FACTOR, DistillTask, EvalResult, EvalTask, PredictTask
from meshlearn.node import Context
from meshlearn.wire import Message, MetaRecord
from meshlearn.wire.quant import reject_old_name

__all__ = ["JOIN", "ROUND", "UPLOAD", "SHUTDOWN", "Kinds", "DistillRoundServer", "DistillRoundClient",
           "DSFLServer", "DSFLClient", "DSFLSettings", "Distillation", "SoftLabelRound", "Upload", "build_dsfl"]

Params = dict[str, np.ndarray]

JOIN, ROUND, UPLOAD, SHUTDOWN = "dsfl.join", "dsfl.round", "dsfl.upload", "dsfl.shutdown"
_PREFIX = "dsfl."  # checkpoint tensors that are protocol state, not model parameters


class DSFLSettings(BaseModel):
    """DS-FL (Itahara et al., IEEE TMC 2023): clients share soft labels on a shared unlabelled set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    def distillation(self) -> "Distillation":
        """The clients' distillation step of every round."""
        return Distillation(self.distill_epochs, self.distill_lr, self.distill_batch_size, self.distill_momentum)

    def server_distillation(self) -> "Distillation":
        """The server's distillation of its own model on each round's aggregate."""
        return Distillation(self.server_distill_epochs, self.server_distill_lr, self.distill_batch_size,
                            self.distill_momentum)


@dataclass(frozen=True)
class Distillation(MetaRecord):
    """How a client distils on the previous round's aggregate (meta keys ``distill_*``)."""

    epochs: int
    lr: float
    batch_size: int
    momentum: float

    def problems(self) -> list[str]:
        rules = (("epochs >= 0", self.epochs >= 0), ("lr > 0", self.lr > 0), ("batch_size >= 1", self.batch_size >= 1),
                 ("0 <= momentum < 1", 0 <= self.momentum < 1))
        return [rule for rule, ok in rules if not ok]

    def task(self, node: str, params: Params, indices: np.ndarray, targets: np.ndarray, seed: int) -> DistillTask:
        """The DistillTask that pulls ``params``' outputs on open rows ``indices`` towards ``targets`` (KL)."""
        return DistillTask(client=node, params=params, indices=indices, targets=targets, loss="kl", epochs=self.epochs,
                           batch_size=self.batch_size, lr=self.lr, momentum=self.momentum, seed=seed)


@dataclass(frozen=True)
class SoftLabelRound(MetaRecord):
    """The soft-label encoding both ways, and whether the client evaluates its own model."""

    encoding: Literal["fp32", "fp16", "simplex8"]
    evaluate: bool


@dataclass(frozen=True)
class Upload:
    """A validated client upload: the payload plus what every protocol reports."""

    payload: Any
    num_samples: int
    test_accuracy: float | None = None
    test_loss: float | None = None


# ====================================================================== shared round control


class DistillRoundServer(FLServer):
    """FLServer's round control with soft-label payloads: uploads become ``Upload`` records.

    Subclasses set ``KINDS`` and fill in ``prepare_round``, ``round_message``, ``accept_upload``
    (the validated payload) and ``conclude_round`` (see ``FLServer``).
    """

    KINDS: ClassVar[Kinds]

    def on_start(self, ctx: Context) -> None:
        self.pending_task: int | None = None  # a protocol task before evaluation (DS-FL: server distillation)
        super().on_start(ctx)

    def accept(self, msg: Message) -> tuple[Upload, int]:
        upload = Upload(self.accept_upload(msg), _positive_int(msg.meta.get("num_samples")),
                        *_reported_eval(msg.meta))
        return upload, upload.num_samples

    def accept_upload(self, msg: Message):
        """The validated payload of one upload (raise ProtocolError to reject it)."""
        raise NotImplementedError

    @staticmethod
    def reported_result(rnd: _Round) -> EvalResult:
        """Mean of the test accuracy/loss the round's clients reported on their own models (NaN if none)."""
        done = [u for _, u in sorted(rnd.updates.items()) if u.test_accuracy is not None]
        if not done:
            return EvalResult(math.nan, math.nan, 0)
        return EvalResult(float(np.mean([u.test_accuracy for u in done])),
                          float(np.mean([u.test_loss for u in done])), len(done))


def _reported_eval(meta: dict) -> tuple[float | None, float | None]:
    acc, loss = meta.get("test_accuracy"), _finite(meta.get("test_loss"))
    if acc is None:
        return None, None
    if _finite(acc) is None or not 0.0 <= acc <= 1.0 or loss is None or loss < 0:
        raise ProtocolError(f"test_accuracy must be in [0, 1] and test_loss >= 0, got {acc!r} and {loss!r}")
    return float(acc), loss


class DistillRoundClient(FLClient):
    """FLClient's join/rejoin/shutdown with a chain of tasks per round: subclasses fill in four hooks.

        start_round(msg) -> list[str]   decode the round message (raise ProtocolError if malformed): stage names
        stage_task(stage) -> task       the task of one stage (built when the previous one finished)
        absorb(stage, result)           keep what a finished stage produced
        upload() -> Message             sent after the last stage

    A malformed round message raises ProtocolError out of the handler: the runtime logs and counts it
    (``peer_errors``) and the client keeps waiting for a good one.
    """

    KINDS: ClassVar[Kinds]

    def on_start(self, ctx: Context) -> None:
        self.stages, self.stage = [], None
        super().on_start(ctx)

    def _on_round(self, ctx: Context, msg: Message) -> None:
        tag = RoundTag.from_meta(msg.meta)
        stages = self.start_round(msg)
        self.task_round, self.seed, self.stages = tag.round, tag.seed, list(stages)
        self._next_stage(ctx)

    def _next_stage(self, ctx: Context) -> None:
        if not self.stages:
            ctx.send(self.server, self.upload())
            self.task_id = self.stage = None
            return
        self.stage = self.stages.pop(0)
        self.task_id = ctx.submit(self.stage_task(self.stage))

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id != self.task_id:
            return  # a stage of an abandoned round
        self.absorb(self.stage, result)
        self._next_stage(ctx)


# ====================================================================== DS-FL


class DSFLServer(DistillRoundServer):
    """Selects clients, labels a fresh open subset each round with their aggregated soft labels."""

    KINDS = Kinds(JOIN, ROUND, UPLOAD, SHUTDOWN)

    def __init__(self, node_id: str, params: Params, settings: RoundSettings, dsfl: DSFLSettings, num_open: int,
                 num_classes: int, *, min_clients: int = 1, resume: tuple[int, Params] | None = None,
                 selector: Selector | None = None, clients: Iterable[str] | None = None):
        if num_open < 1:
            raise UsageError("DS-FL needs a shared unlabelled set; set data.open_size > 0 (or data.open_path)")
        state = {k: v for k, v in (resume[1] if resume else {}).items() if k.startswith(_PREFIX)}
        resume = (resume[0], {k: v for k, v in resume[1].items() if k not in state}) if resume else None
        super().__init__(node_id, params, settings, min_clients=min_clients, resume=resume, selector=selector,
                         clients=clients)
        self.dsfl, self.num_open, self.num_classes = dsfl, int(num_open), int(num_classes)
        fn = SOFT_AGGREGATORS.get(dsfl.aggregation)  # SA takes no temperature; ERA (and plug-ins) may
        self.aggregate_soft = partial(fn, **{k: v for k, v in {"temperature": dsfl.temperature}.items()
                                             if k in inspect.signature(fn).parameters})
        self.soft: np.ndarray | None = state.get(_PREFIX + "soft_labels")  # ŷ of the last successful round
        self.soft_indices: np.ndarray | None = state.get(_PREFIX + "indices")  # its I
        self.subset = np.zeros(0, np.int64)  # I_r of the round in flight

    def prepare_round(self, ctx: Context, number: int) -> None:
        size = min(self.dsfl.subset_size, self.num_open)
        self.subset = np.sort(ctx.rng.choice(self.num_open, size=size, replace=False)).astype(np.int64)
        tensors = {"indices": self.subset.astype(np.int32)}
        if self.soft is not None:
            tensors |= {"prev_indices": self.soft_indices.astype(np.int32),
                        **encode_soft(self.soft, self.dsfl.soft_label_encoding)}
        self._round_tensors = tensors

    def round_message(self, ctx: Context, number: int, client: str) -> Message:
        d = self.dsfl
        meta = {"round": number, **self.settings.training().to_meta(), **d.distillation().to_meta("distill_"),
                **SoftLabelRound(d.soft_label_encoding, not d.server_distill).to_meta(),
                "seed": int(ctx.rng.integers(2**31))}
        return Message(ROUND, meta, self._round_tensors)

    def accept_upload(self, msg: Message) -> np.ndarray:
        probs = decode_soft(msg.tensors)
        check_soft_labels(probs, (len(self.subset), self.num_classes), self.dsfl.soft_label_encoding)
        if not self.dsfl.server_distill and msg.meta.get("test_accuracy") is None:
            raise ProtocolError("upload lacks test_accuracy, which this server asked for (evaluate = true)")
        return probs

    def conclude_round(self, ctx: Context, rnd: _Round, ok: bool) -> None:
        if ok:
            self.soft = self.aggregate_soft([u.payload for _, u in sorted(rnd.updates.items())])
            self.soft_indices = self.subset
        if not self.dsfl.server_distill:
            self._after_eval(ctx, self.reported_result(rnd))
        elif ok:
            task = self.dsfl.server_distillation().task(self.node_id, self.params, self.subset, self.soft,
                                                        int(ctx.rng.integers(2**31)))
            self.pending_task = ctx.submit(task)
        else:
            self._submit_eval(ctx)

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id == self.pending_task and self.round is not None:
            self.pending_task, self.params = None, result.params
            self._submit_eval(ctx)
        elif task_id == self.eval_task_id:
            self._after_eval(ctx, result)

    def record_extra(self, ctx: Context, rnd: _Round) -> None:
        value = float(entropy(self.soft).mean()) if self.soft is not None else math.nan
        ctx.record("soft_label_entropy", value, round=rnd.number)

    def checkpoint_tensors(self) -> Params:
        if self.soft is None:
            return self.params
        return {**self.params, _PREFIX + "soft_labels": self.soft, _PREFIX + "indices": self.soft_indices}


class DSFLClient(DistillRoundClient):
    """Keeps its own model; per round: distil on the last aggregate, train privately, predict on I_r."""

    KINDS = Kinds(JOIN, ROUND, UPLOAD, SHUTDOWN)

    def __init__(self, node_id: str, server: str, params: Params, num_open: int, *, rejoin_s: float = 30.0,
                 telemetry: dict | None = None):
        super().__init__(node_id, server, rejoin_s=rejoin_s, telemetry=telemetry)
        self.params, self.num_open = params, int(num_open)
        self.out: dict[str, Any] = {}  # what its stages produced

    def start_round(self, msg: Message) -> list[str]:
        t, m = msg.tensors, msg.meta
        self.training, self.distill = LocalTraining.from_meta(m), Distillation.from_meta(m, "distill_")
        self.options = SoftLabelRound.from_meta(m)
        indices, prev = check_indices(t, "indices", self.num_open), None
        if "prev_indices" in t:
            prev = (check_indices(t, "prev_indices", self.num_open), decode_soft(t))
            if prev[1].shape[0] != len(prev[0]):
                raise ProtocolError(f"{len(prev[0])} previous indices but {prev[1].shape[0]} soft-label rows")
        self.indices, self.prev, self.out = indices, prev, {}
        stages = ["distill"] if prev is not None and self.distill.epochs > 0 else []
        return stages + ["train", "predict"] + (["evaluate"] if self.options.evaluate else [])

    def stage_task(self, stage: str):
        if stage == "distill":
            return self.distill.task(self.node_id, self.params, *self.prev, self.seed)
        if stage == "train":
            return self.training.task(self.node_id, self.params, (self.seed + 1) % 2**31)
        if stage == "predict":
            return PredictTask(self.params, self.indices)
        return EvalTask(self.params)

    def absorb(self, stage: str, result) -> None:
        if stage in ("distill", "train"):
            self.params = result.params
        if stage == "train":
            self.out |= {"num_samples": int(result.num_samples), "loss": float(result.loss)}
        elif stage == "predict":
            self.out["probs"] = result.probs
        elif stage == "evaluate":
            self.out |= {"test_accuracy": float(result.accuracy), "test_loss": float(result.loss)}

    def upload(self) -> Message:
        meta = {"round": self.task_round, **{k: v for k, v in self.out.items() if k != "probs"}}
        return Message(UPLOAD, meta, encode_soft(self.out["probs"], self.options.encoding))


# ====================================================================== the algorithm spec


def round_cost(settings: DSFLSettings, workspace, epochs: int) -> CostModel:
    """A DS-FL round for resource-aware selectors: fp32 soft labels each way, local training of the model."""
    rows = min(settings.subset_size, len(workspace.open))
    return CostModel(32.0 * rows * workspace.train.num_classes, TRAIN_FLOPS_FACTOR * workspace.flops_per_sample * epochs)


def build_dsfl(setup: spec.Setup) -> spec.Plan:
    """DS-FL nodes: the server (selector from [selection]) and one client per id, all on the same initial model."""
    ws, settings, ids = setup.workspace, setup.settings, setup.client_ids
    if ws.open is None:
        raise UsageError("DS-FL needs a shared unlabelled set; set data.open_size > 0 (or data.open_path)")
    params, num_open, telemetry = setup.initial_params(), len(ws.open), setup.telemetry()
    selector = setup.selector(round_cost(settings, ws, setup.config.fl.epochs))
    server = DSFLServer(spec.SERVER, params, setup.config.fl, settings, num_open, ws.train.num_classes,
                        min_clients=len(ids), resume=setup.resume, selector=selector, clients=ids)
    clients = [DSFLClient(c, spec.SERVER, params, num_open, telemetry=telemetry.get(c)) for c in ids]
    return spec.Plan([server, *clients], progress=lambda: server.completed_round)


spec.register(spec.AlgorithmSpec(
    "dsfl", "distillation on soft labels of a shared unlabelled set (SA or ERA aggregation)", build_dsfl,
    section="dsfl", settings=DSFLSettings, roles=("server", "client"), open_set=True))
