"""meshlearn.learn: local training and evaluation as pure tasks.

Parameters travel as ``dict[str, np.ndarray]`` (``params``); work travels as frozen task
records (``tasks``); a ``Workspace`` (data + partition + model recipe) turns a task into a
result, deterministically. No I/O and no clocks here: executors and the simulator decide
where and when tasks run.
"""

from meshlearn.learn.params import Params, get_params, l2_distance, set_params, weighted_average
from meshlearn.learn.tasks import EvalResult, EvalTask, Result, Task, TrainResult, TrainTask
from meshlearn.learn.workspace import TASK_HANDLERS, Workspace, initial_params
from meshlearn.learn.distill import DistillTask, PredictResult, PredictTask  # registers its task kinds

__all__ = [
    "Params",
    "get_params",
    "set_params",
    "weighted_average",
    "l2_distance",
    "Task",
    "Result",
    "TrainTask",
    "TrainResult",
    "EvalTask",
    "EvalResult",
    "Workspace",
    "TASK_HANDLERS",
    "PredictTask",
    "PredictResult",
    "DistillTask",
    "initial_params",
]
