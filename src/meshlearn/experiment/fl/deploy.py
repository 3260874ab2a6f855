"""Real deployments: the same FL nodes as the simulation, hosted by the asyncio runtime.

Which node a process may host comes from the algorithm's spec (``roles``): ``serve`` hosts the
``server`` (evaluation data, run store, checkpoints, resume), ``join`` one ``client`` (its shard of
the configured partition, or its own whole dataset with ``local_data``), ``peer`` one ``peer`` of a
peer-to-peer algorithm, talking to its topology neighbours. Connections are authenticated under the
cluster secret or a per-client ``Keyring`` (see ``meshlearn.wire.keys``), only the deployment's ids are
admitted, TLS optionally. The run lifecycle is the one of ``meshlearn.experiment.lifecycle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from meshlearn.errors import UsageError
from meshlearn.experiment.fl.build import BuildSetup, build_workspace, client_ids, codec_of, spec_of
from meshlearn.fl.spec import ALGORITHMS, SERVER
from meshlearn.wire.keys import Keyring

__all__ = ["TLSFiles", "serve_runtime", "join_runtime", "peer_runtime", "check_role", "EpochPrinter"]

_COMMANDS = {"server": "meshlearn serve", "client": "meshlearn join", "peer": "meshlearn peer"}


@dataclass(frozen=True)
class TLSFiles:
    cert: str
    key: str
    ca: str

    def contexts(self):
        from meshlearn.runtime import make_tls_contexts

        return make_tls_contexts(self.cert, self.key, self.ca)


def check_role(cfg: Any, role: str) -> None:
    """The configured algorithm must offer ``role`` to real processes; the error says which command fits."""
    spec = spec_of(cfg)
    if role in spec.roles:
        return
    offering = sorted(name for name, s in ALGORITHMS.items() if role in s.roles)
    if "peer" in spec.roles:
        hint = f"{spec.name!r} is peer-to-peer: run one `meshlearn peer` per machine"
    elif spec.roles:
        hint = f"{spec.name!r} runs with `meshlearn serve` and `meshlearn join`"
    else:
        hint = f"{spec.name!r} has no real-process launcher yet (simulation only: `meshlearn run`)"
    raise UsageError(f"`{_COMMANDS[role]}` hosts the {role} of {', '.join(offering)}; {hint}")


def _node(setup: BuildSetup, node_id: str) -> Any:
    """The node ``node_id`` of the algorithm's plan, built exactly as in simulation."""
    plan = spec_of(setup.config).build(setup)
    node = next(n for n in plan.nodes if n.node_id == node_id)
    return plan.alone(node) if plan.alone else node


def _runtime(cfg: Any, ws: Any, **options: Any):
    """An AsyncioRuntime running tasks inline on ``ws``, warmed up: torch's one-time optimizer import (~2 s)
    is paid now, not inside the first round's deadline."""
    from meshlearn.executors import InlineExecutor
    from meshlearn.learn.workspace import warm_up
    from meshlearn.runtime import AsyncioRuntime

    warm_up(ws)
    return AsyncioRuntime(executor=InlineExecutor(ws), codec=codec_of(cfg), seed=cfg.seed, **options)


def serve_runtime(cfg: Any, *, listen: tuple[str, int], secret: bytes | Keyring | None, tls: TLSFiles | None = None,
                  sink=None, on_checkpoint=None, resume=None, start_time: float = 0.0):
    """The server in an AsyncioRuntime listening on ``listen``; returns (runtime, server node)."""
    check_role(cfg, "server")
    ws = build_workspace(cfg)
    server = _node(BuildSetup(cfg, ws, client_ids(cfg.data.clients), resume), SERVER)
    runtime = _runtime(cfg, ws, listen=listen, secret=secret, ssl_server=tls.contexts()[0] if tls else None,
                       members=client_ids(cfg.data.clients), sink=sink, on_checkpoint=on_checkpoint,
                       start_time=start_time)
    runtime.add_node(server)
    return runtime, server


def _client_workspace(cfg: Any, client_id: str, local_data: bool) -> Any:
    from meshlearn.learn import Workspace

    ws = build_workspace(cfg)
    if client_id not in ws.parts:
        valid = client_ids(cfg.data.clients)
        raise UsageError(f"client id {client_id!r} is not in this config's {len(valid)} clients "
                         f"({valid[0]} … {valid[-1]}); pick one of them or raise data.clients")
    part = np.arange(len(ws.train)) if local_data else ws.parts[client_id]
    return Workspace(ws.train, ws.test, {client_id: part}, ws.model_name, ws.model_params, ws.model_seed, open=ws.open)


def join_runtime(cfg: Any, client_id: str, *, server: tuple[str, int], secret: bytes | Keyring | None,
                 tls: TLSFiles | None = None, local_data: bool = False, rejoin_s: float = 5.0):
    """One client that connects to ``server``; returns (runtime, client node)."""
    check_role(cfg, "client")
    ws = _client_workspace(cfg, client_id, local_data)
    runtime = _runtime(cfg, ws, peers={SERVER: server}, secret=secret, ssl_client=tls.contexts()[1] if tls else None)
    client = _node(BuildSetup(cfg, ws, [client_id]), client_id)
    client.rejoin_s = rejoin_s
    runtime.add_node(client)
    return runtime, client


class EpochPrinter:
    """Prints one line per recorded epoch row; epochs without an evaluation print no accuracy."""

    def __init__(self, say):
        self.say, self.acc = say, None

    def log(self, key, value, *, round=None, node=None, t_sim=None, t_wall=None) -> None:
        if key == "accuracy":
            self.acc = value
        elif key == "virtual_time":
            self.say(f"epoch {round}" + (f": accuracy {self.acc:.4f}" if self.acc is not None else ""))
            self.acc = None


def peer_runtime(cfg: Any, peer_id: str, *, listen: tuple[str, int], addresses: dict[str, tuple[str, int]],
                 secret: bytes | Keyring | None, tls: TLSFiles | None = None, say=print, sink=None):
    """One peer of a peer-to-peer algorithm listening on ``listen``, talking to its topology neighbours.

    ``sink`` receives its per-epoch metrics (e.g. a ``RoundSink`` into the run store); without one
    they are only printed."""
    check_role(cfg, "peer")
    ws = _client_workspace(cfg, peer_id, local_data=False)
    setup = BuildSetup(cfg, ws, client_ids(cfg.data.clients))
    missing = sorted(set(setup.topology().neighbors(peer_id)) - set(addresses))
    if missing:
        raise UsageError(f"{peer_id} needs the addresses of its neighbours {missing}: pass --peer ID=HOST:PORT")
    node = _node(setup, peer_id)
    ssl_server, ssl_client = tls.contexts() if tls else (None, None)
    runtime = _runtime(cfg, ws, listen=listen, peers=addresses, secret=secret, ssl_server=ssl_server,
                       ssl_client=ssl_client, members=client_ids(cfg.data.clients), sink=sink or EpochPrinter(say))
    runtime.add_node(node)
    return runtime, node
