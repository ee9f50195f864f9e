"""One snapshot of a stored study as plain records, its feasible front and tables.

A :class:`Result` reads the study from its storage once (one
``get_trials``); every trial becomes a :class:`TrialRecord`, plain data that
figures, the report, pruning summaries and callbacks read without touching
Optuna again. :meth:`Result.refresh` reads the study again (a study that is
still running). The front is the feasible, non-dominated completed trials:
feasibility by the one rule in :mod:`motune._schema`, dominance by
:mod:`motune._pareto`. Tables are pandas DataFrames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from motune import _pareto, _schema
from motune.errors import SpecError
from motune.spec import Constraint, Objective

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as plain data."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict[str, Any]  # what train received (derived values included)
    metrics: dict[str, float | None]
    violations: dict[str, float]  # constraint key -> value - bound (positive: violated)
    feasible: bool | None  # None when not complete
    on_front: bool
    duration_s: float | None
    error: str | None  # why it failed (None unless FAIL)
    attrs: dict[str, Any] = field(repr=False, default_factory=dict)  # every user attribute
    reports: dict[int, dict[str, float]] = field(repr=False, default_factory=dict)  # step -> reported values
    retry_of: int | None = None  # the trial this one retries (Optuna's heartbeat retry)

    @property
    def pruned(self) -> dict[str, Any] | None:
        """Rule, step and reason when a pruning policy ended the trial."""
        return self.attrs.get(_schema.PRUNED_ATTR)


def record_of(trial: Any, constraint_keys: Sequence[str], *, on_front: bool = False) -> TrialRecord:
    """A :class:`TrialRecord` from an Optuna ``FrozenTrial`` of a study with these constraints."""
    state = trial.state.name
    violations = _schema.read_violations(trial.system_attrs, constraint_keys)
    feasible = _schema.is_feasible(violations, constraint_keys) if state == "COMPLETE" else None
    return TrialRecord(
        number=trial.number,
        state=state,
        params=_schema.read_params(trial.user_attrs, trial.params),
        metrics=_schema.read_metrics(trial.user_attrs),
        violations=violations,
        feasible=feasible,
        on_front=on_front,
        duration_s=trial.duration.total_seconds() if trial.duration is not None else None,
        error=_schema.read_error(state, trial.user_attrs, trial.system_attrs),
        attrs=dict(trial.user_attrs),
        reports=_schema.read_reports(trial.system_attrs, trial.number),
        retry_of=trial.system_attrs.get("failed_trial"),
    )


class Result:
    """A motune study read back from storage: records, the front, tables.

    ``Result(optuna_study)`` takes one snapshot; :meth:`refresh` takes a new one.
    """

    def __init__(self, study: Any) -> None:
        record = _schema.read_study_record(study.user_attrs)
        if record is None:
            raise SpecError(f"study {study.study_name!r} was not created by motune "
                            f"(no {_schema.STUDY_ATTR!r} attribute)")
        self.study = study
        self.info: dict[str, Any] = record
        self.objectives = [Objective(**o) for o in record["objectives"]]
        self.constraints = [Constraint(**c) for c in record["constraints"]]
        self.extra_metrics: list[str] = list(record.get("extra_metrics") or [])
        self.interrupted: str | None = None  # set by optimize when a signal stopped the run
        self.refresh()

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def refresh(self) -> Result:
        """Read the study from storage again (one ``get_trials``); returns ``self``."""
        trials = self.study.get_trials(deepcopy=False)
        self._trials = trials
        keys = [c.key for c in self.constraints]
        records = [record_of(t, keys) for t in trials]
        front = set(self._front_numbers(records))
        self._records = [r if r.number not in front else _with_front(r) for r in records]
        self.distributions: dict[str, Any] = {}
        for t in trials:
            self.distributions.update(t.distributions)
        return self

    def _front_numbers(self, records: list[TrialRecord]) -> list[int]:
        names = [o.metric for o in self.objectives]
        feasible = [r for r in records if r.feasible and all(r.metrics.get(n) is not None for n in names)]
        if not feasible:
            return []
        losses = _pareto.to_losses([[r.metrics[n] for n in names] for r in feasible], self.directions)
        return [r.number for r, keep in zip(feasible, _pareto.nondominated_mask(losses)) if keep]

    def completed_study(self) -> Any:
        """An in-memory ``optuna.Study`` holding this snapshot's completed trials, for Optuna's own
        analyses (parameter importance) without reading the storage again."""
        import optuna

        before = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created in memory" line
        try:
            copy = optuna.create_study(directions=self.directions)
        finally:
            optuna.logging.set_verbosity(before)
        copy.add_trials([t for t in self._trials if t.state == optuna.trial.TrialState.COMPLETE])
        return copy

    def records(self) -> list[TrialRecord]:
        """Every trial, oldest first (of this snapshot)."""
        return list(self._records)

    def summary(self) -> dict[str, int]:
        """Trial counts by outcome."""
        records = self._records
        count = lambda pred: sum(1 for r in records if pred(r))  # noqa: E731
        return {
            "trials": len(records),
            "complete": count(lambda r: r.state == "COMPLETE"),
            "feasible": count(lambda r: r.feasible is True),
            "infeasible": count(lambda r: r.feasible is False),
            "on_front": count(lambda r: r.on_front),
            "pruned": count(lambda r: r.state == "PRUNED"),
            "failed": count(lambda r: r.state == "FAIL"),
            "running": count(lambda r: r.state in ("RUNNING", "WAITING")),
        }

    def losses(self, records: Sequence[TrialRecord]) -> np.ndarray:
        """The records' objective values as losses (see :mod:`motune._pareto`)."""
        return _pareto.to_losses([[r.metrics[o.metric] for o in self.objectives] for r in records], self.directions)

    def hypervolume(self, reference: dict[str, float], *, trials: list[int] | None = None) -> float:
        """Hypervolume of the feasible completed trials (or of those among ``trials``) with
        respect to ``reference`` (one value per objective metric, in the metric's own units)."""
        chosen = None if trials is None else set(trials)
        points = [r for r in self._records if r.feasible and (chosen is None or r.number in chosen)]
        ref = _pareto.to_losses([[reference[o.metric] for o in self.objectives]], self.directions)[0]
        return _pareto.hypervolume(self.losses(points), ref) if points else 0.0

    def reference_point(self) -> dict[str, float]:
        """The reference point by :data:`motune._pareto.REFERENCE_RULE` over the feasible completed
        trials (``ValueError`` when there is none)."""
        feasible = [r for r in self._records if r.feasible]
        if not feasible:
            raise ValueError(f"study {self.name!r} has no feasible completed trial yet")
        ref = _pareto.from_losses(_pareto.reference_point(self.losses(feasible)), self.directions)
        return {o.metric: float(v) for o, v in zip(self.objectives, ref)}

    def metric_columns(self) -> list[str]:
        """The metrics a table shows first: objectives, constraint metrics, then the study's extra metrics."""
        names = [o.metric for o in self.objectives] + [c.metric for c in self.constraints] + self.extra_metrics
        return list(dict.fromkeys(names))

    def front(self) -> pd.DataFrame:
        """Feasible non-dominated trials: trial number, objective, constraint and extra metrics, params.

        Sorted best first by the first objective.
        """
        rows = [self._row(r, all_metrics=False) for r in self._records if r.on_front]
        frame = pd.DataFrame(rows, columns=self._columns(rows, all_metrics=False))
        first = self.objectives[0]
        if len(frame):
            frame = frame.sort_values(first.metric, ascending=first.direction == "minimize", kind="stable")
        return frame.reset_index(drop=True)

    def trials(self) -> pd.DataFrame:
        """Every trial: state, feasibility, front membership, all metrics, params, duration, error."""
        rows = [self._row(r, all_metrics=True) for r in self._records]
        return pd.DataFrame(rows, columns=self._columns(rows, all_metrics=True))

    def _row(self, r: TrialRecord, *, all_metrics: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"trial": r.number}
        if all_metrics:
            row |= {"state": r.state, "feasible": r.feasible, "on_front": r.on_front}
        shown = self.metric_columns()
        names = shown + (sorted(set(r.metrics) - set(shown)) if all_metrics else [])
        row |= {n: r.metrics.get(n) for n in names}
        row |= {f"params_{k}": v for k, v in r.params.items()}
        if all_metrics:
            row |= {"duration_s": r.duration_s, "error": r.error}
        return row

    def _columns(self, rows: list[dict[str, Any]], *, all_metrics: bool) -> list[str]:
        columns = ["trial"] + (["state", "feasible", "on_front"] if all_metrics else []) + self.metric_columns()
        tail = ("duration_s", "error")
        for row in rows:
            columns += [c for c in row if c not in columns and not c.startswith("params_") and c not in tail]
        for row in rows:
            columns += [c for c in row if c.startswith("params_") and c not in columns]
        if all_metrics:
            columns += list(tail)
        return columns


def _with_front(record: TrialRecord) -> TrialRecord:
    from dataclasses import replace

    return replace(record, on_front=True)
