"""The experiment config: one TOML file ↔ these pydantic models.

Every field has a description; `meshlearn config show` prints them as comments above each default,
which is how presets document themselves. Unknown keys are rejected (extra="forbid"): the loader
in `meshlearn.config` turns that into a message that lists the valid keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from meshlearn.fl.decentral_settings import DecentralSettings, TramSettings
from meshlearn.fl.distill_settings import DSFLSettings, FDSettings
from meshlearn.fl.dsml import DsmlFLSettings
from meshlearn.fl.selection_settings import SelectionSettings
from meshlearn.net.faults import FaultSchedule

__all__ = ["ExperimentConfig", "DataConfig", "ModelConfig", "FLConfig", "NetworkConfig", "WireConfig",
           "RuntimeConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    dataset: Literal["digits", "mnist_idx", "fashion_mnist_idx", "npz", "csv"] = Field(
        "digits", description="dataset: the embedded 'digits' or a loader for your own files")
    path: str | None = Field(None, description="directory (IDX) or file (npz, csv) for file datasets")
    clients: int = Field(20, ge=1, le=100_000, description="number of FL clients the training set is split over")
    partition: Literal["iid", "dirichlet", "shards", "quantity_skew"] = Field(
        "dirichlet", description="how training samples are split over clients")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (dirichlet, quantity_skew); small = skewed")
    classes_per_client: int = Field(2, ge=1, description="classes each client holds (shards)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share held out for server evaluation (digits, csv, npz)")
    open_size: int = Field(0, ge=0, description="training samples held out, labels dropped, as the shared unlabelled "
                                                "set of distillation algorithms (dsfl, fd, cmfd); 0 = none")
    open_path: str | None = Field(None, description="an .npz file whose array `x` is the unlabelled set instead "
                                                    "(same input shape as the dataset)")

    @model_validator(mode="after")
    def _file_datasets_need_path(self) -> "DataConfig":
        if self.dataset != "digits" and not self.path:
            raise ValueError(f"dataset {self.dataset!r} reads your files: set data.path (a directory for IDX "
                             "files, a file for npz and csv)")
        return self


class ModelConfig(_Strict):
    name: Literal["mlp", "cnn"] = Field("mlp", description="reference model from the model registry")
    hidden: list[int] = Field([64], description="hidden layer widths (mlp)")
    channels: list[int] = Field([16, 32], description="conv channels per block (cnn)")

    def params(self) -> dict[str, Any]:
        return {"hidden": tuple(self.hidden)} if self.name == "mlp" else {"channels": tuple(self.channels)}


class FLConfig(_Strict):
    algorithm: Literal["fedavg", "fedprox", "dsfl", "fd", "cmfd", "gossip", "tram", "dsml"] = Field(
        "fedavg", description="fedavg/fedprox (parameter averaging; fedprox adds a proximal term), dsfl / fd "
                              "(distillation on soft labels / per-label logits, see [dsfl] / [fd]), cmfd / gossip "
                              "(decentralized over network.topology, see [decentral]), tram (one model routed "
                              "through the nodes, see [tram]), dsml (hierarchical FedAvg summed up a "
                              "Distributed Skip Mesh List of the clients, no fixed server, see [dsml])")
    rounds: int = Field(30, ge=1, description="communication rounds")
    fraction: float = Field(1.0, gt=0, le=1, description="share of joined clients selected per round")
    epochs: int = Field(2, ge=1, description="local epochs per round")
    batch_size: int = Field(16, ge=1, description="local minibatch size")
    lr: float = Field(0.05, gt=0, description="client SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="client SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="client SGD weight decay")
    prox_mu: float = Field(0.01, ge=0, description="FedProx proximal weight (used when algorithm = fedprox)")
    round_deadline_s: float = Field(30.0, gt=0, description="seconds the server waits for updates each round")
    min_completion: float = Field(0.5, gt=0, le=1, description="share of selected clients needed for a round to count")
    join_timeout_s: float = Field(60.0, gt=0, description="start round 1 after this long even if not all clients joined")


class NetworkConfig(_Strict):
    devices: str = Field("iot", description="client device distribution: uniform, iot, mobile, edge")
    topology: str = Field("ring", description="peer graph of decentralized algorithms (cmfd, gossip): ring, k_hop_ring, "
                                             "erdos_renyi, barabasi_albert, random_geometric, star; server-based "
                                             "algorithms always use a star around the server")
    topology_params: dict[str, Any] = Field({}, description="parameters of the topology, e.g. {k=2} for k_hop_ring")
    latency_s: float = Field(0.02, ge=0, description="one-way latency of every link")
    jitter_s: float = Field(0.005, ge=0, description="uniform extra delay in [0, jitter_s)")
    bandwidth_bps: float = Field(1e8, gt=0, description="link capacity; device up/down bandwidth caps it further")
    mtu: int = Field(1500, ge=128, description="packet size in bytes, headers included")
    rto_s: float = Field(0.2, gt=0, description="retransmission timeout paid per lost packet on reliable links")
    uplink_loss: dict[str, Any] | None = Field(
        None, description="loss model on client→server links, e.g. {model='gilbert_elliott', loss=0.05, burst=4}")
    downlink_loss: dict[str, Any] | None = Field(None, description="loss model on server→client links")


class WireConfig(_Strict):
    compression: Literal["none", "zstd", "lz4"] = Field("none", description="lossless codec for tensors")
    quantize: Literal["none", "fp16", "int8"] = Field("none", description="lossy tensor quantization on the wire")


class RuntimeConfig(_Strict):
    executor: Literal["inline", "vectorized", "process", "ray"] = Field(
        "inline", description="where training tasks run: inline (reference), vectorized (many clients in one "
                              "batched torch pass), process (a local process pool), ray (needs meshlearn[ray])")
    executor_options: dict[str, Any] = Field({}, description="executor settings, e.g. {workers=2} (process), "
                                                             "{actors=4} (ray), {max_clients=4096} (vectorized)")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads for local training")
    checkpoint: bool = Field(True, description="save the global model after every round (enables resume)")


class ExperimentConfig(_Strict):
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="run name (letters, digits, _.-)")
    seed: int = Field(0, ge=0, description="root seed: every node, link and partition derives from it")
    data: DataConfig = Field(default_factory=DataConfig, description="dataset and partitioning")
    model: ModelConfig = Field(default_factory=ModelConfig, description="model architecture")
    fl: FLConfig = Field(default_factory=FLConfig, description="federated training")
    network: NetworkConfig = Field(default_factory=NetworkConfig, description="simulated network")
    faults: FaultSchedule = Field(default_factory=FaultSchedule, description="crashes, churn and partitions")
    wire: WireConfig = Field(default_factory=WireConfig, description="tensor encoding on the wire")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="execution settings")
    selection: SelectionSettings = Field(default_factory=SelectionSettings,
                                         description="client selection and fluctuating device resources")
    dsfl: DSFLSettings = Field(default_factory=DSFLSettings, description="DS-FL (fl.algorithm = dsfl)")
    fd: FDSettings = Field(default_factory=FDSettings, description="FD, per-label logit distillation (fl.algorithm = fd)")
    decentral: DecentralSettings = Field(default_factory=DecentralSettings,
                                         description="CMFD and gossip peers (fl.algorithm = cmfd | gossip)")
    tram: TramSettings = Field(default_factory=TramSettings, description="Tram-FL (fl.algorithm = tram)")
    dsml: DsmlFLSettings = Field(default_factory=DsmlFLSettings,
                                 description="hierarchical FedAvg over a skip mesh (fl.algorithm = dsml)")

