"""Turn an FL experiment config into live objects: data, workspace, the algorithm's nodes, network, simulator.

Node ids are ``server`` (server-based algorithms) and ``client-00`` … ``client-NN``. Every random
choice derives from the root seed through named child seeds, so a run is reproduced exactly by its
config alone. The algorithm is looked up in ``meshlearn.fl.spec.ALGORITHMS``; ``BuildSetup`` is what
its ``build`` gets (the ``Setup`` protocol there).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from meshlearn.data import Dataset, load_dataset, partition
from meshlearn.errors import ConfigError, DataError
from meshlearn.fl.spec import ALGORITHMS, SERVER, AlgorithmSpec, Plan
from meshlearn.net import DeviceProfile, LinkSpec, Network, draw_profiles, make_topology, server_profile
from meshlearn.wire import FrameCodec, TensorCodec

__all__ = ["BuildSetup", "Simulation", "build_simulation", "build_workspace", "client_ids", "spec_of", "seed_for",
           "SIM_SECRET", "codec_of", "draw_devices", "build_executor"]

# Real deployments always authenticate frames (HMAC-SHA256, 32 bytes each), so simulated frames do too:
# the key's value is irrelevant, only the frame layout and size must match what sockets carry.
SIM_SECRET = b"meshlearn-simulation"


def client_ids(n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"client-{i:0{width}d}" for i in range(n)]


def seed_for(cfg: Any, purpose: str) -> int:
    """A 32-bit seed for one purpose (data split, partition, model init, ...) from the root seed."""
    tag = int.from_bytes(purpose.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([cfg.seed, tag]).generate_state(1)[0])


def spec_of(cfg: Any) -> AlgorithmSpec:
    return ALGORITHMS.get(cfg.fl.algorithm)


def codec_of(cfg: Any) -> TensorCodec:
    return TensorCodec(compression=cfg.wire.compression, quantize=cfg.wire.quantize)


# ----- data -------------------------------------------------------------------------------------
def build_workspace(cfg: Any):
    """Load the dataset, split it over the clients and return the task workspace (imports torch)."""
    from meshlearn.learn import Workspace
    from meshlearn.learn.workspace import use_threads

    use_threads(cfg.runtime.torch_threads)
    d = cfg.data
    train, test = load_dataset(d.dataset, **d.loader_params(seed_for(cfg, "split")))
    train, open_set = split_open_set(cfg, train)
    kwargs = {"dirichlet": {"alpha": d.alpha}, "quantity_skew": {"alpha": d.alpha},
              "shards": {"classes_per_client": d.classes_per_client}}.get(d.partition, {})
    rng = np.random.default_rng(seed_for(cfg, "partition"))
    parts = partition(d.partition, train.y, d.clients, rng, **kwargs)
    return Workspace(train, test, dict(zip(client_ids(d.clients), parts)), cfg.model.name, cfg.model.params(),
                     seed_for(cfg, "model"), open=open_set)


def split_open_set(cfg: Any, train: Dataset) -> tuple[Dataset, Dataset | None]:
    """Hold out `data.open_size` random training samples as the unlabelled set, or load `data.open_path`."""
    d = cfg.data
    if d.open_path:
        return train, _load_open_file(d.open_path, train)
    if d.open_size == 0:
        return train, None
    if d.open_size >= len(train):
        raise ConfigError("data.open_size", f"{d.open_size} leaves no training data (the training set has {len(train)})")
    order = np.random.default_rng(seed_for(cfg, "open")).permutation(len(train))
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


def draw_devices(cfg: Any, clients: list[str]) -> dict[str, DeviceProfile]:
    """Clients' nominal device profiles (one seeded stream, shared by the network and telemetry)."""
    rng = np.random.default_rng(seed_for(cfg, "devices"))
    return dict(zip(clients, draw_profiles(cfg.network.devices, len(clients), rng)))


