"""Plans of the algorithms beyond FedAvg/FedProx: how each is built from an ExperimentConfig.

Each function is registered in `meshlearn.experiment.build.ALGORITHMS` under the name users put in
`fl.algorithm`, and turns the config into a `Plan` (nodes, what ends the run, progress, topology).
"""

from __future__ import annotations

from meshlearn.errors import ConfigError
from meshlearn.experiment.build import ALGORITHMS, Plan, peer_topology
from meshlearn.experiment.schema import ExperimentConfig
from meshlearn.learn import Workspace


def _decentral(builder, cfg: ExperimentConfig, ws: Workspace, ids: list[str], resume) -> Plan:
    topo = peer_topology(cfg, ids)
    peers, stop_on = builder(cfg.decentral, cfg, ws, ids, topo, None)
    ledger = peers[0].ledger
    return Plan(peers, stop_on, cfg.decentral.epochs, lambda: ledger.written, has_server=False, topology=topo,
                on_built=lambda sim: ledger.watch(sim.is_alive), on_end=ledger.close, resumable=False)


@ALGORITHMS.register("cmfd")
def plan_cmfd(cfg: ExperimentConfig, ws: Workspace, ids: list[str], resume) -> Plan:
    from meshlearn.fl.decentral import build_cmfd

    return _decentral(build_cmfd, cfg, ws, ids, resume)


@ALGORITHMS.register("gossip")
def plan_gossip(cfg: ExperimentConfig, ws: Workspace, ids: list[str], resume) -> Plan:
    from meshlearn.fl.decentral import build_gossip

    return _decentral(build_gossip, cfg, ws, ids, resume)


@ALGORITHMS.register("tram")
def plan_tram(cfg: ExperimentConfig, ws: Workspace, ids: list[str], resume) -> Plan:
    from meshlearn.fl.tram import build_tram

    nodes, stop_on = build_tram(cfg.tram, cfg, ws, ids, None)
    return Plan(nodes, stop_on, cfg.tram.transmissions, lambda: max(n.max_hop for n in nodes),
                has_server=False, topology=None, resumable=False)


def _round_settings(cfg: ExperimentConfig) -> dict:
    """FedAvg-style round settings (rounds, deadline, sampling, local SGD) for distillation servers."""
    from dataclasses import asdict

    from meshlearn.experiment.build import server_settings

    return {k: v for k, v in asdict(server_settings(cfg)).items() if k not in ("prox_mu", "aggregator")}


def _server_plan(nodes, stop_on, cfg: ExperimentConfig) -> Plan:
    server = nodes[0]
    return Plan(nodes, stop_on, cfg.fl.rounds, lambda: server.completed_round)


@ALGORITHMS.register("dsfl")
def plan_dsfl(cfg: ExperimentConfig, ws: Workspace, ids: list[str], resume) -> Plan:
    from meshlearn.fl.dsfl import build_dsfl

    if ws.open is None:
        raise ConfigError("data.open_size", "dsfl exchanges soft labels on a shared unlabelled set: set "
                          "data.open_size > 0 (e.g. 300) or data.open_path")
    return _server_plan(*build_dsfl(cfg.dsfl, _round_settings(cfg), ws, ids, resume), cfg)


@ALGORITHMS.register("fd")
def plan_fd(cfg: ExperimentConfig, ws: Workspace, ids: list[str], resume) -> Plan:
    from meshlearn.fl.fd import build_fd

    return _server_plan(*build_fd(cfg.fd, _round_settings(cfg), ws, ids, resume), cfg)


@ALGORITHMS.register("dsml")
def plan_dsml(cfg: ExperimentConfig, ws: Workspace, ids: list[str], resume) -> Plan:
    """Hierarchical FedAvg over a Distributed Skip Mesh List: every client is a skip graph member."""
    from meshlearn.experiment.build import deadline_s, make_eval_task, make_train_task
    from meshlearn.fl.dsml import build_dsml_fl
    from meshlearn.learn import initial_params

    f = cfg.fl
    meta = dict(epochs=f.epochs, batch_size=f.batch_size, lr=f.lr, momentum=f.momentum, weight_decay=f.weight_decay)
    nodes = build_dsml_fl(cfg.dsml, ids=ids, params=initial_params(ws), seed=cfg.seed, rounds=f.rounds,
                          deadline_s=deadline_s(cfg), train_meta=meta, train_task=make_train_task,
                          eval_task=make_eval_task)
    return Plan(nodes, ids, f.rounds, lambda: max(n.completed_round for n in nodes), has_server=False,
                topology=None, resumable=False)
