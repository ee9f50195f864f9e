"""Robustness to perturbed inputs.

``robustness(model, task, *, split, noise, corruption, seed) -> Measurement``
with ``robust_accuracy`` (accuracy on a perturbed copy of the split) and
``robustness_drop`` (clean accuracy minus robust accuracy). The perturbation
is seeded and so the same for every trial of a study:

- each numeric feature gets Gaussian noise with standard deviation
  ``noise`` times that feature's standard deviation on the training split;
- each categorical value is replaced, with probability ``corruption``
  (default: ``noise``), by a category drawn uniformly from that feature's
  training categories.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score

from motune.metrics.registry import Measurement, register_metric


def check_robustness_options(*, noise: float = 0.1, corruption: float | None = None, seed: int = 0) -> None:
    """Raise ``ValueError`` for option values :func:`robustness` cannot use."""
    corruption = noise if corruption is None else corruption
    if not noise >= 0 or not 0 <= corruption <= 1:
        raise ValueError(f"need noise >= 0 and corruption in [0, 1]; got noise={noise}, corruption={corruption}")


@register_metric(("robust_accuracy", "robustness_drop"), key="robustness", validate=check_robustness_options)
def robustness(
    model: Any,
    task: Any,
    *,
    split: str = "valid",
    noise: float = 0.1,
    corruption: float | None = None,
    seed: int = 0,
) -> Measurement:
    """Accuracy under seeded Gaussian noise and category corruption, and its drop."""
    check_robustness_options(noise=noise, corruption=corruption, seed=seed)
    corruption = noise if corruption is None else corruption
    X, y, _ = task.split(split)
    clean = accuracy_score(y, model.predict(X))
    perturbed = perturb(X, task, noise=noise, corruption=corruption, seed=seed)
    robust = accuracy_score(y, model.predict(perturbed))
    return Measurement(
        {"robust_accuracy": robust, "robustness_drop": clean - robust},
        {"split": split, "noise": noise, "corruption": corruption, "seed": seed, "clean_accuracy": float(clean)},
    )


def perturb(X: pd.DataFrame, task: Any, *, noise: float, corruption: float, seed: int) -> pd.DataFrame:
    """A perturbed copy of ``X`` (see the module docstring); ``X`` is left unchanged."""
    rng = np.random.default_rng(seed)
    out = X.copy()
    n = len(X)
    for column in X.columns:
        if column in task.numeric_columns:
            std = float(task.X_train[column].std())
            if noise > 0 and std > 0:
                out[column] = X[column].astype(float) + rng.normal(0.0, noise * std, size=n)
        elif corruption > 0:
            categories = task.X_train[column].dropna().unique()
            if len(categories) == 0:
                continue
            replace = rng.random(n) < corruption
            values = X[column].to_numpy(dtype=object, copy=True)
            values[replace] = rng.choice(categories, size=int(replace.sum()))
            out[column] = pd.Series(values, index=X.index).astype(X[column].dtype)
    return out
