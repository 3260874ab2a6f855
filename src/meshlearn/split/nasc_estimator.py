"""The real NASC estimator: (cross-)validated accuracy of split candidates by fine-tuning on a dataset.

``FinetuneEstimator`` trains the base model per fold, cuts it, fine-tunes bottlenecks and predicts
the held-out samples through the channel's quantiser (``meshlearn.split.nasc`` explains the
protocol). This module holds the torch work; ``nasc.py`` (settings, costs, strategies) imports none.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from meshlearn.split.channel import packet_plan, simulate_batch
from meshlearn.split.model import fit_classifier, split_model, split_points
from meshlearn.errors import UsageError
from meshlearn.split.nasc import Candidate, NascSettings, channel_spec

__all__ = ["FinetuneEstimator", "Fold", "stratified_folds"]


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id (0 .. folds-1) of every sample: each class is shuffled (seeded) and dealt round-robin,
    continuing the deal across classes, so folds differ by at most one sample overall."""
    y = np.asarray(y)
    if not 2 <= folds <= len(y):
        raise UsageError(f"folds must be in [2, {len(y)}] for {len(y)} samples, got {folds}")
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), np.int64)
    dealt = 0
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        out[idx] = (dealt + np.arange(len(idx))) % folds
        dealt += len(idx)
    return out


class Fold(NamedTuple):
    """Indices into the training set: what a fold's models train on and what they predict."""

    train: np.ndarray
    held: np.ndarray


class FinetuneEstimator:
    """Accuracy of candidates by (cross-)validation on ``settings.dataset`` (see the module doc).

    ``folds`` lists each fold's (train, held) training-set indices; ``correct``, ``__call__`` and
    ``reference`` use the held-out samples (``eval_idx``, fold after fold), ``test_accuracy`` and
    ``test_reference`` the test split with the final models (``split_model(cut, k)``, fold None).
    Models are cached per (cut, k, fold), so the estimator can be shared by several searches
    (``trainings`` counts the fine-tunes actually run).
    """

    def __init__(self, settings: NascSettings, seed: int):
        from meshlearn.data import load_dataset
        from meshlearn.data.datasets import stratified_split

        self.settings, self.seed = settings, int(seed)
        train_set, test_set = load_dataset(settings.dataset, seed=self.seed)
        self.x, self.y = torch.from_numpy(train_set.x), torch.from_numpy(train_set.y)
        self.test = (torch.from_numpy(test_set.x), test_set.y)
        self.input_shape, self.num_classes = tuple(train_set.input_shape), train_set.num_classes
        if settings.folds == 1:
            self.folds = [Fold(*stratified_split(train_set.y, settings.val_fraction, self.seed))]
        else:
            fold_of = stratified_folds(train_set.y, settings.folds, self.seed)
            self.folds = [Fold(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f))
                          for f in range(settings.folds)]
        self.eval_idx = np.concatenate([f.held for f in self.folds])
        self._models: dict[tuple[str | None, int | None, int | None], torch.nn.Module] = {}
        self.trainings = 0
        self.points = split_points(self.base(0), self.input_shape)
        self.reference_correct = self.correct(None)
        self.reference = float(self.reference_correct.mean())

    def _fold(self, fold: int | None) -> int | None:
        """Fold None is the final model; with one fold that is fold 0's model (trained on its train part)."""
        return 0 if fold is None and len(self.folds) == 1 else fold

    def _train_idx(self, fold: int | None) -> np.ndarray:
        return np.arange(len(self.y)) if fold is None else self.folds[fold].train

    def _seed(self, fold: int | None) -> int:
        return self.seed if fold is None or len(self.folds) == 1 else self.seed + 1_000_003 * (fold + 1)

    def base(self, fold: int | None = None) -> torch.nn.Module:
        """The unsplit model of ``fold`` (None: the final one), trained on first use."""
        from meshlearn.models import build_model

        fold = self._fold(fold)
        key = (None, None, fold)
        if key not in self._models:
            idx, seed = self._train_idx(fold), self._seed(fold)
            model = build_model(self.settings.model, self.input_shape, self.num_classes, seed=seed)
            self._models[key] = fit_classifier(model, self.x[idx], self.y[idx], epochs=self.settings.epochs,
                                               seed=seed, lr=2e-3)
        return self._models[key]

    def split_model(self, cut: str, k: int | None, fold: int | None = None) -> torch.nn.Module:
        """``fold``'s base model cut after ``cut``, with a fine-tuned width-k bottleneck if k is given."""
        fold = self._fold(fold)
        key = (cut, k, fold)
        if key not in self._models:
            base, idx = self.base(fold), self._train_idx(fold)
            model = split_model(base, cut, self.input_shape, bottleneck=k, seed=self.seed)
            if k is not None:
                fit_classifier(model, self.x[idx], self.y[idx], epochs=self.settings.finetune_epochs,
                               seed=self._seed(fold) + 7919 * (k + 1), lr=1e-3)
                self.trainings += 1
            self._models[key] = model
        return self._models[key]

    def _predict(self, candidate: Candidate | None, fold: int | None, x: torch.Tensor) -> np.ndarray:
        # get (and so train) the model before no_grad
        if candidate is None:
            base = self.base(fold)
            with torch.no_grad():
                return base(x).argmax(1).numpy()
        model = self.split_model(candidate.cut, candidate.bottleneck, fold)
        spec = channel_spec(self.settings, candidate.quant)
        with torch.no_grad():
            z = model.encode(x).numpy()
            _, _, packets = packet_plan(model.cut_numel, spec)
            z_hat, _ = simulate_batch(z, spec, np.ones((len(z), packets), bool))
            return model.decode(torch.from_numpy(z_hat)).argmax(1).numpy()

    def correct(self, candidate: Candidate | None) -> np.ndarray:
        """Per held-out sample (order ``eval_idx``): did the candidate (None: unsplit) predict right?"""
        parts = [self._predict(candidate, f, self.x[fold.held]) == self.y[fold.held].numpy()
                 for f, fold in enumerate(self.folds)]
        return np.concatenate(parts)

    def __call__(self, candidate: Candidate) -> float:
        return float(self.correct(candidate).mean())

    def test_accuracy(self, candidate: Candidate | None) -> float:
        x, y = self.test
        return float((self._predict(candidate, None, x) == y).mean())

    @property
    def test_reference(self) -> float:
        return self.test_accuracy(None)
