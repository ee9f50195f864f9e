"""Predictive quality: ``accuracy_metrics(model, task, *, split) -> {accuracy, balanced_accuracy}``
and ``roc_auc(model, task, *, split) -> {roc_auc}``, computed with scikit-learn
on the task's split (validation by default)."""

from __future__ import annotations

from typing import Any

from sklearn import metrics as skm

from motune.metrics.registry import register_metric


@register_metric(("accuracy", "balanced_accuracy"), key="accuracy")
def accuracy_metrics(model: Any, task: Any, *, split: str = "valid") -> dict[str, float]:
    """Accuracy and balanced accuracy of model.predict on one split."""
    X, y, _ = task.split(split)
    y_pred = model.predict(X)
    return {
        "accuracy": skm.accuracy_score(y, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, y_pred),
    }


@register_metric("roc_auc", key="roc_auc", binary_only=True)
def roc_auc(model: Any, task: Any, *, split: str = "valid") -> dict[str, float]:
    """Area under the ROC curve of the positive-class scores on one split."""
    X, y, _ = task.split(split)
    return {"roc_auc": skm.roc_auc_score(y, model.scores(X))}
