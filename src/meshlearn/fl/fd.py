"""FD, federated distillation (Jeong et al. 2018): clients share per-label mean logits, never models.

Per round r:

    server  sends each selected client its teacher: the per-label mean logits of the last successful
            round, weighted by sample counts, with that client's own contribution left out
            (`FDSettings.exclude_own`, as in the paper) — labels nobody else holds are masked
    client  trains its own model on private data with CE + beta · MSE(logits, teacher[true label])
            (`learn.fd_tasks.FDTrainTask`), evaluates it on the shared test set, uploads its per-label
            mean logits (C, C), per-label counts (C,) and the test accuracy/loss
    server  validates (shapes, finite, counts sum to num_samples; else rejected and logged), sums the
            logits per label, records the round, checkpoints the table, next round

What the run-level `accuracy` means: FD has no global model, and every client's model is its own.
The server records the mean test accuracy (and loss) the round's clients reported for their own
models on the shared test set (the paper reports mean device accuracy too). A client's report is
only accepted when well-formed (a number in [0, 1]); a lying client can bias the mean by at most
1/|completed| — evaluation is not verifiable without a model, which FD by design never sends.
Clients also record their accuracy as a per-node metric (`client_accuracy`). Under label skew FD
cannot teach a client a class it never sees (the regulariser acts on its own labels only), so mean
client accuracy stays near local training's: 0.197 with 2 classes per client in bench_dsfl.py. A resumed run restores
the table but not who contributed what, so its first round's teachers include each client's own share.

Round control, crash tolerance and joins are FLServer's, through `fl.dsfl.DistillRoundServer`. The
round message's meta is `RoundTag`, `LocalTraining` and `TeacherTerm` (beta, distill_loss).

Message kinds. ONLY APPEND: the strings are part of the wire protocol between versions.

    client → server  fd.join      meta: {}
    server → client  fd.round     meta: round, epochs, batch_size, lr,        tensors: [teacher (C, C) float32,
                                        momentum, weight_decay, beta,                  teacher_mask (C,) bool]
                                        distill_loss, seed
    client → server  fd.upload    meta: round, num_samples, loss,             tensors: logits (C, C) float32,
                                        test_accuracy, test_loss                       counts (C,) int64
    server → client  fd.shutdown  meta: reason
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.fl import spec
from meshlearn.fl.dsfl import DistillRoundClient, DistillRoundServer, Kinds
from meshlearn.fl.messages import LocalTraining
from meshlearn.fl.selection import CostModel, Selector
from meshlearn.fl.server import RoundSettings, _Round
from meshlearn.learn.tasks import TRAIN_FLOPS_FACTOR, EvalTask, FDTrainTask
from meshlearn.node import Context
from meshlearn.wire import Message, MetaRecord

__all__ = ["JOIN", "ROUND", "UPLOAD", "SHUTDOWN", "FDServer", "FDClient", "FDSettings", "TeacherTerm", "build_fd"]

JOIN, ROUND, UPLOAD, SHUTDOWN = "fd.join", "fd.round", "fd.upload", "fd.shutdown"
Params = dict[str, np.ndarray]


class FDSettings(BaseModel):
    """FD, federated distillation (Jeong et al. 2018): clients share per-label mean logits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    beta: float = Field(0.5, ge=0, description="weight of the distillation term: CE + beta · D(logits, global "
                                               "mean logits of the sample's label)")
    distill_loss: Literal["kl", "mse"] = Field(
        "kl", description="D: kl = KL(softmax(teacher) ‖ softmax(logits)), bounded; mse = MSE of raw logits as in "
                          "the paper, which diverges for confident models unless lr · beta is small")
    exclude_own: bool = Field(True, description="each client's teacher for a label is the mean of the *other* "
                                                "clients' logits (as in the paper), not the mean including its own")


