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
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Callable, ClassVar

import numpy as np

from meshlearn.errors import PeerError, ProtocolError, UsageError
from meshlearn.fl.client import FLClient
from meshlearn.fl.distill_settings import DSFLSettings
from meshlearn.fl.messages import Kinds
from meshlearn.fl.selection import Selector
from meshlearn.fl.server import FLServer, ServerSettings, _finite, _positive_int, _Round
from meshlearn.fl.softlabels import (SOFT_AGGREGATORS, SOFT_ENCODINGS, check_indices, check_soft_labels, decode_soft,
                                     encode_soft, entropy)
from meshlearn.learn import DistillTask, EvalResult, EvalTask, Params, PredictTask, TrainTask, initial_params
from meshlearn.node import Context, Node
from meshlearn.wire import Message

__all__ = ["JOIN", "ROUND", "UPLOAD", "SHUTDOWN", "Kinds", "DistillRoundServer", "DistillRoundClient",
           "DSFLServer", "DSFLClient", "Upload", "build_dsfl", "server_settings_from"]

JOIN, ROUND, UPLOAD, SHUTDOWN = "dsfl.join", "dsfl.round", "dsfl.upload", "dsfl.shutdown"
_PREFIX = "dsfl."  # checkpoint tensors that are protocol state, not model parameters


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
    """FLClient's join/rejoin/shutdown with a chain of tasks per round: subclasses fill in three hooks.

        start_round(msg) -> list[str]   decode the round message (raise PeerError to ignore it): stage names
        stage_task(stage) -> task       the task of one stage (built when the previous one finished)
        absorb(stage, result)           keep what a finished stage produced
        upload() -> Message             sent after the last stage
    """

    KINDS: ClassVar[Kinds]
    REQUIRED_META: ClassVar[tuple[str, ...]] = ("round",)  # a round message without them is ignored

    def on_start(self, ctx: Context) -> None:
        self.stages, self.stage = [], None
        super().on_start(ctx)

    def _on_round(self, ctx: Context, msg: Message) -> None:
        try:
            missing = [k for k in self.REQUIRED_META if k not in msg.meta]
            if missing:
                raise ProtocolError(f"round message lacks meta {missing}")
            stages = self.start_round(msg)
        except PeerError as err:
            ctx.log(f"ignored round message from {self.server}: {err}", level="warning")
            return
        self.task_round, self.stages = msg.meta.get("round"), list(stages)
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


def server_settings_from(common: dict[str, Any], num_clients: int) -> ServerSettings:
    """FLServer's settings from the FedAvg-style `common` keys; `min_clients` defaults to every client."""
    allowed = {f.name for f in fields(ServerSettings)} - {"prox_mu", "aggregator"}  # FedAvg/FedProx only
    unknown = sorted(set(common) - allowed)
    if unknown:
        raise UsageError(f"unknown round settings {unknown} (valid: {', '.join(sorted(allowed))})")
    return ServerSettings(**{"min_clients": num_clients, **common})


# ====================================================================== DS-FL


