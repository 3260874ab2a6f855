"""Split model files: train the reference split CNN, write it with its recipe, read it back, run head and tail.

A model file is a safetensors file (``meshlearn.wire.save_tensors``) with the SplitModel's state and
its recipe in the metadata (``format = "meshlearn.split/1"``, ``model``, ``cut``, ``bottleneck``,
``batch_norm``, ``input_shape``, ``num_classes``, ``dataset``, ``data_seed``), so every side (the
device's head, the server's tail, COMtune, curves) rebuilds the same model. ``test_samples`` are
the first samples of the dataset's held-out test split, which the model never saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from meshlearn.errors import StoreError, UsageError

__all__ = ["FORMAT", "HEAD_ID", "TAIL_ID", "one_thread", "train_split_model", "save_split_model", "load_split_model",
           "test_samples", "head_fn", "tail_fn", "build_nodes", "simulate"]

FORMAT = "meshlearn.split/1"
HEAD_ID, TAIL_ID = "head", "tail"


def one_thread() -> None:
    """Run torch on one thread: split work is one sample or a small batch at a time, more threads only add overhead."""
    import torch

    torch.set_num_threads(1)


def train_split_model(*, epochs: int = 15, seed: int = 0, cut: str = "relu2", bottleneck: int | None = None,
                      batch_norm: bool = False, progress: Callable[[int, int], None] | None = None):
    """``(SplitModel, meta)``: split_cnn (optionally with BatchNorm) trained on digits with Adam, cut after ``cut``."""
    import torch

    from meshlearn.data import load_dataset
    from meshlearn.models import build_model
    from meshlearn.split.model import fit_classifier, split_model

    train_set, test_set = load_dataset("digits", seed=seed)
    x, y = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
    model = build_model("split_cnn", train_set.input_shape, train_set.num_classes, seed=seed, batch_norm=batch_norm)
    fit_classifier(model, x, y, epochs=epochs, seed=seed, lr=2e-3, progress=progress)
    split = split_model(model, cut, train_set.input_shape, bottleneck=bottleneck, seed=seed)
    if bottleneck is not None:
        fit_classifier(split, x, y, epochs=max(1, epochs // 2), seed=seed, lr=1e-3)  # the bottleneck starts untrained
    with torch.no_grad():
        acc = float((split(torch.from_numpy(test_set.x)).argmax(1).numpy() == test_set.y).mean())
    meta = dict(model="split_cnn", cut=cut, bottleneck=bottleneck or 0, batch_norm=int(batch_norm), dataset="digits",
                data_seed=seed, input_shape=list(train_set.input_shape), num_classes=train_set.num_classes,
                epochs=epochs, test_accuracy_pct=round(100 * acc, 2))
    return split, meta


def save_split_model(path: str | Path, split, meta: dict[str, Any]) -> Path:
    """Write ``split``'s state and recipe ``meta`` to ``path`` (atomically)."""
    from meshlearn.wire import save_tensors

    tensors = {k: v.detach().numpy() for k, v in split.state_dict().items()}
    return save_tensors(Path(path), tensors, {"format": FORMAT, **meta})


def load_split_model(path: str | Path):
    """``(SplitModel in eval mode, meta)`` from a file written by :func:`save_split_model`."""
    import torch

    from meshlearn.models import build_model
    from meshlearn.split.model import split_model
    from meshlearn.wire import load_tensors

    if not Path(path).is_file():
        raise UsageError(f"model file {path}: no such file; write one with `meshlearn split train --out {path}`")
    try:
        tensors, meta = load_tensors(path)
    except StoreError as exc:
        raise UsageError(f"model file {path}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"model file {path} is not a split model file; write one with `meshlearn split train`")
    shape = tuple(int(d) for d in meta["input_shape"])
    extra = {"batch_norm": True} if int(meta.get("batch_norm", 0)) else {}
    base = build_model(str(meta["model"]), shape, int(meta["num_classes"]), seed=0, **extra)
    split = split_model(base, str(meta["cut"]), shape, bottleneck=int(meta["bottleneck"]) or None)
    try:
        split.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
    except RuntimeError as exc:
        raise UsageError(f"model file {path} does not match its recipe: {exc}") from None
    return split.eval(), meta


def test_samples(meta: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` samples of the model's held-out test split."""
    from meshlearn.data import load_dataset

    _, test_set = load_dataset(str(meta["dataset"]), seed=int(meta["data_seed"]))
    if not 0 < n <= len(test_set.y):
        raise UsageError(f"samples must be in 1..{len(test_set.y)} (the {meta['dataset']} test split), got {n}")
    return test_set.x[:n], test_set.y[:n]


def head_fn(split) -> Callable[[np.ndarray], np.ndarray]:
    """The device side: one sample in, its cut tensor out."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return split.encode(torch.from_numpy(np.asarray(x, np.float32)[None]))[0].numpy()

    return run


def tail_fn(split) -> Callable[[np.ndarray], int]:
    """The server side: a (possibly partly lost) cut tensor in, the predicted class out."""
    import torch

    def run(z: np.ndarray) -> int:
        with torch.no_grad():
            return int(split.decode(torch.from_numpy(z[None])).argmax(1)[0])

    return run


def build_nodes(split, meta: dict[str, Any], spec, *, samples: int, loss: float, seed: int, reply_timeout: float,
                window: int, head_id: str = HEAD_ID, run: int = 0, burst: float | None = None):
    """``(SplitHead, SplitTail)`` over the model file's test samples (simulated or on real sockets)."""
    from meshlearn.split.nodes import SplitHead, SplitTail

    x, y = test_samples(meta, samples)
    head = SplitHead(head_id, TAIL_ID, head_fn(split), x, y, spec, loss=loss, burst=burst, seed=seed,
                     reply_timeout_s=reply_timeout, window=window, run=run)
    return head, SplitTail(TAIL_ID, tail_fn(split), split.cut_shape, spec)


def simulate(head, tail, *, seed: int = 0) -> float:
    """Run head and tail in the simulator on a lossless LAN link; returns the virtual seconds taken."""
    from meshlearn.overlay.simnet import overlay_simulator

    return overlay_simulator([head, tail], seed=seed).run()
