"""Bridges between torch state dicts and the numpy dicts that messages and files carry.

torch is imported inside the functions. ``get_params`` / ``set_params`` move parameters between a
model and the ``dict[str, np.ndarray]`` form tasks and messages carry; ``set_params`` is the gate
where a peer's update meets a model, so a wrong key or shape raises ``ProtocolError``.
``state_to_numpy`` copies (a snapshot never changes when training continues); bfloat16 tensors
become float32 because numpy and the wire have no bfloat16 (``load_state_dict`` casts back).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from meshlearn.errors import ProtocolError, UsageError
from meshlearn.learn.params import Params, mismatches
from meshlearn.wire.tensors import SUPPORTED_DTYPES

__all__ = ["state_to_numpy", "numpy_to_state", "get_params", "set_params"]


def state_to_numpy(module_or_state_dict: Any) -> dict[str, np.ndarray]:
    """``nn.Module`` or state dict -> ``{name: numpy array}`` (copies, on CPU)."""
    import torch

    state = _state_dict(module_or_state_dict)
    out: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise UsageError(f"state entry {name!r} is a {type(tensor).__name__}, not a tensor")
        out[name] = _tensor_to_numpy(name, tensor, torch)
    return out


def _state_dict(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        return obj.state_dict()
    if isinstance(obj, dict):
        return obj
    raise UsageError(f"expected a torch.nn.Module or a state dict, got {type(obj).__name__}")


def _tensor_to_numpy(name: str, tensor: Any, torch: Any) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    arr = tensor.to("cpu", copy=True).contiguous().numpy()
    if arr.dtype.name not in SUPPORTED_DTYPES:
        raise UsageError(
            f"state entry {name!r} has dtype {tensor.dtype}; supported: {', '.join(SUPPORTED_DTYPES)}"
        )
    return arr


def numpy_to_state(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """``{name: numpy array}`` -> ``{name: torch.Tensor}`` ready for ``load_state_dict``.

    Writable C-contiguous native-order arrays are shared, not copied (as ``torch.from_numpy``).
    """
    import torch

    if not isinstance(arrays, dict):
        raise UsageError(f"expected a dict of numpy arrays, got {type(arrays).__name__}")
    return {name: torch.from_numpy(_torch_ready(name, arr)) for name, arr in arrays.items()}


def _torch_ready(name: str, arr: Any) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise UsageError(f"entry {name!r} is a {type(arr).__name__}, not a numpy array")
    if arr.dtype.name not in SUPPORTED_DTYPES:
        raise UsageError(f"entry {name!r} has dtype {arr.dtype}; supported: {', '.join(SUPPORTED_DTYPES)}")
    native = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    if native.flags.writeable and native.flags.c_contiguous:
        return native
    return np.array(native, order="C", copy=True)


def get_params(model: Any) -> Params:
    """Copies of the model's state_dict (floating tensors as float32), in state_dict order."""
    out: Params = {}
    for key, tensor in model.state_dict().items():
        array = tensor.detach().cpu().numpy()
        out[key] = array.astype(np.float32) if array.dtype.kind == "f" else array.copy()
    return out


def set_params(model: Any, params: Mapping[str, np.ndarray]) -> None:
    """Load ``params`` into ``model`` in place; raise ProtocolError listing any key/shape mismatch."""
    import torch

    state = model.state_dict()
    problems = mismatches({k: tuple(v.shape) for k, v in state.items()}, params)
    if problems:
        raise ProtocolError(f"parameters do not fit the model: {'; '.join(problems)}")
    with torch.no_grad():
        for key, tensor in state.items():
            tensor.copy_(torch.as_tensor(np.asarray(params[key])))
