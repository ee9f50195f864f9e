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
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fairlearn import metrics as flm
from sklearn.metrics import accuracy_score

from motune.metrics.registry import Measurement, register_metric

FAIRNESS_METRICS = ("demographic_parity_difference", "equalized_odds_difference", "worst_group_accuracy")


@register_metric(
    FAIRNESS_METRICS,
    key="fairness",
    binary_only=("demographic_parity_difference", "equalized_odds_difference"),
)
def fairness(model: Any, task: Any, *, split: str = "valid") -> Measurement:
    """Group gaps (fairlearn) and the per-group table on one split."""
    X, y, sensitive = task.split(split)
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
