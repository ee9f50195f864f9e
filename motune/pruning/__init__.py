"""Pruning for multi-objective studies: decisions from intermediate reports.

Optuna refuses ``trial.report`` / ``should_prune`` in multi-objective
studies; motune keeps the reports itself, in the study's storage, and ends a
trial by raising ``optuna.TrialPruned`` with the rule and reason recorded.
Inside ``train``, call ``ctx.report(step, model)`` (motune measures the
study's metrics on the validation split) or ``ctx.report(step,
metrics={...})``. Policies:

- :class:`ForecastAware` (the default): forecast each trial's final values
  from its curve and the study's completed curves
  (:mod:`motune.pruning.forecast`), and stop it when, with probability at
  least ``1 - risk``, it will break a constraint or end dominated by the
  feasible front; every forecast is stored, its coverage measured;
- :class:`ConstraintAware`: static constraints at step 0, learning-curve
  constraints after a warm-up, calibrated on the study's completed trials;
- :class:`SuccessiveHalving`: multi-objective asynchronous successive halving;
- ``a | b``: prune when either does. ``Study(pruning=None)`` never prunes.
"""

from motune.pruning.base import AnyOf, Assessment, Decision, PeerReport, PruningPolicy, ReportContext
from motune.pruning.forecast import Calibration, Curve, Forecast
from motune.pruning.halving import SuccessiveHalving
from motune.pruning.risk import ForecastAware
from motune.pruning.rules import ConstraintAware


def default_policy() -> PruningPolicy:
    """motune's default: :class:`ForecastAware` with the risk chosen by replaying it over recorded learning
    curves that the benchmark does not score (``benchmarks/pruning.py``)."""
    return ForecastAware()


__all__ = [
    "AnyOf",
    "Assessment",
    "Calibration",
    "ConstraintAware",
    "Curve",
    "Decision",
    "Forecast",
    "ForecastAware",
    "PeerReport",
    "PruningPolicy",
    "ReportContext",
    "SuccessiveHalving",
    "default_policy",
]
