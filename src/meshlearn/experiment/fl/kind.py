"""The ``fl`` experiment kind: federated and decentralized learning, simulated into the run store.

``check`` finds what the config model cannot see (files that are not there, faults or attackers naming
nodes the run does not have, settings the chosen algorithm never reads); ``prepare`` builds the simulation;
``run`` drives it round by round: metrics are flushed after every round, the server checkpoints every
completed round (resumable algorithms), and a client that never makes the deadline is reported
while the run goes on. Real processes (``serve`` / ``join`` / ``peer``) are in ``deploy.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel

from meshlearn.config import diff_from_default
from meshlearn.errors import ConfigError
from meshlearn.experiment.fl import build
from meshlearn.experiment.fl.schema import config_model
from meshlearn.experiment.kinds import ExperimentKind, Outcome, RunContext, register
from meshlearn.fl.metrics import time_to_accuracy
from meshlearn.fl.spec import ALGORITHMS, SERVER

__all__ = ["RoundSink", "check", "check_data_path", "participation_warning", "ROUND_KEYS"]

ROUND_KEYS = ["accuracy", "loss", "bytes_up", "bytes_down", "clients_completed", "clients_dropped", "virtual_time",
              "wall_time"]
PEER_BYTES = "bytes_total"  # peer-to-peer algorithms: wire bytes of all nodes since the previous row
TIME_KEYS = ("virtual_time", "wall_time")  # the last metric of a round: simulated or real clock
NEVER_AFTER = 3  # rounds a client must have been selected for before "never contributes" is reported


# ----- checks before a run exists ---------------------------------------------------------------
def check(cfg: Any) -> None:
    """Config problems the model cannot see, as ConfigError (exit 2), before any run directory exists."""
    check_data_path(cfg)
    _check_faults(cfg)
    _check_open_set(cfg)
    _check_unread(cfg)
    _check_attackers(cfg)


def check_data_path(cfg: Any) -> None:
    """data.path and data.open_path must exist here (ConfigError, exit 2, saying how to point at them)."""
    for key in ("path", "open_path"):
        path = getattr(cfg.data, key)
        if path is not None and not Path(path).expanduser().exists():
            raise ConfigError(f"data.{key}", f"no file or directory {path!r} (relative paths are read from "
                              f"{Path.cwd()}); fix the path in the config or pass --set data.{key}=PATH")


_DROP_FAULT = {"faults.crashes": "drop the crashes with --set faults.crashes=[]",
               "faults.partitions": "drop the partitions with --set faults.partitions=[]"}


def _check_faults(cfg: Any) -> None:
    """Faults may only name nodes the run has; the error says which ones exist and how to drop the fault."""
    ids = build.client_ids(cfg.data.clients)
    nodes = ([SERVER] if build.spec_of(cfg).server else []) + ids
    try:
        cfg.faults.expand(nodes, np.random.default_rng(0), 0.0)
    except ConfigError as err:
        if not err.key.startswith("faults.") or "unknown node" not in err.reason:
            raise
        section = next((v for k, v in _DROP_FAULT.items() if err.key.startswith(k)), None)
        drop = f", or {section}" if section else ""
        server = "server and " if nodes[0] == SERVER else ""
        raise ConfigError(err.key, f"{err.reason}: data.clients = {cfg.data.clients} gives the nodes {server}"
                          f"{ids[0]} … {ids[-1]}; name one of those, raise data.clients{drop}") from None


def _check_open_set(cfg: Any) -> None:
    spec, d = build.spec_of(cfg), cfg.data
    has_open = d.open_size > 0 or d.open_path is not None
    if spec.open_set and not has_open:
        raise ConfigError("data.open_size", f"{spec.name} exchanges outputs on a shared unlabelled set: set "
                          "data.open_size > 0 (e.g. 300) or data.open_path")
    # an open set with an algorithm that does not distil is not ignored: it still holds those samples out of
    # training, which is how comparisons give every algorithm the same private data


def _check_attackers(cfg: Any) -> None:
    """attack.clients must name clients of this run."""
    ids = build.client_ids(cfg.data.clients)
    unknown = sorted(set(cfg.attack.clients) - set(ids))
    if unknown:
        raise ConfigError("attack.clients", f"{', '.join(map(repr, unknown))} not among this run's clients "
                          f"{ids[0]} … {ids[-1]} (data.clients = {cfg.data.clients})")


def _check_unread(cfg: Any) -> None:
    """A section or key the chosen algorithm never reads, set to a non-default value, is an error."""
    spec = build.spec_of(cfg)
    for key, reason in spec.unread().items():
        if _changed(cfg, key):
            raise ConfigError(key, f"not read by {spec.name}: {reason}; set it back to its default (e.g. --set "
                              f"{key}={_default_text(cfg, key)}) or pick another algorithm")
    for name, other in ALGORITHMS.items():
        if other.section and other.section != spec.section and _changed(cfg, other.section):
            users = [n for n, s in ALGORITHMS.items() if s.section == other.section]
            raise ConfigError(other.section, f"settings of {' / '.join(users)}, but fl.algorithm = {spec.name!r}: "
                              "they would be ignored; drop them or change fl.algorithm")


def _field(cfg: Any, key: str) -> tuple[Any, Any]:
    """The value at dotted ``key`` and its field's default."""
    *parents, last = key.split(".")
    model = cfg
    for part in parents:
        model = getattr(model, part)
    return getattr(model, last), type(model).model_fields[last].get_default(call_default_factory=True)


