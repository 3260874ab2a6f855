"""FedAvg and FedProx (McMahan et al. 2017; Li et al. 2020): the parameter-averaging algorithm specs.

Both run ``FLServer`` / ``FLClient``: each round the server sends the global parameters to the
selected clients, they run local SGD as ``[fl]`` says, and the server averages their updates
weighted by sample counts (or by the robust rule ``fl.aggregator`` names). The server refuses
messages from ids outside the deployment; ``[attack]`` makes listed clients malicious (evaluation).
FedProx adds the proximal term (mu/2)·||w − w_global||² to every client's loss (``[fedprox] mu``);
with mu = 0 it is FedAvg.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from meshlearn.fl import spec
from meshlearn.fl.attacks import AttackSettings
from meshlearn.fl.selection import cost_model
from meshlearn.fl.server import FLServer

__all__ = ["FedProxSettings", "build_fedavg", "build_fedprox"]


class FedProxSettings(BaseModel):
    """FedProx's proximal term (``[fedprox]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mu: float = Field(0.01, ge=0, description="proximal weight mu in (mu/2)·||w − w_global||²; keep fl.lr · mu < 2")


def _build(setup: spec.Setup, prox_mu: float) -> spec.Plan:
    ws, ids = setup.workspace, setup.client_ids
    params, telemetry = setup.initial_params(), setup.telemetry()
    selector = setup.selector(cost_model(params, ws.flops_per_sample, setup.config.fl.epochs))
    server = FLServer(spec.SERVER, params, setup.config.fl, min_clients=len(ids), resume=setup.resume,
                      selector=selector, prox_mu=prox_mu, clients=ids)
    attack = getattr(setup.config, "attack", None) or AttackSettings()  # a stub setup's config may have none
    clients = [attack.client(c, spec.SERVER, telemetry=telemetry.get(c)) for c in ids]
    return spec.Plan([server, *clients], progress=lambda: server.completed_round)


def build_fedavg(setup: spec.Setup) -> spec.Plan:
    """The server and one client per id; local SGD without a proximal term."""
    return _build(setup, 0.0)


def build_fedprox(setup: spec.Setup) -> spec.Plan:
    """FedAvg's nodes with the proximal weight of ``[fedprox]``."""
    return _build(setup, setup.settings.mu)


spec.register(spec.AlgorithmSpec(
    "fedavg", "parameter averaging weighted by sample counts", build_fedavg, roles=("server", "client"), averaging=True,
    default=True))
spec.register(spec.AlgorithmSpec(
    "fedprox", "FedAvg with a proximal term on the clients' loss", build_fedprox, section="fedprox",
    settings=FedProxSettings, roles=("server", "client"), averaging=True))