@dataclass(frozen=True)
class TeacherTerm(MetaRecord):
    """The FD regulariser a client trains with: CE + beta · D(logits, teacher[label])."""

    beta: float
    distill_loss: Literal["kl", "mse"]

    def problems(self) -> list[str]:
        return [] if self.beta >= 0 else ["beta >= 0"]


class FDServer(DistillRoundServer):
    """Keeps the per-label logit table; `params` (what it checkpoints) is that table."""

    KINDS = Kinds(JOIN, ROUND, UPLOAD, SHUTDOWN)

    def __init__(self, node_id: str, num_classes: int, settings: RoundSettings, fd: FDSettings, *,
                 min_clients: int = 1, resume: tuple[int, Params] | None = None, selector: Selector | None = None,
                 clients: Iterable[str] | None = None):
        c = int(num_classes)
        table = {"fd.sums": np.zeros((c, c), np.float64), "fd.counts": np.zeros(c, np.int64)}
        super().__init__(node_id, table, settings, min_clients=min_clients, resume=resume, selector=selector,
                         clients=clients)
        self.fd, self.num_classes = fd, c
        self.contributions: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # client → (sums, counts) in the table

    def teacher(self, client: str) -> tuple[np.ndarray, np.ndarray]:
        """(C, C) mean logits per label and the (C,) mask of labels that have any, for `client`."""
        sums, counts = self.params["fd.sums"], self.params["fd.counts"]
        if self.fd.exclude_own and client in self.contributions:
            own_sums, own_counts = self.contributions[client]
            sums, counts = sums - own_sums, counts - own_counts
        mask = counts > 0
        means = np.where(mask[:, None], sums / np.maximum(counts, 1)[:, None], 0.0)
        return means.astype(np.float32), mask

    def round_message(self, ctx: Context, number: int, client: str) -> Message:
        meta = {"round": number, **self.settings.training().to_meta(),
                **TeacherTerm(self.fd.beta, self.fd.distill_loss).to_meta(), "seed": int(ctx.rng.integers(2**31))}
        teacher, mask = self.teacher(client)
        tensors = {"teacher": teacher, "teacher_mask": mask} if mask.any() else {}
        return Message(ROUND, meta, tensors)

    def accept_upload(self, msg: Message) -> tuple[np.ndarray, np.ndarray]:
        c = self.num_classes
        logits, counts = msg.tensors.get("logits"), msg.tensors.get("counts")
        if logits is None or counts is None:
            raise ProtocolError(f"FD upload needs tensors 'logits' and 'counts', got {sorted(msg.tensors)}")
        if logits.shape != (c, c) or not np.issubdtype(logits.dtype, np.floating) or not np.all(np.isfinite(logits)):
            raise ProtocolError(f"'logits' must be a finite float ({c}, {c}) array, got {logits.dtype} {logits.shape}")
        if counts.shape != (c,) or counts.dtype.kind not in "iu" or np.any(counts < 0):
            raise ProtocolError(f"'counts' must be ({c},) non-negative integers, got {counts.dtype} {counts.shape}")
        if int(counts.sum()) != msg.meta.get("num_samples"):
            raise ProtocolError(f"'counts' sum to {int(counts.sum())}, not num_samples={msg.meta.get('num_samples')}")
        if msg.meta.get("test_accuracy") is None:
            raise ProtocolError("FD upload lacks test_accuracy (every FD client reports its own)")
        counts = counts.astype(np.int64)
        return logits.astype(np.float64) * counts[:, None], counts

    def conclude_round(self, ctx: Context, rnd: _Round, ok: bool) -> None:
        if ok:
            uploads = dict(sorted(rnd.updates.items()))
            self.contributions = {src: u.payload for src, u in uploads.items()}
            self.params = {"fd.sums": sum(p[0] for p in self.contributions.values()),
                           "fd.counts": sum(p[1] for p in self.contributions.values())}
        self._after_eval(ctx, self.reported_result(rnd))

    def record_extra(self, ctx: Context, rnd: _Round) -> None:
        ctx.record("labels_covered", float(np.count_nonzero(self.params["fd.counts"])), round=rnd.number)


