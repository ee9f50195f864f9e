"""Feasibility and the Pareto front of a stored study, as plain records and tables.

A :class:`Result` reads a study from its storage (nothing is re-run): every
trial becomes a :class:`TrialRecord`; the front is the feasible,
non-dominated completed trials (Optuna's ``Study.best_trials``, which applies
the stored constraint values); tables are pandas DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from motune.spec import Constraint, Objective, SpecError

STUDY_ATTR = "motune"


@dataclass(frozen=True)
class TrialRecord:
    """One trial as plain data."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict[str, Any]
    metrics: dict[str, float | None]
    violations: dict[str, float]  # constraint key -> value - bound (positive: violated)
    feasible: bool | None  # None when not complete
    on_front: bool
    duration_s: float | None
    error: str | None
    attrs: dict[str, Any] = field(repr=False, default_factory=dict)


class Result:
    """A motune study read back from storage: records, the front, tables."""

    def __init__(self, study: optuna.Study) -> None:
        record = study.user_attrs.get(STUDY_ATTR)
        if record is None:
            raise SpecError(f"study {study.study_name!r} was not created by motune (no {STUDY_ATTR!r} attribute)")
        self.study = study
        self.info: dict[str, Any] = record
        self.objectives = [Objective(**o) for o in record["objectives"]]
        self.constraints = [Constraint(**c) for c in record["constraints"]]

    @property
    def name(self) -> str:
        return self.study.study_name

    def records(self) -> list[TrialRecord]:
        """Every trial, oldest first."""
        front = {t.number for t in self.study.best_trials}
        out = []
        for t in self.study.get_trials(deepcopy=False):
            complete = t.state == optuna.trial.TrialState.COMPLETE
            violations = {
                c.key: t.system_attrs[f"constraints:{c.key}"]
                for c in self.constraints
                if f"constraints:{c.key}" in t.system_attrs
            }
            feasible = None
            if complete:
                feasible = len(violations) == len(self.constraints) and all(v <= 0 for v in violations.values())
            out.append(
                TrialRecord(
                    number=t.number,
                    state=t.state.name,
                    params=dict(t.params),
                    metrics=dict(t.user_attrs.get("metrics", {})),
                    violations=violations,
                    feasible=feasible,
                    on_front=t.number in front and bool(feasible),
                    duration_s=t.duration.total_seconds() if t.duration is not None else None,
                    error=t.user_attrs.get("error") or t.system_attrs.get("fail_reason"),
                    attrs=dict(t.user_attrs),
                )
            )
        return out

    def summary(self) -> dict[str, int]:
        """Trial counts by outcome."""
        records = self.records()
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

    def hypervolume(self, reference: dict[str, float], *, trials: list[int] | None = None) -> float:
        """Hypervolume of the feasible completed trials (or of those among ``trials``) with
        respect to ``reference`` (one value per objective metric, in the metric's own units)."""
        chosen = None if trials is None else set(trials)
        points = [[r.metrics[o.metric] for o in self.objectives] for r in self.records()
                  if r.feasible and (chosen is None or r.number in chosen)]
        return hypervolume(points, [o.direction for o in self.objectives],
                           [reference[o.metric] for o in self.objectives])

    def _metric_columns(self) -> list[str]:
        names = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        return list(dict.fromkeys(names))

    def front(self) -> pd.DataFrame:
        """Feasible non-dominated trials: trial number, objective and constraint metrics, params.

        Sorted best first by the first objective.
        """
        rows = [self._row(r, all_metrics=False) for r in self.records() if r.on_front]
        frame = pd.DataFrame(rows, columns=self._columns(rows, all_metrics=False))
        first = self.objectives[0]
        if len(frame):
            frame = frame.sort_values(first.metric, ascending=first.direction == "minimize", kind="stable")
        return frame.reset_index(drop=True)

    def trials(self) -> pd.DataFrame:
        """Every trial: state, feasibility, front membership, all metrics, params, duration, error."""
        rows = [self._row(r, all_metrics=True) for r in self.records()]
        return pd.DataFrame(rows, columns=self._columns(rows, all_metrics=True))

    def _row(self, r: TrialRecord, *, all_metrics: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"trial": r.number}
        if all_metrics:
            row |= {"state": r.state, "feasible": r.feasible, "on_front": r.on_front}
        names = self._metric_columns() + (sorted(set(r.metrics) - set(self._metric_columns())) if all_metrics else [])
        row |= {n: r.metrics.get(n) for n in names}
        row |= {f"params_{k}": v for k, v in r.params.items()}
        if all_metrics:
            row |= {"duration_s": r.duration_s, "error": r.error}
        return row

    def _columns(self, rows: list[dict[str, Any]], *, all_metrics: bool) -> list[str]:
        columns = ["trial"] + (["state", "feasible", "on_front"] if all_metrics else []) + self._metric_columns()
        for row in rows:
            columns += [c for c in row if c not in columns and not c.startswith("params_") and c not in ("duration_s", "error")]
        for row in rows:
            columns += [c for c in row if c.startswith("params_") and c not in columns]
        if all_metrics:
            columns += ["duration_s", "error"]
        return columns


def hypervolume(points, directions, reference) -> float:
    """Hypervolume dominated by ``points`` (rows of objective values) up to ``reference``,
    with Optuna's exact algorithm; points that do not dominate the reference add nothing."""
    from optuna._hypervolume import compute_hypervolume

    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    ref = sign * np.asarray(reference, dtype=float)
    losses = sign * np.asarray(points, dtype=float).reshape(-1, len(directions))
    losses = losses[np.all(losses < ref, axis=1)]
    return float(compute_hypervolume(losses, ref)) if len(losses) else 0.0
