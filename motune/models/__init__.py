"""Adapters: how motune predicts with, scores and places a trained model.

A model is anything with ``predict(X)``; ``predict_proba(X)`` or
``decision_function(X)`` give scores where a metric needs them (``roc_auc``).
:class:`Predictor` wraps a model for one evaluation so that the several
metrics measured on the same split share one prediction instead of each
calling ``predict`` again; it checks that predictions have the right length
and no NaN. A model with ``predict_from_proba = True`` (a torch classifier,
whose label is the argmax of its probabilities) gets one forward pass per
split for both. :func:`device_of` tells where a model runs (``"cpu"``,
``"cuda:0"``, ...), which decides how latency is timed.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from motune.errors import MetricError, SpecTypeError


class Predictor:
    """A model plus a memo of its predictions on the task's own split frames.

    Only the task's split objects are memoised (by identity); any other input
    (a perturbed copy, a latency batch) goes straight to the model.
    """

    def __init__(self, model: Any, task: Any) -> None:
        if not callable(getattr(model, "predict", None)):
            raise SpecTypeError(
                f"train() must return a fitted model with a predict(X) method, got {type(model).__name__}"
            )
        self.model = model
        self._splits = {id(task.split(s)[0]): s for s in task.splits}
        self._memo: dict[tuple[str, str], np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:  # anything else: the model's own attribute
        return getattr(self.model, name)

    def _memoised(self, method: str, X: Any, fn) -> np.ndarray:
        split = self._splits.get(id(X))
        if split is None:
            return fn(X)
        key = (method, split)
        if key not in self._memo:
            out = np.asarray(fn(X))
            if len(out) != len(X):
                raise MetricError(f"model.{method} returned {len(out)} rows for {len(X)} inputs")
            if np.issubdtype(out.dtype, np.number) and np.isnan(out).any():
                raise MetricError(f"model.{method} returned NaN for {int(np.isnan(out).sum())} rows")
            self._memo[key] = out
        return self._memo[key]

    def predict(self, X: Any) -> np.ndarray:
        if getattr(self.model, "predict_from_proba", False):  # one forward pass serves predict and scores
            return self._memoised("predict", X, lambda x: self._memoised("proba", x, self.model.predict_proba)
                                  .argmax(axis=1))
        return self._memoised("predict", X, lambda x: np.asarray(self.model.predict(x)).ravel())

    def scores(self, X: Any) -> np.ndarray:
        """Positive-class scores: ``predict_proba(X)[:, 1]`` or ``decision_function(X)``."""
        if getattr(self.model, "predict_from_proba", False):
            return self._memoised("scores", X, lambda x: self._memoised("proba", x, self.model.predict_proba)[:, 1])
        if callable(getattr(self.model, "predict_proba", None)):
            return self._memoised("scores", X, lambda x: np.asarray(self.model.predict_proba(x))[:, 1])
        if callable(getattr(self.model, "decision_function", None)):
            return self._memoised("scores", X, lambda x: np.asarray(self.model.decision_function(x)).ravel())
        raise MetricError(
            f"{type(self.model).__name__} has neither predict_proba nor decision_function; "
            "a score-based metric such as roc_auc needs one"
        )


def unwrap(model: Any) -> Any:
    """The user's model inside a :class:`Predictor` (or the model itself)."""
    return model.model if isinstance(model, Predictor) else model


def device_of(model: Any) -> str:
    """Where ``model`` computes: a torch module's parameter device, a ``device`` attribute, else ``"cpu"``."""
    model = unwrap(model)
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is not None and isinstance(model, torch.nn.Module):
        for tensors in (model.parameters(), model.buffers()):  # the first one: no walk over all of them
            first = next(iter(tensors), None)
            if first is not None:
                return str(first.device)
        return "cpu"
    device = getattr(model, "device", None)
    return "cpu" if device is None else str(device)
