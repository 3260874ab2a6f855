"""meshlearn.learn: local training and evaluation as pure tasks.

Parameters travel as ``dict[str, np.ndarray]`` (``params``); work travels as frozen task
records (``tasks``); a ``Workspace`` (data + partition + model recipe) turns a task into a
result, deterministically. No I/O and no clocks here: executors and the simulator decide
where and when tasks run.

Importing this package does not import torch: the task records and parameter arithmetic are
plain numpy, so nodes can build tasks without the learning stack. ``Workspace``,
``TASK_HANDLERS`` and ``initial_params`` load torch on first use.
"""

from meshlearn.learn.params import Params, l2_distance, weighted_average
from meshlearn.learn.torchio import get_params, numpy_to_state, set_params, state_to_numpy
from meshlearn.learn.tasks import (
    TRAIN_FLOPS_FACTOR,
    DistillTask,
    EvalResult,
    EvalTask,
    FDTrainResult,
    FDTrainTask,
    HopTrainResult,
    HopTrainTask,
    PredictResult,
    PredictTask,
    Result,
    Task,
    TrainResult,
    TrainTask,
)

__all__ = [
    "Params",
    "get_params",
    "set_params",
    "weighted_average",
    "l2_distance",
    "TRAIN_FLOPS_FACTOR",
    "Task",
    "Result",
    "TrainTask",
    "TrainResult",
    "EvalTask",
    "EvalResult",
    "PredictTask",
    "PredictResult",
    "DistillTask",
    "FDTrainTask",
    "FDTrainResult",
    "HopTrainTask",
    "HopTrainResult",
    "numpy_to_state",
    "state_to_numpy",
    "Workspace",
    "TASK_HANDLERS",
    "initial_params",
]

_LAZY = ("Workspace", "TASK_HANDLERS", "initial_params")  # in workspace.py, which imports torch


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module("meshlearn.learn.workspace"), name)
    raise AttributeError(f"module 'meshlearn.learn' has no attribute {name!r}")
