"""The config of a federated-learning experiment (``kind = "fl"``): one TOML file ↔ these models.

Fixed sections live here (``data``, ``model``, ``fl``, ``network``, ``faults``, ``wire``,
``runtime``, ``selection``, ``attack``); every algorithm adds its own section from its spec (``[dsfl]``,
``[decentral]``, ...), so ``config_model()`` builds the full model from the algorithm registry and
rebuilds it when a plugin registers a new algorithm. Every field has a description: ``meshlearn
config show`` prints them as comments above each default. Unknown keys are rejected.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from meshlearn.data import DATASETS
from meshlearn.fl.attacks import AttackSettings
from meshlearn.fl.selection import SelectionSettings
from meshlearn.fl.server import RoundSettings
from meshlearn.fl.spec import ALGORITHMS, default_algorithm
from meshlearn.net.faults import FaultSchedule
from meshlearn.net.loss import make_loss_model
from meshlearn.registry import per_contents

__all__ = ["FLExperiment", "DataConfig", "ModelConfig", "NetworkConfig", "WireConfig", "RuntimeConfig",
           "config_model", "fl_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_LOADER_KEYS = ("path", "test_fraction", "label_column", "standardize")  # passed on to loaders that take them


class DataConfig(_Strict):
    dataset: str = Field("digits", description="dataset: the embedded 'digits' or a loader for your own files "
                                               "(mnist_idx, fashion_mnist_idx, npz, csv, or a plugin)")
    path: str | None = Field(None, description="directory (IDX) or file (npz, csv) for file datasets")
    clients: int = Field(20, ge=1, le=100_000, description="number of FL clients the training set is split over")
    partition: Literal["iid", "dirichlet", "shards", "quantity_skew"] = Field(
        "dirichlet", description="how training samples are split over clients")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (dirichlet, quantity_skew); small = skewed")
    classes_per_client: int = Field(2, ge=1, description="classes each client holds (shards)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share held out for server evaluation (digits, csv, "
                                                              "npz; IDX files come split)")
    label_column: str = Field("label", description="csv: the column holding class ids 0..K-1")
    standardize: bool | None = Field(None, description="csv / npz: per-feature train mean/std scaling (unset: "
                                                       "csv yes, npz no)")
    open_size: int = Field(0, ge=0, description="training samples held out, labels dropped, as the shared unlabelled "
                                                "set of the algorithms that distil on one; 0 = none")
    open_path: str | None = Field(None, description="an .npz file whose array `x` is the unlabelled set instead "
                                                    "(same input shape as the dataset)")

    @field_validator("dataset")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DATASETS:
            raise ValueError(f"unknown dataset {value!r} (valid: {', '.join(DATASETS.names())})")
        return value

    @model_validator(mode="after")
    def _loader_reads_it(self) -> "DataConfig":
        accepted = inspect.signature(DATASETS.get(self.dataset)).parameters
        if "path" in accepted and not self.path:
            raise ValueError(f"dataset {self.dataset!r} reads your files: set data.path (a directory for IDX "
                             "files, a file for npz and csv)")
        for key in _LOADER_KEYS:
            if getattr(self, key) != type(self).model_fields[key].default and key not in accepted:
                raise ValueError(f"data.{key} is set but dataset {self.dataset!r} does not read it (it reads: "
                                 f"{', '.join(accepted) or 'nothing'})")
        return self

    def loader_params(self, seed: int) -> dict[str, Any]:
        """The keyword arguments of the dataset's loader: the keys it reads, with the split seed."""
        accepted = inspect.signature(DATASETS.get(self.dataset)).parameters
        given = {**{key: getattr(self, key) for key in _LOADER_KEYS}, "seed": seed}
        return {k: v for k, v in given.items() if k in accepted and v is not None}


class ModelConfig(_Strict):
    name: Literal["mlp", "cnn"] = Field("mlp", description="reference model from the model registry")
    hidden: list[int] = Field([64], description="hidden layer widths (mlp)")
    channels: list[int] = Field([16, 32], description="conv channels per block (cnn)")

    def params(self) -> dict[str, Any]:
        return {"hidden": tuple(self.hidden)} if self.name == "mlp" else {"channels": tuple(self.channels)}

    @model_validator(mode="after")
    def _used(self) -> "ModelConfig":
        unused = "channels" if self.name == "mlp" else "hidden"
        if getattr(self, unused) != type(self).model_fields[unused].default:
            raise ValueError(f"model.{unused} is set but model.name = {self.name!r} does not read it")
        return self


