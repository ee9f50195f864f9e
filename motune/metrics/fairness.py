"""Group fairness, from fairlearn.

``fairness(model, task, *, split) -> Measurement`` with
``demographic_parity_difference`` (the largest gap between groups in
selection rate), ``equalized_odds_difference`` (the larger of the largest
gaps in true and in false positive rate) and ``worst_group_accuracy`` (the
minimum over groups of accuracy). All three come from one fairlearn
MetricFrame (``difference()`` and ``group_min()``, between groups, as
fairlearn's ``demographic_parity_difference`` / ``equalized_odds_difference``
compute them), whose by-group table (count, accuracy, selection rate, TPR,
FPR per group) is returned as details, so it is stored on every trial.
Fairness is measured where the task says groups are (``task.fairness_split``):
a tabular task's split itself, a text task's counterfactual probe; the
details name the split measured.

``counterfactual(model, task) -> Measurement`` with
``counterfactual_flip_rate`` (over every pair of probe rows of one instance
that differ only in the group term, the fraction whose predicted label
differs) and ``counterfactual_score_gap`` (the mean absolute difference of
their positive-class scores; the counterfactual token fairness gap of Garg
et al., 2019). Details: pairs counted, the flip rate per pair of groups, and
a few flipped examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score

from motune.metrics.registry import Measurement, MetricError, register_metric

FAIRNESS_METRICS = ("demographic_parity_difference", "equalized_odds_difference", "worst_group_accuracy")


@register_metric(
    FAIRNESS_METRICS,
    key="fairness",
    binary_only=("demographic_parity_difference", "equalized_odds_difference"),
)
def fairness(model: Any, task: Any, *, split: str = "valid") -> Measurement:
    """Group gaps (fairlearn) and the per-group table on one split."""
    split = task.fairness_split(split)
    X, y, sensitive = task.split(split)
    if sensitive is None:
        raise MetricError(f"split {split!r} of task {task.name!r} has no sensitive feature to measure fairness on")
    groups = sorted(set(map(str, sensitive)))
    if len(groups) < 2:
        raise MetricError(f"split {split!r} of task {task.name!r} has a single group ({groups}) of "
                          f"{task.sensitive!r}: group gaps need at least two groups (with one they would be 0)")
    y_true = y.to_numpy()
    y_pred = model.predict(X)
    table = group_table(y_true, y_pred, sensitive, binary=task.is_binary)
    if task.is_binary:
        gaps = table.difference(method="between_groups")
        dp = gaps["selection_rate"]
        eo = max(gaps["true_positive_rate"], gaps["false_positive_rate"])
    else:  # the registry refuses these names for a multi-class task; the table still holds
        dp = eo = float("nan")
    values = {
        "demographic_parity_difference": dp,
        "equalized_odds_difference": eo,
        "worst_group_accuracy": table.group_min()["accuracy"],
    }
    return Measurement(values, {"sensitive": task.sensitive, "split": split, "by_group": _records(table)})


def group_table(y_true, y_pred, sensitive, *, binary: bool = True) -> flm.MetricFrame:
    """A fairlearn MetricFrame with count and accuracy (and, for a binary label,
    selection rate, true and false positive rate) by group."""
    metrics = {"count": flm.count, "accuracy": accuracy_score}
    if binary:
        metrics |= {
            "selection_rate": flm.selection_rate,
            "true_positive_rate": flm.true_positive_rate,
            "false_positive_rate": flm.false_positive_rate,
        }
    return flm.MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)


def _records(frame: flm.MetricFrame) -> list[dict[str, Any]]:
    rows = []
    by_group = frame.by_group
    for group, row in by_group.iterrows():
        record = {"group": str(group)}
        for column, value in row.items():
            value = float(value)
            record[str(column)] = int(value) if column == "count" else (None if np.isnan(value) else value)
        rows.append(record)
    return rows


COUNTERFACTUAL_METRICS = ("counterfactual_flip_rate", "counterfactual_score_gap")


@register_metric(COUNTERFACTUAL_METRICS, key="counterfactual", binary_only=("counterfactual_score_gap",))
def counterfactual(model: Any, task: Any, *, split: str = "valid", examples: int = 5) -> Measurement:
    """Prediction flips and score gaps when only the group term of a probe sentence changes."""
    probe = getattr(task, "X_probe", None)
    if probe is None or "instance" not in probe.columns:
        raise MetricError(f"task {task.name!r} has no counterfactual probe (a TextTask has one)")
    split = task.fairness_split(split)
    X, _y, sensitive = task.split(split)
    predicted = np.asarray(model.predict(X))
    scores = np.asarray(model.scores(X), dtype=float)
    groups = np.asarray(sensitive, dtype=str)
    instance = pd.factorize(X["instance"])[0]  # any hashable instance ids
    order = np.argsort(instance, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(instance[order]) != 0])
    bounds = np.r_[starts, len(order)]
    flips, gaps, by_pair, shown = [], [], {}, []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rows = order[lo:hi]
        for i, j in ((a, b) for k, a in enumerate(rows) for b in rows[k + 1:] if groups[a] != groups[b]):
            flip = bool(predicted[i] != predicted[j])
            flips.append(flip)
            gaps.append(abs(scores[i] - scores[j]))
            pair = " / ".join(sorted((groups[i], groups[j])))
            by_pair.setdefault(pair, []).append(flip)
            if flip and len(shown) < examples:
                shown.append({"texts": [str(X["text"].iloc[i]), str(X["text"].iloc[j])],
                              "predicted": [int(predicted[i]), int(predicted[j])]})
    if not flips:
        raise MetricError("the probe has no pair of rows from different groups within one instance")
    return Measurement(
        {"counterfactual_flip_rate": float(np.mean(flips)), "counterfactual_score_gap": float(np.mean(gaps))},
        {"split": split, "pairs": len(flips), "instances": len(starts),
         "flip_rate_by_pair": {k: float(np.mean(v)) for k, v in sorted(by_pair.items())}, "examples": shown},
    )