class FDClient(DistillRoundClient):
    """Keeps its own model; per round: train with the FD regulariser, evaluate, upload per-label logits."""

    KINDS = Kinds(JOIN, ROUND, UPLOAD, SHUTDOWN)

    def __init__(self, node_id: str, server: str, params: Params, num_classes: int, *, rejoin_s: float = 30.0,
                 telemetry: dict | None = None):
        super().__init__(node_id, server, rejoin_s=rejoin_s, telemetry=telemetry)
        self.params, self.num_classes = params, int(num_classes)
        self.out: dict[str, Any] = {}

    def start_round(self, msg: Message) -> list[str]:
        c, t = self.num_classes, msg.tensors
        self.training, self.term = LocalTraining.from_meta(msg.meta), TeacherTerm.from_meta(msg.meta)
        teacher, mask = t.get("teacher", np.zeros((c, c), np.float32)), t.get("teacher_mask", np.zeros(c, bool))
        if teacher.shape != (c, c) or mask.shape != (c,) or mask.dtype != np.bool_ or not np.all(np.isfinite(teacher)):
            raise ProtocolError(f"teacher must be finite ({c}, {c}) with a ({c},) bool mask")
        self.teacher, self.mask, self.out = teacher.astype(np.float32), mask, {}
        return ["train", "evaluate"]

    def stage_task(self, stage: str):
        if stage == "train":
            tr = self.training
            return FDTrainTask(client=self.node_id, params=self.params, teacher=self.teacher, teacher_mask=self.mask,
                               beta=self.term.beta, loss=self.term.distill_loss, epochs=tr.epochs,
                               batch_size=tr.batch_size, lr=tr.lr, momentum=tr.momentum,
                               weight_decay=tr.weight_decay, seed=self.seed)
        return EvalTask(self.params)

    def absorb(self, stage: str, result) -> None:
        if stage == "train":
            self.params = result.params
            self.out = {"num_samples": int(result.num_samples), "loss": float(result.loss),
                        "logits": result.label_logits, "counts": result.label_counts}
        else:
            self.out |= {"test_accuracy": float(result.accuracy), "test_loss": float(result.loss)}

    def on_task_done(self, ctx: Context, task_id: int, result) -> None:
        if task_id == self.task_id and self.stage == "evaluate":
            ctx.record("client_accuracy", float(result.accuracy), round=self.task_round, per_node=True)
        super().on_task_done(ctx, task_id, result)

    def upload(self) -> Message:
        o = self.out
        meta = {"round": self.task_round, "num_samples": o["num_samples"], "loss": o["loss"],
                "test_accuracy": o["test_accuracy"], "test_loss": o["test_loss"]}
        return Message(UPLOAD, meta, {"logits": o["logits"], "counts": o["counts"]})


def build_fd(setup: spec.Setup) -> spec.Plan:
    """FD nodes: the server keeping the logit table and one client per id. No open set needed."""
    ws, ids = setup.workspace, setup.client_ids
    if not ids:
        raise UsageError("FD needs at least one client")
    c, params, telemetry = ws.train.num_classes, setup.initial_params(), setup.telemetry()
    cost = CostModel(32.0 * c * c + 64.0 * c, ws.flops_per_sample * (TRAIN_FLOPS_FACTOR * setup.config.fl.epochs + 1))
    server = FDServer(spec.SERVER, c, setup.config.fl, setup.settings, min_clients=len(ids), resume=setup.resume,
                      selector=setup.selector(cost), clients=ids)
    clients = [FDClient(cid, spec.SERVER, params, c, telemetry=telemetry.get(cid)) for cid in ids]
    return spec.Plan([server, *clients], progress=lambda: server.completed_round)


spec.register(spec.AlgorithmSpec(
    "fd", "federated distillation: clients share per-label mean logits, never models", build_fd,
    section="fd", settings=FDSettings, roles=("server", "client")))
