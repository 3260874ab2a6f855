"""Real deployments: the same FL nodes as the simulation, hosted by the asyncio runtime.

`serve_runtime` builds the server side (evaluation data, run-store sink, checkpoints, resume);
`join_runtime` builds one client (its shard of the configured partition, or its own whole
dataset with `local_data`). Both use the cluster secret for HMAC on every frame, TLS optionally.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshlearn.experiment.build import ALGORITHMS, SERVER, build_workspace, client_ids
from meshlearn.experiment.schema import ExperimentConfig
from meshlearn.errors import UsageError
from meshlearn.learn import Workspace
from meshlearn.executors import InlineExecutor
from meshlearn.runtime import AsyncioRuntime
from meshlearn.wire import TensorCodec

__all__ = ["TLSFiles", "serve_runtime", "join_runtime", "parse_address"]


@dataclass(frozen=True)
class TLSFiles:
    cert: str
    key: str
    ca: str

    def contexts(self):
        from meshlearn.runtime import make_tls_contexts

        return make_tls_contexts(self.cert, self.key, self.ca)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"address {text!r} must look like HOST:PORT, e.g. 127.0.0.1:7070")
    return host.strip("[]"), int(port)


def _codec(cfg: ExperimentConfig) -> TensorCodec:
    return TensorCodec(compression=cfg.wire.compression, quantize=cfg.wire.quantize)


def serve_runtime(cfg: ExperimentConfig, *, listen: tuple[str, int], secret: bytes | None, tls: TLSFiles | None = None,
                  sink=None, on_checkpoint=None, resume=None, start_time: float = 0.0):
    """The FL server in an AsyncioRuntime listening on `listen`; returns (runtime, server node)."""
    ws = build_workspace(cfg)
    warm_up(ws)
    server = _plan(cfg, ws, client_ids(cfg.data.clients), resume).nodes[0]
    ssl_server = tls.contexts()[0] if tls else None
    runtime = AsyncioRuntime(listen=listen, secret=secret, ssl_server=ssl_server, executor=InlineExecutor(ws),
                             sink=sink, on_checkpoint=on_checkpoint, codec=_codec(cfg), seed=cfg.seed,
                             start_time=start_time)
    runtime.add_node(server)
    return runtime, server


def _client_workspace(cfg: ExperimentConfig, client_id: str, local_data: bool) -> Workspace:
    ws = build_workspace(cfg)
    if client_id not in ws.parts:
        valid = client_ids(cfg.data.clients)
        raise UsageError(f"client id {client_id!r} is not in this config's {len(valid)} clients "
                         f"({valid[0]} … {valid[-1]}); pick one of them or raise data.clients")
    if local_data:
        import numpy as np

        return Workspace(ws.train, ws.test, {client_id: np.arange(len(ws.train))}, ws.model_name,
                         ws.model_params, ws.model_seed, open=ws.open)
    return Workspace(ws.train, ws.test, {client_id: ws.parts[client_id]}, ws.model_name, ws.model_params,
                     ws.model_seed, open=ws.open)


def _plan(cfg: ExperimentConfig, ws: Workspace, ids: list[str], resume):
    """The algorithm's nodes, built exactly as in simulation; real deployments need a server."""
    plan = ALGORITHMS.get(cfg.fl.algorithm)(cfg, ws, ids, resume)
    if not plan.has_server:
        raise UsageError(f"serve/join run server-based algorithms (fedavg, fedprox, dsfl, fd); "
                         f"{cfg.fl.algorithm!r} is peer-to-peer and has no real-process launcher yet")
    return plan


def warm_up(ws: Workspace) -> None:
    """Pay torch's one-time optimizer import (~2 s) before joining, not inside the first round's deadline."""
    import torch

    torch.optim.SGD(ws.model.parameters(), lr=0.1)


def join_runtime(cfg: ExperimentConfig, client_id: str, *, server: tuple[str, int], secret: bytes | None,
                 tls: TLSFiles | None = None, local_data: bool = False, rejoin_s: float = 5.0):
    """One FL client that connects to `server`; returns (runtime, client node)."""
    ws = _client_workspace(cfg, client_id, local_data)
    warm_up(ws)
    ssl_client = tls.contexts()[1] if tls else None
    runtime = AsyncioRuntime(peers={SERVER: server}, secret=secret, ssl_client=ssl_client,
                             executor=InlineExecutor(ws), codec=_codec(cfg), seed=cfg.seed)
    client = next(n for n in _plan(cfg, ws, [client_id], None).nodes if n.node_id == client_id)
    client.rejoin_s = rejoin_s
    runtime.add_node(client)
    return runtime, client


class _PrintSink:
    """Prints one line per recorded epoch row (accuracy is written before virtual_time)."""

    def __init__(self, say):
        self.say, self.acc = say, None

    def log(self, key, value, *, round=None, node=None, t_sim=None, t_wall=None) -> None:
        if key == "accuracy":
            self.acc = value
        elif key == "virtual_time" and self.acc is not None:
            self.say(f"epoch {round}: accuracy {self.acc:.4f}")


def peer_runtime(cfg: ExperimentConfig, peer_id: str, *, listen: tuple[str, int],
                 addresses: dict[str, tuple[str, int]], secret: bytes | None, tls: TLSFiles | None = None,
                 say=print, sink=None):
    """One decentralized peer (cmfd / gossip) listening on `listen`, talking to its topology neighbours.

    ``sink`` receives its per-epoch metrics (e.g. a ``RoundSink`` into the run store); without one
    they are only printed."""
    from meshlearn.experiment.build import peer_topology
    from meshlearn.fl.decentral import EpochLedger, build_cmfd, build_gossip

    builders = {"cmfd": build_cmfd, "gossip": build_gossip}
    if cfg.fl.algorithm not in builders:
        raise UsageError(f"`meshlearn peer` runs decentralized algorithms (cmfd, gossip), not {cfg.fl.algorithm!r}")
    ws = _client_workspace(cfg, peer_id, local_data=False)
    warm_up(ws)
    ids = client_ids(cfg.data.clients)
    topo = peer_topology(cfg, ids)
    missing = sorted(set(topo.neighbors(peer_id)) - set(addresses))
    if missing:
        raise UsageError(f"{peer_id} needs the addresses of its neighbours {missing}: pass --peer ID=HOST:PORT")
    node = next(n for n in builders[cfg.fl.algorithm](cfg.decentral, cfg, ws, ids, topo, None)[0] if n.node_id == peer_id)
    node.ledger = EpochLedger([peer_id])  # this process sees only its own epochs
    ssl_server, ssl_client = tls.contexts() if tls else (None, None)
    runtime = AsyncioRuntime(listen=listen, peers=addresses, secret=secret, ssl_server=ssl_server,
                             ssl_client=ssl_client, executor=InlineExecutor(ws), sink=sink or _PrintSink(say),
                             codec=_codec(cfg), seed=cfg.seed)
    runtime.add_node(node)
    return runtime, node
