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
    return ConstraintAware() | SuccessiveHalving()


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
