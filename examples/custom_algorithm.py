"""Adding an algorithm: one module that registers a spec (docs/guide.md, "Adding an algorithm").

FedMedian: FedAvg's round control, but the server takes the coordinate-wise median of the
clients' parameters instead of their mean (robust to a few wild updates). Run it:

    python examples/custom_algorithm.py

In a package of your own, put the module anywhere and declare it as an entry point instead of
calling ``register``, so that `meshlearn run` finds it without importing it yourself:

    [project.entry-points."meshlearn.algorithms"]
    fedmedian = "my_package.fedmedian:SPEC"
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from meshlearn.fl import spec
from meshlearn.fl.client import FLClient
from meshlearn.fl.server import FLServer


class FedMedianSettings(BaseModel):
    """FedMedian: the coordinate-wise median of the updates (``[fedmedian]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_updates: int = Field(3, ge=1, description="fewer updates than this: keep the old model for the round")


class FedMedianServer(FLServer):
    """FLServer whose aggregation is the median; everything else (rounds, deadlines, selection) is inherited."""

    def __init__(self, *args, min_updates: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_updates = min_updates

    def conclude_round(self, ctx, rnd, ok):
        updates = [params for params, _ in rnd.updates.values()]
        if ok and len(updates) >= self.min_updates:
            self.params = {k: np.median([u[k] for u in updates], axis=0).astype(np.float32) for k in self.params}
        self._submit_eval(ctx)


def build(setup: spec.Setup) -> spec.Plan:
    """The nodes of one run: a median server and one ordinary FedAvg client per id."""
    params = setup.initial_params()
    server = FedMedianServer(spec.SERVER, params, setup.config.fl, min_clients=len(setup.client_ids),
                             resume=setup.resume, selector=setup.selector(), min_updates=setup.settings.min_updates)
    clients = [FLClient(c, spec.SERVER) for c in setup.client_ids]
    return spec.Plan([server, *clients], progress=lambda: server.completed_round)


SPEC = spec.AlgorithmSpec("fedmedian", "FedAvg rounds, coordinate-wise median aggregation", build,
                          section="fedmedian", settings=FedMedianSettings, roles=("server", "client"))

if __name__ == "__main__":
    import tempfile

    from meshlearn.experiment import load_experiment, run_experiment
    from meshlearn.store import RunStore

    spec.register(SPEC)  # an installed plugin is found through its entry point instead
    config = load_experiment("quickstart", ["fl.algorithm=fedmedian", "fl.rounds=5", "fedmedian.min_updates=4"])
    run = run_experiment(config, RunStore(tempfile.mkdtemp()))
    print(f"fedmedian: {run.info['status']}, accuracy {run.info['final_accuracy']:.4f} after "
          f"{run.info['completed_round']} rounds")
