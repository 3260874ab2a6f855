"""Turn an ExperimentConfig into live objects: data, workspace, network, nodes, simulator.

Node ids are `server` and `client-00` … `client-NN`. Every random choice derives from the root
seed through named child seeds, so a run is reproduced exactly by its config alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from meshlearn.data import Dataset, load_dataset, partition
from meshlearn.errors import ConfigError, DataError
from meshlearn.experiment.schema import ExperimentConfig
from meshlearn.fl.client import FLClient
from meshlearn.fl.server import FLServer, ServerSettings
from meshlearn.learn import EvalTask, TrainTask, Workspace, initial_params
from meshlearn.node import Node
from meshlearn.registry import Registry
from meshlearn.fl.selection_settings import cost_model
from meshlearn.net import DeviceProfile, Topology, LinkSpec, Network, draw_profiles, make_topology, server_profile
from meshlearn.executors import make_executor
from meshlearn.sim.runtime import Simulator
from meshlearn.wire import FrameCodec, TensorCodec

__all__ = ["ALGORITHMS", "Plan", "SERVER", "peer_topology", "client_ids", "configure_torch", "build_workspace", "server_settings", "build_simulation", "Simulation"]

SERVER = "server"
# Real deployments always authenticate frames (HMAC-SHA256, 32 bytes each), so simulated frames do too:
# the key's value is irrelevant, only the frame layout and size must match what sockets carry.
SIM_SECRET = b"meshlearn-simulation"


def client_ids(n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"client-{i:0{width}d}" for i in range(n)]


def _seed(cfg: ExperimentConfig, purpose: str) -> int:
    """A 32-bit seed for one purpose (data split, partition, model init, ...) from the root seed."""
    tag = int.from_bytes(purpose.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([cfg.seed, tag]).generate_state(1)[0])


def configure_torch(cfg: ExperimentConfig) -> None:
    """Apply runtime.torch_threads (torch's default spins one thread per core in every process)."""
    import torch

    torch.set_num_threads(cfg.runtime.torch_threads)


def build_workspace(cfg: ExperimentConfig) -> Workspace:
    """Load the dataset, split it over the clients and return the task workspace."""
    configure_torch(cfg)
    d = cfg.data
    if d.dataset in ("digits", "csv", "npz"):
        params = {"test_fraction": d.test_fraction, "seed": _seed(cfg, "split")}
        if d.path:
            params["path"] = d.path
    else:
        params = {"path": d.path}
    train, test = load_dataset(d.dataset, **params)
    train, open_set = split_open_set(cfg, train)
    kwargs = {"dirichlet": {"alpha": d.alpha}, "quantity_skew": {"alpha": d.alpha},
              "shards": {"classes_per_client": d.classes_per_client}}.get(d.partition, {})
    rng = np.random.default_rng(_seed(cfg, "partition"))
    parts = partition(d.partition, train.y, d.clients, rng, **kwargs)
    ids = client_ids(d.clients)
    return Workspace(train, test, dict(zip(ids, parts)), cfg.model.name, cfg.model.params(), _seed(cfg, "model"),
                     open=open_set)


def split_open_set(cfg: ExperimentConfig, train: Dataset) -> tuple[Dataset, Dataset | None]:
    """Hold out `data.open_size` random training samples as the unlabelled set, or load `data.open_path`."""
    d = cfg.data
    if d.open_path:
        return train, _load_open_file(d.open_path, train)
    if d.open_size == 0:
        return train, None
    if d.open_size >= len(train):
        raise ConfigError("data.open_size", f"{d.open_size} leaves no training data (the training set has {len(train)})")
    order = np.random.default_rng(_seed(cfg, "open")).permutation(len(train))
    return train.subset(np.sort(order[d.open_size:])), train.subset(np.sort(order[: d.open_size]))


def _load_open_file(path: str, train: Dataset) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            x = np.asarray(f["x"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"cannot read the unlabelled set {path}: {err}; expected an .npz with an array 'x'") from None
    if x.shape[1:] != train.x.shape[1:]:
        raise DataError(f"unlabelled set {path} has inputs of shape {x.shape[1:]}, the dataset has {train.x.shape[1:]}")
    # labels are unknown: zeros fill the slot (no task ever reads labels of the open set)
    return Dataset(x, np.zeros(len(x), dtype=np.int64), train.num_classes, "open")


def server_settings(cfg: ExperimentConfig) -> ServerSettings:
    f = cfg.fl
    return ServerSettings(
        rounds=f.rounds, fraction=f.fraction, min_clients=cfg.data.clients, join_timeout_s=f.join_timeout_s,
        round_deadline_s=deadline_s(cfg), min_completion=f.min_completion, epochs=f.epochs,
        batch_size=f.batch_size, lr=f.lr, momentum=f.momentum, weight_decay=f.weight_decay,
        prox_mu=f.prox_mu if f.algorithm == "fedprox" else 0.0, clients_per_round=cfg.selection.clients_per_round)


def deadline_s(cfg: ExperimentConfig) -> float:
    """The round deadline: selection.deadline_s when set, else fl.round_deadline_s."""
    return cfg.selection.deadline_s or cfg.fl.round_deadline_s


def draw_devices(cfg: ExperimentConfig, clients: list[str]) -> dict[str, DeviceProfile]:
    """Clients' nominal device profiles (one seeded stream, shared by the network and telemetry)."""
    rng = np.random.default_rng(_seed(cfg, "devices"))
    return dict(zip(clients, draw_profiles(cfg.network.devices, len(clients), rng)))


def make_train_task(client: str, params, **meta) -> TrainTask:
    return TrainTask(client=client, params=params, **meta)


def make_eval_task(params) -> EvalTask:
    return EvalTask(params=params)


def peer_topology(cfg: ExperimentConfig, ids: list[str]) -> Topology:
    """The graph of a decentralized run (`network.topology` with `network.topology_params`)."""
    rng = np.random.default_rng(_seed(cfg, "topology"))
    return make_topology(cfg.network.topology, ids, rng, **cfg.network.topology_params)


def build_network(cfg: ExperimentConfig, clients: list[str], plan: "Plan") -> Network:
    n = cfg.network
    base = dict(latency_s=n.latency_s, jitter_s=n.jitter_s, bandwidth_bps=n.bandwidth_bps, mtu=n.mtu, rto_s=n.rto_s)
    link = LinkSpec(**base)
    overrides = {}
    for c in clients if plan.has_server else []:
        if n.uplink_loss:
            overrides[(c, SERVER)] = LinkSpec(**base, loss=n.uplink_loss)
        if n.downlink_loss:
            overrides[(SERVER, c)] = LinkSpec(**base, loss=n.downlink_loss)
    devices = draw_devices(cfg, clients)
    dynamics = cfg.selection.dynamics.make_process(dict(devices), np.random.SeedSequence([cfg.seed, _seed(cfg, "dynamics")]))
    topo = plan.topology
    if plan.has_server:
        devices[SERVER] = server_profile()
        topo = make_topology("star", [SERVER, *clients], np.random.default_rng(_seed(cfg, "topology")))
    seq = np.random.SeedSequence([cfg.seed, _seed(cfg, "links")])
    return Network(topo, link, devices, seq, link_overrides=overrides, dynamics=dynamics)


def horizon_s(cfg: ExperimentConfig) -> float:
    """Virtual time after which a run that has not finished is declared stalled (e.g. the server
    crashed for good): every round may use its full deadline plus a join timeout, four times over."""
    f, d, t = cfg.fl, cfg.decentral, cfg.tram
    server_based = f.join_timeout_s + f.rounds * ((cfg.selection.deadline_s or f.round_deadline_s) + f.join_timeout_s)
    return 4.0 * max(server_based, d.epochs * d.epoch_deadline_s, t.transmissions * t.ack_timeout_s)


def planned_rounds(cfg: ExperimentConfig) -> int:
    """How many rounds (round-table rows, by number) a run of `cfg` goes through."""
    return {"cmfd": cfg.decentral.epochs, "gossip": cfg.decentral.epochs,
            "tram": cfg.tram.transmissions}.get(cfg.fl.algorithm, cfg.fl.rounds)


def build_executor(cfg: ExperimentConfig, workspace: Workspace):
    """The configured executor; process and ray workers get `runtime.torch_threads` threads each."""
    options = dict(cfg.runtime.executor_options)
    if cfg.runtime.executor in ("process", "ray"):
        options.setdefault("threads", cfg.runtime.torch_threads)
    return make_executor(cfg.runtime.executor, workspace, **options)


@dataclass
class Plan:
    """What an algorithm builder returns: its nodes and how to tell progress."""

    nodes: list[Node]
    stop_on: list[str]  # node ids whose ctx.stop() ends the simulation
    total_rounds: int  # evaluation rounds the run records (rows in the round table)
    progress: Callable[[], int]  # completed rounds so far
    has_server: bool = True  # star around SERVER; otherwise peers on `topology`
    topology: Topology | None = None  # peers' graph when has_server is False; None = every pair may talk
    on_built: Callable[[Simulator], None] | None = None  # hook after the simulator exists (e.g. observers)
    on_end: Callable[[], None] | None = None  # hook after the run (flush observers)
    resumable: bool = True  # whether checkpoints of this algorithm can be resumed


# name -> builder(cfg, workspace, client_ids, resume) -> Plan
ALGORITHMS: Registry = Registry("algorithms")


@ALGORITHMS.register("fedavg")
@ALGORITHMS.register("fedprox")
def build_fedavg(cfg: ExperimentConfig, workspace: Workspace, ids: list[str], resume) -> Plan:
    params = initial_params(workspace)
    sel = cfg.selection
    cost = cost_model(params, workspace.flops_per_sample, cfg.fl.epochs)
    server = FLServer(SERVER, params, server_settings(cfg), make_eval_task, resume=resume,
                      selector=sel.make_selector(deadline_s=deadline_s(cfg), cost=cost))
    telemetry = _telemetry(cfg, workspace, ids) if sel.selector != "random" else {}
    clients = [FLClient(c, SERVER, make_train_task, telemetry=telemetry.get(c)) for c in ids]
    return Plan([server, *clients], [SERVER], cfg.fl.rounds, lambda: server.completed_round)


def _telemetry(cfg: ExperimentConfig, workspace: Workspace, ids: list[str]) -> dict[str, dict]:
    """What each client reports on joining (nominal resources), for resource-aware selectors."""
    devices = draw_devices(cfg, ids)
    return {c: {"flops": d.flops, "up_bps": d.up_bps, "down_bps": d.down_bps,
                "num_samples": workspace.num_samples(c)} for c, d in devices.items()}


@dataclass
class Simulation:
    """A ready-to-run simulated experiment."""

    config: ExperimentConfig
    sim: Simulator
    plan: Plan
    workspace: Workspace

    @property
    def server(self) -> Node | None:
        return next((n for n in self.plan.nodes if n.node_id == SERVER), None)

    @property
    def completed_rounds(self) -> int:
        return self.plan.progress()


def build_simulation(cfg: ExperimentConfig, *, sink=None, on_checkpoint=None, resume=None,
                     trace: bool = False, start_time: float = 0.0) -> Simulation:
    """Everything for one simulated run; `resume=(round, params)` continues a stored run."""
    workspace = build_workspace(cfg)
    ids = client_ids(cfg.data.clients)
    plan = ALGORITHMS.get(cfg.fl.algorithm)(cfg, workspace, ids, resume)
    network = build_network(cfg, ids, plan)
    codec = TensorCodec(compression=cfg.wire.compression, quantize=cfg.wire.quantize)
    sim = Simulator(network, seed=cfg.seed, executor=build_executor(cfg, workspace), devices=network.devices,
                    codec=codec, frames=FrameCodec(SIM_SECRET), sink=sink, on_checkpoint=on_checkpoint,
                    trace=trace, stop_on=plan.stop_on, start_time=start_time)
    sim.add_nodes(plan.nodes)
    if plan.on_built:
        plan.on_built(sim)
    fault_rng = np.random.default_rng(_seed(cfg, "faults"))
    sim.schedule_faults(cfg.faults.expand([n.node_id for n in plan.nodes], fault_rng, start_time + horizon_s(cfg)))
    return Simulation(cfg, sim, plan, workspace)


from meshlearn.experiment import plans  # noqa: E402,F401  (registers the other algorithms)
