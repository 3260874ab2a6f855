import pytest

from meshlearn.experiment.fl.schema import FLExperiment, fl_config


@pytest.fixture
def small_cfg():
    """A fast FedAvg experiment: 6 clients, 3 rounds, lossy uplink."""
    def make(**overrides) -> FLExperiment:
        data = {"name": "t", "data": {"clients": 6}, "fl": {"rounds": 3, "epochs": 1},
                "network": {"uplink_loss": {"model": "gilbert_elliott", "loss": 0.05, "burst": 4}}}
        for key, value in overrides.items():
            section, _, field = key.partition("__")
            if field:
                data.setdefault(section, {})[field] = value
            else:
                data[section] = value
        return fl_config(data)
    return make