def _default_text(cfg: Any, key: str) -> str:
    default = _field(cfg, key)[1]
    return "{}" if default is None or isinstance(default, BaseModel) or default == {} else repr(default)


def _changed(cfg: Any, key: str) -> bool:
    """Whether the dotted ``key`` (a section or a field; ``fl`` ignoring its algorithm) differs from its default."""
    value, default = _field(cfg, key)
    if key == "fl":
        return bool({k for k in diff_from_default(value, default) if k != "algorithm"})
    return value != default


# ----- running ------------------------------------------------------------------------------------
class RoundSink:
    """Metric sink into the run's SQLite store; flushes and reports each finished round.

    ``time_key`` names the round clock: ``virtual_time`` in simulation, ``wall_time`` on real sockets
    (nodes record ``virtual_time``; a real run stores it under its true name)."""

    def __init__(self, run: Any, on_round: Callable[[int, dict], None] | None, time_key: str = "virtual_time"):
        self.db, self.on_round, self.time_key = run.metrics, on_round, time_key
        self.current: dict[str, float] = {}

    def log(self, key, value, *, round=None, node=None, t_sim=None, t_wall=None) -> None:
        key = self.time_key if key == "virtual_time" else key
        self.db.log(key, value, round=round, node=node, t_sim=t_sim, t_wall=t_wall)
        if node is None and round is not None:
            self.current[key] = value
            if key == self.time_key:  # the last metric of a round
                self.db.flush()
                if self.on_round:
                    self.on_round(round, dict(self.current))
                self.current = {}


def participation_warning(server: Any, done: set[str]) -> str | None:
    """A warning naming the clients that missed every round they were selected for (each named once)."""
    counts = getattr(server, "participation", {})
    never = sorted(c for c, (picked, ok) in counts.items() if picked >= NEVER_AFTER and ok == 0 and c not in done)
    if not never:
        return None
    done.update(never)
    shown = ", ".join(never[:8]) + (" …" if len(never) > 8 else "")
    return (f"{len(never)} client(s) have missed the deadline in every round they were selected for "
            f"({shown}): their devices are too slow or their links too lossy for fl.round_deadline_s = "
            f"{server.settings.round_deadline_s:g} s")


class SimulatedFL:
    """A prepared simulated FL run (the kind's ``Prepared``)."""

    def __init__(self, cfg: Any, state: tuple[tuple[int, dict] | None, float] | None):
        resume, self.t0 = state if state is not None else (None, 0.0)
        self.cfg, self.sim = cfg, build.build_simulation(cfg, resume=resume, start_time=self.t0)
        self.total = self.sim.spec.rounds(cfg)

    def run(self, ctx: RunContext) -> Outcome:
        warned: set[str] = set()

        def on_round(number: int, metrics: dict) -> None:
            ctx.progress(number, metrics)
            warning = participation_warning(self.sim.server, warned) if self.sim.server is not None else None
            if warning:
                ctx.log(warning, level="warning")

        sim = self.sim.sim
        sim.sink = RoundSink(ctx.run, on_round)
        if self.cfg.runtime.checkpoint and self.sim.spec.resumable:
            sim.on_checkpoint = lambda node, rnd, tensors, meta: ctx.run.save_checkpoint(rnd, tensors, meta)
        sim.run(until=self.t0 + self.sim.horizon_s)
        if self.sim.plan.on_end:
            self.sim.plan.on_end()
        return _outcome(ctx.run, self.sim, sim.stopped)

    def close(self) -> None:
        self.sim.sim.executor.close()


def _outcome(run: Any, s: build.Simulation, stopped: bool) -> Outcome:
    run.metrics.flush()
    rows = run.metrics.round_table(ROUND_KEYS)
    rounds, total = s.completed_rounds, s.spec.rounds(s.config)
    done = (stopped and getattr(s.server, "gave_up", None) is None) or rounds >= total
    info = {"completed_round": rounds, "final_accuracy": rows[-1].get("accuracy") if rows else None,
            "bytes_up": sum(r.get("bytes_up", 0) for r in rows), "bytes_down": sum(r.get("bytes_down", 0) for r in rows),
            **_participation(s.server)}
    if done:
        return Outcome("completed", info)
    why = getattr(s.server, "gave_up", None) or (
        f"no progress within {s.horizon_s:.0f} virtual seconds (is the server crashed for good, or are too few "
        "clients alive for fl.min_completion?)")
    return Outcome("stopped", info, error=f"run {run.id} stopped at round {rounds} of {total}: {why}")


