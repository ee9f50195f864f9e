"""Callbacks: plain-record hooks on a study's run, and Optuna's own callbacks beside them.

``Study.optimize(..., callbacks=[...])`` takes both kinds:

- a :class:`Callback` (subclass it and override what you need) gets plain
  records, never Optuna objects: :meth:`~Callback.on_study_start`
  (:class:`StudyStart`), :meth:`~Callback.on_trial_start`
  (:class:`TrialStart`, after the params are suggested, before ``train``),
  :meth:`~Callback.on_report` (:class:`ReportRecord`, each ``ctx.report``,
  with the pruning decision), :meth:`~Callback.on_trial_end`
  (a :class:`motune.TrialRecord` once the trial is stored: complete, pruned
  or failed) and :meth:`~Callback.on_study_end` (the :class:`motune.Result`).
  Progress output is one of these.
- any other callable is an Optuna callback ``(optuna.Study, FrozenTrial)``,
  passed to ``optuna.Study.optimize`` as it is (``optuna-integration``'s
  MLflow and Weights & Biases callbacks attach this way).

Hooks run in the worker thread that ran the trial (``n_jobs > 1`` runs
several). An exception in a callback stops the run, as in Optuna: it is
raised as a :class:`motune.errors.CallbackError` (the original as its
cause) once the trial it was called for is stored (FAIL, with the reason,
when the hook ran inside it: ``on_trial_start``, ``on_report``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from motune.errors import CallbackError, SpecTypeError


@dataclass(frozen=True)
class StudyStart:
    name: str
    objectives: list[str]  # "maximize accuracy", ...
    constraints: list[str]  # "equalized_odds_difference <= 0.1", ...
    n_trials: int | None
    timeout_s: float | None
    storage: str  # the storage, its password hidden
    stored_trials: int  # trials already in storage (a resumed study)


@dataclass(frozen=True)
class TrialStart:
    number: int
    params: dict[str, Any]  # what train receives
    seed: int
    retry_of: int | None = None


@dataclass(frozen=True)
class ReportRecord:
    number: int
    step: int
    values: dict[str, float]
    pruned: dict[str, str] | None = None  # {"rule": ..., "reason": ...} when this report pruned the trial
    warnings: list[str] = field(default_factory=list)


class Callback:
    """Base class of motune callbacks: override any of the hooks (each does nothing here)."""

    def on_study_start(self, info: StudyStart) -> None:
        pass

    def on_trial_start(self, trial: TrialStart) -> None:
        pass

    def on_report(self, report: ReportRecord) -> None:
        pass

    def on_trial_end(self, record: Any) -> None:  # a motune.TrialRecord
        pass

    def on_study_end(self, result: Any) -> None:  # a motune.Result
        pass


def split_callbacks(callbacks: Iterable[Any] | None) -> tuple[list[Callback], list[Any]]:
    """``(motune callbacks, Optuna callbacks)``; anything else is a clear ``SpecTypeError``."""
    ours, theirs = [], []
    for cb in callbacks or ():
        if isinstance(cb, Callback):
            ours.append(cb)
        elif callable(cb):
            theirs.append(cb)
        else:
            raise SpecTypeError(f"a callback must be a motune.Callback or an Optuna callback "
                                f"callable(study, frozen_trial), got {type(cb).__name__}")
    return ours, theirs


class Hooks:
    """Calls one hook of every motune callback, in order: ``hooks("on_trial_end", record)``."""

    HOOKS = ("on_study_start", "on_trial_start", "on_report", "on_trial_end", "on_study_end")

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def __call__(self, hook: str, record: Any) -> None:
        if hook not in self.HOOKS:
            raise AssertionError(f"no hook {hook!r}")
        for cb in self.callbacks:
            try:
                getattr(cb, hook)(record)
            except Exception as err:
                raise CallbackError(f"callback {type(cb).__name__}.{hook} raised {type(err).__name__}: {err}") from err
