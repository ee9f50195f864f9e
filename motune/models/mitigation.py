"""Fairness-mitigation knobs that a search space can tune.

- :func:`reweighing_weights`: pre-processing. Sample weights that make label
  and group independent in the weighted training data (Kamiran & Calders,
  2012: ``w(g, y) = P(g) P(y) / P(g, y)``), raised to a ``strength`` in
  [0, 1] so that 0 is no reweighing and 1 is full reweighing. fairlearn has no
  reweighing, hence this one formula.
- :class:`SensitivePostprocessed`: post-processing. A fitted fairlearn
  ``ThresholdOptimizer`` needs the sensitive feature at prediction time; this
  adapter reads it from the sensitive column of ``X`` so the result is an
  ordinary model with ``predict(X)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from motune.errors import SpecError


def reweighing_weights(y: Any, sensitive: Any, *, strength: float = 1.0) -> np.ndarray:
    """Per-row weights ``(P(g) P(y) / P(g, y)) ** strength``, normalised to mean 1."""
    if not 0.0 <= strength <= 1.0:
        raise SpecError(f"strength must be in [0, 1], got {strength!r}")
    frame = pd.DataFrame({"y": np.asarray(y), "g": np.asarray(sensitive)})
    n = len(frame)
    p_y = frame["y"].map(frame["y"].value_counts() / n)
    p_g = frame["g"].map(frame["g"].value_counts() / n)
    p_gy = frame.groupby(["g", "y"])["y"].transform("size") / n
    weights = ((p_g * p_y / p_gy) ** strength).to_numpy(dtype=float)
    return weights / weights.mean()


class SensitivePostprocessed:
    """``predict(X)`` of a fitted fairlearn post-processor, with the sensitive
    feature taken from column ``sensitive`` of ``X``.

    ``predict_proba`` is the underlying estimator's (the scores before the
    group thresholds). Predictions are randomised by fairlearn where the
    thresholds demand it; ``seed`` makes them reproducible.
    """

    def __init__(self, postprocessor: Any, *, sensitive: str, seed: int = 0) -> None:
        self.postprocessor = postprocessor
        self.sensitive = sensitive
        self.seed = seed

    def _groups(self, X: pd.DataFrame) -> pd.Series:
        if self.sensitive not in X.columns:
            raise SpecError(
                f"post-processing needs the sensitive column {self.sensitive!r} in X at prediction time; "
                "build the task without drop_sensitive=True"
            )
        return X[self.sensitive].astype(str)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            self.postprocessor.predict(X, sensitive_features=self._groups(X), random_state=self.seed)
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.postprocessor.estimator_.predict_proba(X)