def _participation(server: Any) -> dict[str, Any]:
    counts = getattr(server, "participation", None)
    if not counts:
        return {}
    never = sorted(c for c, (picked, ok) in counts.items() if ok == 0)
    return {"clients_contributed": sum(1 for _, ok in counts.values() if ok), "clients_selected": len(counts),
            "clients_never_contributed": never}


def _resume(run: Any, cfg: Any) -> tuple[tuple[int, dict] | None, float]:
    ckpt = run.latest_checkpoint()
    if ckpt is None:
        run.metrics.delete_after_round(0)
        return None, 0.0
    done, tensors, meta = ckpt
    run.metrics.delete_after_round(done)
    return (done, tensors), float(meta.get("virtual_time", 0.0))


# ----- what the CLI and `runs` show ---------------------------------------------------------------
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and value.is_integer():
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _rows(run: Any, keys: list[str] = ROUND_KEYS) -> list[dict]:
    db = run.metrics_reader()
    return db.round_table(keys) if db is not None else []


def _wire_bytes(rows: list[dict]) -> int:
    """All bytes the run put on the wire: up + down of server rounds, or the peers' ``bytes_total`` per row."""
    return int(sum(r.get(PEER_BYTES, r.get("bytes_up", 0) + r.get("bytes_down", 0)) for r in rows))


def _time_key(rows: list[dict]) -> str:
    return "wall_time" if any("wall_time" in r for r in rows) else "virtual_time"


def summary(run: Any) -> list[tuple[str, str]]:
    info, rows = run.reload(), _rows(run, [*ROUND_KEYS, PEER_BYTES])
    last = rows[-1] if rows else {}
    clock = "wall time (real run)" if _time_key(rows) == "wall_time" else "virtual time"
    traffic = [("bytes up (total)", f"{info.get('bytes_up', 0):,.0f}"),
               ("bytes down (total)", f"{info.get('bytes_down', 0):,.0f}")]
    if any(PEER_BYTES in r for r in rows):  # peer-to-peer: no up and down, every node's bytes per row
        traffic = [("wire bytes (total)", f"{_wire_bytes(rows):,}")]
    out = [("algorithm", str(info.get("algorithm", ""))), ("rounds", str(info.get("completed_round", len(rows)))),
           ("test accuracy", _fmt(last.get("accuracy"))), ("test loss", _fmt(last.get("loss"))), *traffic,
           (clock, f"{last.get(_time_key(rows), 0.0):.1f} s"), ("wall time", f"{info.get('wall_s', 0.0):.1f} s")]
    if "clients_selected" in info:
        never = info.get("clients_never_contributed") or []
        text = f"{info['clients_contributed']} of {info['clients_selected']} selected clients contributed"
        out.append(("participation", text + (f"; never: {', '.join(never[:6])}{' …' if len(never) > 6 else ''}"
                                             if never else "")))
    return out


def table(run: Any) -> tuple[list[str], list[list[str]]]:
    rows = _rows(run)
    key = _time_key(rows)
    keys = [k for k in ROUND_KEYS if k not in TIME_KEYS] + [key]
    header = ["round", *keys[:-1], "wall s" if key == "wall_time" else "virtual s"]
    return header, [[str(r["round"]), *(_fmt(r.get(k)) for k in keys)] for r in rows]


def headline(run: Any, target: float) -> dict[str, Any]:
    rows = _rows(run, [*ROUND_KEYS, PEER_BYTES])
    accs = [r["accuracy"] for r in rows if r.get("accuracy") is not None and not math.isnan(r["accuracy"])]
    key = _time_key(rows)
    timed = [{**r, "virtual_time": r.get(key)} for r in rows]
    tta = time_to_accuracy(timed, target)
    return {"rounds": len(rows), "evaluations": len(accs), "final acc": accs[-1] if accs else None,
            "best acc": max(accs) if accs else None, "wire bytes": _wire_bytes(rows),
            "time s": rows[-1].get(key) if rows else None,
            f"s to {target:.0%}": "not reached" if tta is None else round(tta, 1)}


register(ExperimentKind(
    "fl", "federated and decentralized learning: an algorithm's nodes on a simulated network", config=config_model,
    prepare=SimulatedFL, describe=lambda cfg: {"algorithm": cfg.fl.algorithm}, summary=summary, headline=headline,
    check=check, table=table, resume=_resume,
    resumable=lambda cfg: build.spec_of(cfg).resumable and cfg.runtime.checkpoint,
    resume_keys=("fl.rounds", "fl.round_deadline_s", "fl.join_timeout_s"), step="round", default=True))
