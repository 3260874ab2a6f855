"""Algorithm specs: the one place where an FL algorithm tells the rest of meshlearn what it is.

Each algorithm's module registers one ``AlgorithmSpec`` in ``ALGORITHMS`` under the name users put
in ``fl.algorithm``. The registry discovers every module of ``meshlearn.fl`` on first lookup (and
entry points in the group ``meshlearn.algorithms``), so adding an algorithm is adding one module.
Build, run, deploy and the CLI only look specs up; no algorithm name appears outside its module.

    section / settings  its own config section: a pydantic model (``[<section>]`` in a TOML file)
    build(setup)        the nodes of one run as a ``Plan``; ``Setup`` is what the experiment hands over
    rounds(config)      planned length: rows of the round table a complete run records
    horizon_s(config)   virtual seconds after which an unfinished simulation counts as stalled
    resumable           whether a stored run continues from its checkpoints
    server              True: clients around a node "server" (a star); False: peers on their own graph
    roles               what real deployments host: ("server", "client") for serve/join, ("peer",)
    open_set            whether it needs the shared unlabelled set (data.open_size / data.open_path)
    averaging           True: its server combines client parameters by ``fl.aggregator`` and its clients can
                        be made malicious by ``[attack]``; False: those keys are unread (``AVERAGING_KEYS``)
    ignores             config keys it never reads -> why, besides those ``server`` and ``averaging`` imply
                        (``unread()`` has all); a non-default value there is a config error
    default             the algorithm an experiment runs when ``fl.algorithm`` is not set (exactly one)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import numpy as np
from pydantic import BaseModel

from meshlearn.node import Node
from meshlearn.registry import Registry

__all__ = ["ALGORITHMS", "AVERAGING_KEYS", "SERVER", "IMPLIED_IGNORES", "AlgorithmSpec", "Plan", "Setup",
           "default_algorithm", "fl_rounds", "register", "round_horizon_s"]

SERVER = "server"  # the node id of the server of server-based algorithms
Params = dict[str, np.ndarray]

_STAR = "server-based algorithms connect every client to the server (a star); it is the peer graph of peer-to-peer ones"
_NO_SERVER = "there is no server"
# config keys that follow from ``server`` alone: a server-based algorithm never reads the peer graph, one
# without a server never selects clients and has no client<->server links (a spec's own ``ignores`` add to these)
IMPLIED_IGNORES = {
    True: {"network.topology": _STAR, "network.topology_params": _STAR},
    False: {"selection": f"{_NO_SERVER} to select clients", "network.uplink_loss": f"{_NO_SERVER}, so no uplink",
            "network.downlink_loss": f"{_NO_SERVER}, so no downlink"},
}
_NOT_AVERAGED = "no server averages client parameters here, so there is no aggregation rule to choose"
# config keys only parameter-averaging algorithms (``averaging=True``) read
AVERAGING_KEYS = {"fl.aggregator": _NOT_AVERAGED, "fl.trim": _NOT_AVERAGED, "fl.clip_norm": _NOT_AVERAGED,
                  "attack": "malicious clients are simulated for parameter-averaging algorithms only"}


class Setup(Protocol):
    """What an algorithm's ``build`` is given (the experiment layer provides it)."""

    config: Any  # the whole experiment config (fl kind); the algorithm reads its own section and [fl]
    settings: Any  # this algorithm's section (None when the spec has none)
    workspace: Any  # data, partitions and model recipe (meshlearn.learn.Workspace)
    client_ids: list[str]  # the non-server nodes of the run: "client-00", ...
    resume: tuple[int, Params] | None  # (last completed round, checkpointed tensors) of a resumed run

    def initial_params(self) -> Params:
        """Round-0 parameters of the configured model (torch runs here, not in the node modules)."""
        ...

    def topology(self) -> Any:
        """The peer graph from ``network.topology`` over ``client_ids`` (peer-to-peer algorithms)."""
        ...

    def selector(self, cost: Any = None) -> Any:
        """The client selector from ``[selection]``; ``cost`` (a CostModel) is the round's work."""
        ...

    def telemetry(self) -> dict[str, dict]:
        """What each client reports on joining (nominal resources) for resource-aware selectors; {} otherwise."""
        ...


@dataclass
class Plan:
    """What ``build`` returns: the nodes and how the runtime tells progress and the end."""

    nodes: list[Node]
    progress: Callable[[], int]  # completed rounds so far
    stop_on: list[str] = field(default_factory=lambda: [SERVER])  # ids whose ctx.stop() ends a simulation
    topology: Any = None  # peers' graph (server=False); None = every pair may talk
    on_built: Callable[[Any], None] | None = None  # hook once the simulator exists (e.g. observers)
    on_end: Callable[[], None] | None = None  # hook after the simulated run (flush observers)
    alone: Callable[[Node], Node] | None = None  # adapt a node hosted alone in a real process


def fl_rounds(config: Any) -> int:
    """``fl.rounds``: the planned length of a round-based algorithm."""
    return config.fl.rounds


def round_horizon_s(config: Any) -> float:
    """Stall horizon of a round-based run: every round may take its deadline plus a rejoin, four times over."""
    f = config.fl
    return 4.0 * (f.join_timeout_s + f.rounds * (f.round_deadline_s + f.join_timeout_s))


@dataclass(frozen=True)
class AlgorithmSpec:
    """One FL algorithm as the experiment layer sees it (see the module docstring)."""

    name: str
    summary: str
    build: Callable[[Setup], Plan]
    section: str | None = None
    settings: type[BaseModel] | None = None
    rounds: Callable[[Any], int] = fl_rounds
    horizon_s: Callable[[Any], float] = round_horizon_s
    resumable: bool = True
    server: bool = True
    roles: tuple[str, ...] = ()
    open_set: bool = False
    averaging: bool = False
    ignores: Mapping[str, str] = field(default_factory=dict)
    default: bool = False

    def __post_init__(self) -> None:
        if (self.section is None) != (self.settings is None):
            raise ValueError(f"algorithm {self.name!r}: give both section and settings, or neither")

    def unread(self) -> dict[str, str]:
        """Every config key this algorithm never reads -> why: what ``server`` and ``averaging`` imply, then its
        own ``ignores``."""
        return {**IMPLIED_IGNORES[self.server], **({} if self.averaging else AVERAGING_KEYS), **self.ignores}


ALGORITHMS: Registry[AlgorithmSpec] = Registry("algorithms", discover="meshlearn.fl")


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Register ``spec`` under its name (what an algorithm module calls once)."""
    return ALGORITHMS.register(spec.name, spec)


def default_algorithm() -> str:
    """The name of the spec marked ``default`` (what ``fl.algorithm`` defaults to)."""
    return ALGORITHMS.default()
