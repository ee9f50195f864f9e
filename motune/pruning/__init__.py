"""Pruning for multi-objective studies: decisions from intermediate reports.

Optuna refuses ``trial.report`` / ``should_prune`` in multi-objective
studies; motune keeps the reports itself, in the study's storage, and ends a
trial by raising ``optuna.TrialPruned`` with the rule and reason recorded.
Inside ``train``, call ``ctx.report(step, model)`` (motune measures the
study's metrics on the validation split) or ``ctx.report(step,
metrics={...})``. Policies:

- :class:`ConstraintAware`: static constraints at step 0, learning-curve
  constraints after a warm-up, calibrated on the study's completed trials;
- :class:`SuccessiveHalving`: multi-objective asynchronous successive halving;
- ``a | b``: prune when either does. ``Study(pruning=None)`` never prunes;
  the default is ``ConstraintAware() | SuccessiveHalving()``.
"""

from motune.pruning.base import AnyOf, Decision, PeerReport, PruningPolicy, ReportContext
from motune.pruning.halving import SuccessiveHalving
from motune.pruning.rules import ConstraintAware


def default_policy() -> PruningPolicy:
    """motune's default, chosen by replaying rules over recorded learning curves (benchmarks/pruning.py):
    stop a trial for a learning-curve constraint only when its value is more than 0.3 past the bound (in
    the metric's units; once calibrated, only when few completed trials that far off ended feasible), and
    for its objectives only when, at an epoch whose order agrees with the final one (Spearman >= 0.8), it
    places below every trial of the three best completed fronts by more than a fifth of the completed
    trials."""
    return ConstraintAware(margin=0.3) | SuccessiveHalving(margin=0.2, front_depth=3, min_agreement=0.8)


__all__ = [
    "AnyOf",
    "ConstraintAware",
    "Decision",
    "PeerReport",
    "PruningPolicy",
    "ReportContext",
    "SuccessiveHalving",
    "default_policy",
]