# ----- what an algorithm's build gets -------------------------------------------------------------
@dataclass
class BuildSetup:
    """The ``meshlearn.fl.spec.Setup`` of one run (or of one real process: ``client_ids`` its part)."""

    config: Any
    workspace: Any
    client_ids: list[str]
    resume: tuple[int, dict[str, np.ndarray]] | None = None

    @property
    def settings(self) -> Any:
        section = spec_of(self.config).section
        return None if section is None else getattr(self.config, section)

    def initial_params(self) -> dict[str, np.ndarray]:
        from meshlearn.learn import initial_params

        return initial_params(self.workspace)

    def topology(self) -> Any:
        rng = np.random.default_rng(seed_for(self.config, "topology"))
        net = self.config.network
        return make_topology(net.topology, self.client_ids, rng, **net.topology_params)

    def selector(self, cost: Any = None) -> Any:
        return self.config.selection.make_selector(deadline_s=self.config.fl.round_deadline_s, cost=cost)

    def telemetry(self) -> dict[str, dict]:
        if self.config.selection.selector == "random":
            return {}
        devices = draw_devices(self.config, client_ids(self.config.data.clients))  # the same draw in every process
        return {c: {"flops": devices[c].flops, "up_bps": devices[c].up_bps, "down_bps": devices[c].down_bps,
                    "num_samples": self.workspace.num_samples(c)} for c in self.client_ids}


# ----- the simulated network ----------------------------------------------------------------------
def build_network(cfg: Any, clients: list[str], spec: AlgorithmSpec, plan: Plan) -> Network:
    n = cfg.network
    base = dict(latency_s=n.latency_s, jitter_s=n.jitter_s, bandwidth_bps=n.bandwidth_bps, mtu=n.mtu, rto_s=n.rto_s)
    overrides = {}
    for c in clients if spec.server else []:
        if n.uplink_loss:
            overrides[(c, SERVER)] = LinkSpec(**base, loss=n.uplink_loss)
        if n.downlink_loss:
            overrides[(SERVER, c)] = LinkSpec(**base, loss=n.downlink_loss)
    devices = draw_devices(cfg, clients)
    dynamics = cfg.selection.dynamics.make_process(dict(devices),
                                                   np.random.SeedSequence([cfg.seed, seed_for(cfg, "dynamics")]))
    topo = plan.topology
    if spec.server:
        devices[SERVER] = server_profile()
        topo = make_topology("star", [SERVER, *clients], np.random.default_rng(seed_for(cfg, "topology")))
    seq = np.random.SeedSequence([cfg.seed, seed_for(cfg, "links")])
    return Network(topo, LinkSpec(**base), devices, seq, link_overrides=overrides, dynamics=dynamics)


def build_executor(cfg: Any, workspace: Any):
    """The configured executor; process and ray workers get `runtime.torch_threads` threads each."""
    from meshlearn.executors import make_executor

    options = dict(cfg.runtime.executor_options)
    if cfg.runtime.executor in ("process", "ray"):
        options.setdefault("threads", cfg.runtime.torch_threads)
    return make_executor(cfg.runtime.executor, workspace, **options)


@dataclass
class Simulation:
    """A ready-to-run simulated experiment: the simulator, the algorithm's plan, the workspace."""

    config: Any
    sim: Any
    plan: Plan
    workspace: Any
    spec: AlgorithmSpec

    @cached_property
    def server(self) -> Any:
        return next((n for n in self.plan.nodes if n.node_id == SERVER), None)

    @property
    def completed_rounds(self) -> int:
        return self.plan.progress()

    @property
    def horizon_s(self) -> float:
        return self.spec.horizon_s(self.config)


def build_simulation(cfg: Any, *, sink=None, on_checkpoint=None, resume=None, trace: bool = False,
                     start_time: float = 0.0) -> Simulation:
    """Everything for one simulated run; ``resume=(round, params)`` continues a stored run."""
    from meshlearn.sim.runtime import Simulator

    spec, workspace = spec_of(cfg), build_workspace(cfg)
    ids = client_ids(cfg.data.clients)
    plan = spec.build(BuildSetup(cfg, workspace, ids, resume))
    network = build_network(cfg, ids, spec, plan)
    sim = Simulator(network, seed=cfg.seed, executor=build_executor(cfg, workspace), devices=network.devices,
                    codec=codec_of(cfg), frames=FrameCodec(SIM_SECRET), sink=sink, on_checkpoint=on_checkpoint,
                    trace=trace, stop_on=plan.stop_on, start_time=start_time)
    sim.add_nodes(plan.nodes)
    if plan.on_built:
        plan.on_built(sim)
    fault_rng = np.random.default_rng(seed_for(cfg, "faults"))
    horizon = start_time + spec.horizon_s(cfg)
    sim.schedule_faults(cfg.faults.expand([n.node_id for n in plan.nodes], fault_rng, horizon))
    return Simulation(cfg, sim, plan, workspace, spec)