class DSFLServer(DistillRoundServer):
    """Selects clients, labels a fresh open subset each round with their aggregated soft labels."""

    KINDS = Kinds(JOIN, ROUND, UPLOAD, SHUTDOWN)

    def __init__(self, node_id: str, params: Params, settings: ServerSettings, dsfl: DSFLSettings, num_open: int,
                 num_classes: int, eval_task_factory: Callable[[Params], object] = EvalTask,
                 resume: tuple[int, Params] | None = None, selector: Selector | None = None):
        if num_open < 1:
            raise UsageError("DS-FL needs a shared unlabelled set; set data.open_size > 0 (or data.open_path)")
        state = {k: v for k, v in (resume[1] if resume else {}).items() if k.startswith(_PREFIX)}
        resume = (resume[0], {k: v for k, v in resume[1].items() if k not in state}) if resume else None
        super().__init__(node_id, params, settings, eval_task_factory, resume=resume, selector=selector)
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
        s, d = self.settings, self.dsfl
        meta = dict(round=number, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, momentum=s.momentum,
                    weight_decay=s.weight_decay, distill_epochs=d.distill_epochs, distill_lr=d.distill_lr,
                    distill_batch_size=d.distill_batch_size, distill_momentum=d.distill_momentum,
                    encoding=d.soft_label_encoding, evaluate=not d.server_distill, seed=int(ctx.rng.integers(2**31)))
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
            task = DistillTask(client=self.node_id, params=self.params, indices=self.subset, targets=self.soft,
                               loss="kl", epochs=self.dsfl.server_distill_epochs,
                               batch_size=self.dsfl.distill_batch_size, lr=self.dsfl.server_distill_lr,
                               momentum=self.dsfl.distill_momentum, seed=int(ctx.rng.integers(2**31)))
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
    REQUIRED_META = ("round", "epochs", "batch_size", "lr", "momentum", "weight_decay", "distill_epochs",
                     "distill_lr", "distill_batch_size", "distill_momentum", "seed")

    def __init__(self, node_id: str, server: str, params: Params, num_open: int,
                 train_task_factory: Callable[..., object] = TrainTask, rejoin_s: float = 30.0):
        super().__init__(node_id, server, train_task_factory, rejoin_s)
        self.params, self.num_open = params, int(num_open)
        self.meta: dict[str, Any] = {}  # of the round in progress
        self.out: dict[str, Any] = {}  # what its stages produced

    def start_round(self, msg: Message) -> list[str]:
        t, m = msg.tensors, msg.meta
        if m.get("encoding", "fp32") not in SOFT_ENCODINGS:
            raise ProtocolError(f"unknown soft-label encoding {m['encoding']!r} (valid: {', '.join(SOFT_ENCODINGS)})")
        indices, prev = check_indices(t, "indices", self.num_open), None
        if "prev_indices" in t:
            prev = (check_indices(t, "prev_indices", self.num_open), decode_soft(t))
            if prev[1].shape[0] != len(prev[0]):
                raise ProtocolError(f"{len(prev[0])} previous indices but {prev[1].shape[0]} soft-label rows")
        self.indices, self.prev, self.meta, self.out = indices, prev, m, {}
        stages = ["distill"] if prev is not None and m["distill_epochs"] > 0 else []
        return stages + ["train", "predict"] + (["evaluate"] if m.get("evaluate") else [])

    def stage_task(self, stage: str):
        m = self.meta
        if stage == "distill":
            return DistillTask(client=self.node_id, params=self.params, indices=self.prev[0], targets=self.prev[1],
                               loss="kl", epochs=m["distill_epochs"], batch_size=m["distill_batch_size"],
                               lr=m["distill_lr"], momentum=m["distill_momentum"], seed=m["seed"])
        if stage == "train":
            return self.make_train_task(client=self.node_id, params=self.params, epochs=m["epochs"],
                                        batch_size=m["batch_size"], lr=m["lr"], momentum=m["momentum"],
                                        weight_decay=m["weight_decay"], seed=(m["seed"] + 1) % 2**31)
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
        return Message(UPLOAD, meta, encode_soft(self.out["probs"], self.meta.get("encoding", "fp32")))


def build_dsfl(settings: DSFLSettings, common: dict[str, Any], workspace, client_ids: list[str],
               resume: tuple[int, Params] | None = None, server_id: str = "server") -> tuple[list[Node], list[str]]:
    """DS-FL nodes over `workspace` (which needs an open set): (nodes, ids whose stop() ends the run)."""
    params, num_open = initial_params(workspace), 0 if workspace.open is None else len(workspace.open)
    server = DSFLServer(server_id, params, server_settings_from(common, len(client_ids)), settings, num_open,
                        workspace.train.num_classes, resume=resume)
    clients = [DSFLClient(c, server_id, params, num_open) for c in client_ids]
    return [server, *clients], [server_id]