def _loss(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if not value:  # {} is how a TOML file or --set says "no loss model"
        return None
    make_loss_model(value)  # raise now, at config time, naming the bad key
    return value


class NetworkConfig(_Strict):
    devices: str = Field("iot", description="client device distribution: uniform, iot, mobile, edge")
    topology: str = Field("ring", description="peer graph of peer-to-peer algorithms: ring, k_hop_ring, erdos_renyi, "
                                             "barabasi_albert, random_geometric, star")
    topology_params: dict[str, Any] = Field({}, description="parameters of the topology, e.g. {k=2} for k_hop_ring")
    latency_s: float = Field(0.02, ge=0, allow_inf_nan=False, description="one-way latency of every link")
    jitter_s: float = Field(0.005, ge=0, allow_inf_nan=False, description="uniform extra delay in [0, jitter_s)")
    bandwidth_bps: float = Field(1e8, gt=0, description="link capacity; device up/down bandwidth caps it further")
    mtu: int = Field(1500, ge=128, description="packet size in bytes, headers included")
    rto_s: float = Field(0.2, gt=0, allow_inf_nan=False,
                         description="retransmission timeout paid per lost packet on reliable links")
    uplink_loss: dict[str, Any] | None = Field(
        None, description="loss model on client→server links, e.g. {model='gilbert_elliott', loss=0.05, burst=4}; "
                          "{} = none")
    downlink_loss: dict[str, Any] | None = Field(None, description="loss model on server→client links")

    _check_loss = field_validator("uplink_loss", "downlink_loss")(_loss)


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


class FLExperiment(_Strict):
    """A federated-learning experiment: data, model, algorithm, network, faults, where it runs."""

    kind: Literal["fl"] = Field("fl", description="experiment kind: fl (federated and decentralized learning)")
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="run name (letters, digits, _.-)")
    seed: int = Field(0, ge=0, description="root seed: every node, link and partition derives from it")
    data: DataConfig = Field(default_factory=DataConfig, description="dataset and partitioning")
    model: ModelConfig = Field(default_factory=ModelConfig, description="model architecture")
    network: NetworkConfig = Field(default_factory=NetworkConfig, description="simulated network")
    faults: FaultSchedule = Field(default_factory=FaultSchedule, description="crashes, churn and partitions")
    wire: WireConfig = Field(default_factory=WireConfig, description="tensor encoding on the wire")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="execution settings")
    selection: SelectionSettings = Field(default_factory=SelectionSettings,
                                         description="client selection (server-based algorithms) and fluctuating "
                                                     "device resources")
    attack: AttackSettings = Field(default_factory=AttackSettings,
                                   description="simulated malicious clients, to measure fl.aggregator's robustness")


def _known_algorithm(cls, value: str) -> str:
    if value not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {value!r} (valid: {', '.join(ALGORITHMS.names())})")
    return value


def _fl_section() -> type[RoundSettings]:
    listing = "; ".join(f"{name}: {spec.summary}" for name, spec in ALGORITHMS.items())
    return create_model(
        "FLSection", __base__=RoundSettings, __doc__="Federated training: the algorithm and server-based round control.",
        __validators__={"_known": field_validator("algorithm")(classmethod(_known_algorithm))},
        algorithm=(str, Field(default_factory=default_algorithm, description=f"the algorithm ({listing})")))


def _sections() -> dict[str, Any]:
    users: dict[str, list[str]] = {}
    models: dict[str, type[BaseModel]] = {}
    for name, spec in ALGORITHMS.items():
        if spec.section is not None:
            users.setdefault(spec.section, []).append(name)
            models[spec.section] = spec.settings
    return {section: (models[section], Field(default_factory=models[section],
                                             description=f"{models[section].__doc__.splitlines()[0].strip()} "
                                                         f"(fl.algorithm = {' | '.join(users[section])})"))
            for section in sorted(models)}


@per_contents(lambda: ALGORITHMS)
def config_model() -> type[FLExperiment]:
    """The full FL experiment model: the fixed sections plus one section per registered algorithm."""
    fl = _fl_section()
    return create_model("FLExperiment", __base__=FLExperiment, __doc__=FLExperiment.__doc__,
                        fl=(fl, Field(default_factory=fl, description="federated training")), **_sections())


def fl_config(data: dict[str, Any] | None = None) -> FLExperiment:
    """Validate plain data (a parsed TOML document) as an FL experiment config (ConfigError naming each bad key)."""
    from meshlearn.config import validate_config

    return validate_config(config_model(), data or {})
