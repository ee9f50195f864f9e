"""Bootstrap intervals of the prediction-based metrics, from fairlearn.

``bootstrap_intervals(model, task, names, *, split, n_boot, confidence, seed)
-> {name: (low, high)}`` for the names it covers:

- ``accuracy``, ``balanced_accuracy``: ``MetricFrame.overall_ci`` on the split;
- ``demographic_parity_difference``: ``MetricFrame.difference_ci`` of the
  selection rate; ``worst_group_accuracy``: ``MetricFrame.group_min_ci`` of the
  accuracy, both where the task measures fairness (``task.fairness_split``);
- ``equalized_odds_difference``: fairlearn's ``equalized_odds_difference`` on
  ``n_boot`` resamples of the same rows (seeded), because it is the larger of
  two differences and MetricFrame's intervals are per metric; a resample that
  drew one group only is skipped, and with fewer than half of them usable
  there is no interval.

Percentile intervals of ``n_boot`` resamples of the rows (fairlearn's
bootstrap). Other metrics get none here (the latency run has its own
order-statistic intervals). Each metric is computed on the model's
predictions made once per split.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from motune.errors import MetricError
from motune.models import Predictor

COVERED = ("accuracy", "balanced_accuracy", "demographic_parity_difference", "equalized_odds_difference",
           "worst_group_accuracy")


def bootstrap_intervals(model: Any, task: Any, names: Iterable[str], *, split: str = "test", n_boot: int = 200,
                        confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Bootstrap intervals of the covered metrics among ``names`` (see the module docstring)."""
    names = [n for n in dict.fromkeys(names) if n in COVERED]
    if not names:
        return {}
    if not (isinstance(n_boot, int) and n_boot >= 10 and 0 < confidence < 1):
        raise MetricError(f"need n_boot >= 10 and 0 < confidence < 1, got {n_boot}, {confidence}")
    model = model if isinstance(model, Predictor) else Predictor(model, task)
    quantiles = [(1 - confidence) / 2, 1 - (1 - confidence) / 2]
    out: dict[str, tuple[float, float]] = {}
    where = task.fairness_split(split)
    overall = {"accuracy": accuracy_score, "balanced_accuracy": balanced_accuracy_score}
    fairness = [n for n in names if n not in overall]
    by_group = {"accuracy": accuracy_score, "selection_rate": flm.selection_rate}
    if {"accuracy", "balanced_accuracy"} & set(names) and (where != split or not fairness):
        X, y, _ = task.split(split)  # a text task: accuracy on the texts, fairness on the probe
        frame = flm.MetricFrame(metrics=overall, y_true=np.asarray(y), y_pred=model.predict(X),
                                sensitive_features=np.zeros(len(y)), n_boot=n_boot, ci_quantiles=quantiles,
                                random_state=seed)
        low, high = frame.overall_ci
        out |= {n: (float(low[n]), float(high[n])) for n in overall if n in names}
    if fairness:
        X, y, sensitive = task.split(where)
        y_true, y_pred, groups = np.asarray(y), np.asarray(model.predict(X)), np.asarray(sensitive, dtype=str)
        metrics = {**by_group, **(overall if where == split else {})}  # one bootstrap serves both on a table
        frame = flm.MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=groups,
                                n_boot=n_boot, ci_quantiles=quantiles, random_state=seed)
        if where == split:
            low, high = frame.overall_ci
            out |= {n: (float(low[n]), float(high[n])) for n in overall if n in names}
        if "demographic_parity_difference" in names:
            low, high = frame.difference_ci()
            out["demographic_parity_difference"] = (float(low["selection_rate"]), float(high["selection_rate"]))
        if "worst_group_accuracy" in names:
            low, high = frame.group_min_ci()
            out["worst_group_accuracy"] = (float(low["accuracy"]), float(high["accuracy"]))
        if "equalized_odds_difference" in names:
            rng = np.random.default_rng(seed)
            samples = []
            for _ in range(n_boot):
                rows = rng.integers(0, len(y_true), size=len(y_true))
                if len(set(groups[rows])) < 2:
                    continue
                samples.append(flm.equalized_odds_difference(y_true[rows], y_pred[rows],
                                                             sensitive_features=groups[rows]))
            if len(samples) >= n_boot / 2:
                low, high = np.nanquantile(np.asarray(samples, dtype=float), quantiles)
                out["equalized_odds_difference"] = (float(low), float(high))
    return out
