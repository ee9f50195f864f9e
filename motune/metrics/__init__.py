"""Pure measurement: ``(model, task, **options) -> {name: float}`` (+ details).

Importing this package registers the built-in metrics:

======================================  ==========================================
function key (``metric_options`` key)   names it produces
======================================  ==========================================
``accuracy``                            ``accuracy``, ``balanced_accuracy``
``roc_auc``                             ``roc_auc``
``fairness``                            ``demographic_parity_difference``,
                                        ``equalized_odds_difference``,
                                        ``worst_group_accuracy`` (+ per-group table)
``counterfactual``                      ``counterfactual_flip_rate``,
                                        ``counterfactual_score_gap`` (text probe)
``robustness``                          ``robust_accuracy``, ``robustness_drop``
``text_robustness``                     ``text_robust_accuracy``,
                                        ``text_robustness_drop``
``adversarial``                         ``adversarial_accuracy``,
                                        ``adversarial_drop`` (FGSM / PGD, torch)
``latency``                             ``latency_p50_ms``, ``latency_p90_ms``,
                                        ``latency_p95_ms``, ``latency_p99_ms``,
                                        ``batch_latency_p50_ms``,
                                        ``batch_latency_p95_ms``, ``throughput_per_s``
======================================  ==========================================

The ``model`` a metric function receives is a :class:`motune.models.Predictor`:
it has ``predict(X)`` and ``scores(X)`` (memoised on the task's splits) and
passes every other attribute through to the trained model.
"""

from motune.metrics import accuracy, fairness, latency, robustness  # noqa: F401  (registers)
from motune.metrics.registry import (
    Measurement,
    MetricError,
    UnknownMetricError,
    group_for,
    known_metrics,
    measure,
    register_metric,
    unregister_metric,
)

__all__ = [
    "Measurement",
    "MetricError",
    "UnknownMetricError",
    "group_for",
    "known_metrics",
    "measure",
    "register_metric",
    "unregister_metric",
]
