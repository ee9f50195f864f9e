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
from motune.errors import ArtifactError, SelectionError
from motune.pruning.forecast import calibration_of, trial_checks
from motune.spec import Constraint, Objective
from motune.studyfile import task_of

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
    forecasts: dict[int, dict[str, Any]] = field(repr=False, default_factory=dict)  # step -> the pruning forecast
    retry_of: int | None = None  # the trial this one retries (Optuna's heartbeat retry)
    model: dict[str, Any] | None = field(repr=False, default=None)  # its kept model: artifact id, sha256, kind ...
    model_removed: dict[str, Any] | None = field(repr=False, default=None)  # why and when the keep policy removed it
    confirmation: dict[str, Any] | None = field(repr=False, default=None)  # test-split values, quiet latency

    @property
    def pruned(self) -> dict[str, Any] | None:
        """Rule, step and reason when a pruning policy ended the trial."""
        return self.attrs.get(_schema.PRUNED_ATTR)


def record_of(trial: Any, constraint_keys: Sequence[str], *, on_front: bool = False,
              study_attrs: dict[str, Any] | None = None, objective_names: Sequence[str] | None = None) -> TrialRecord:
    """A :class:`TrialRecord` from an Optuna ``FrozenTrial`` of a study with these constraints (and the
    study's user attributes, for what is recorded about the trial after it finished). With
    ``objective_names`` (a study motune did not create) the metrics are the trial's values under those
    names, and the constraints every value Optuna's ``FrozenTrial.constraints`` holds."""
    study_attrs = study_attrs or {}
    state = trial.state.name
    if objective_names is None:
        violations = _schema.read_violations(trial.system_attrs, constraint_keys)
        metrics = _schema.read_metrics(trial.user_attrs)
    else:
        violations = {k: float(v) for k, v in trial.constraints.items()}
        metrics = dict(zip(objective_names, trial.values)) if trial.values is not None else {}
    feasible = _schema.is_feasible(violations, constraint_keys) if state == "COMPLETE" else None
    return TrialRecord(
        number=trial.number,
        state=state,
        params=_schema.read_params(trial.user_attrs, trial.params),
        metrics=metrics,
        violations=violations,
        feasible=feasible,
        on_front=on_front,
        duration_s=trial.duration.total_seconds() if trial.duration is not None else None,
        error=_schema.read_error(state, trial.user_attrs, trial.system_attrs),
        attrs=dict(trial.user_attrs),
        reports=_schema.read_reports(trial.system_attrs, trial.number),
        forecasts=_schema.read_forecasts(trial.system_attrs, trial.number),
        retry_of=trial.system_attrs.get("failed_trial"),
        model=_schema.read_model(trial.system_attrs),
        model_removed=study_attrs.get("removed", {}).get(trial.number),
        confirmation=study_attrs.get("confirmations", {}).get(trial.number),
    )


FOREIGN_MISSING = ("the task and its data, per-group fairness tables, latency records, intermediate reports, "
                   "kept models, confirmations and decisions (motune records them on studies it runs)")


def foreign_record(study: Any) -> dict[str, Any]:
    """What motune can read of an Optuna study it did not create: objectives from its directions and
    metric names (``objective_<i>`` where it has none); constraints are read per trial."""
    try:
        names = list(study.metric_names or [])
    except Exception:  # noqa: BLE001  (an Optuna without metric names)
        names = []
    directions = [d.name.lower() for d in study.directions]
    if len(names) != len(directions):
        names = [f"objective_{i}" for i in range(len(directions))]
    return {"objectives": [{"metric": n, "direction": d} for n, d in zip(names, directions)], "constraints": [],
            "foreign": True, "missing": FOREIGN_MISSING}


class Result:
    """A motune study read back from storage: records, the front, tables.

    ``Result(optuna_study)`` takes one snapshot; :meth:`refresh` takes a new one.
    """

    def __init__(self, study: Any) -> None:
        record = _schema.read_study_record(study.user_attrs)
        self.foreign = record is None  # a plain Optuna study: what motune records is missing
        if record is None:
            record = foreign_record(study)
        self.study = study
        self.info: dict[str, Any] = record
        self.objectives = [Objective(**o) for o in record["objectives"]]
        self.constraints = [Constraint(**c) for c in record["constraints"]]
        self.extra_metrics: list[str] = list(record.get("extra_metrics") or [])
        self.interrupted: str | None = None  # set by optimize when a signal stopped the run
        self.artifact_store: Any = None  # where its models are (set by load_study / optimize)
        self.spec: Any = None  # the motune.Study that ran it, when known (optimize, Study.result)
        self._model_loader: Any = None  # (result, number, device=) -> model, set with the store by motune.run
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
        self._study_attrs = dict(self.study.user_attrs)
        if self.foreign:  # every constraint Optuna holds on any trial (Trial.set_constraint or the old list)
            self.constraint_keys = sorted({k for t in trials for k in t.constraints})
        else:
            self.constraint_keys = [c.key for c in self.constraints]
        after = {"removed": _schema.read_removed_models(self._study_attrs),
                 "confirmations": _schema.read_confirmations(self._study_attrs)}
        names = [o.metric for o in self.objectives] if self.foreign else None
        records = [record_of(t, self.constraint_keys, study_attrs=after, objective_names=names) for t in trials]
        front = set(self._front_numbers(records))
        self._records = [r if r.number not in front else _with_front(r) for r in records]
        self.distributions: dict[str, Any] = {}
        for t in trials:
            self.distributions.update(t.distributions)
        return self

    def _front_numbers(self, records: list[TrialRecord]) -> list[int]:
        names = [o.metric for o in self.objectives]
        values = [[r.metrics.get(n) for n in names] for r in records]
        return [r.number for r, on in zip(records, _pareto.front_of(values, self.directions,
                                                                    [bool(r.feasible) for r in records])) if on]

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

    def record(self, number: int) -> TrialRecord:
        """Trial ``number``'s record (``KeyError`` when the study has none)."""
        for r in self._records:
            if r.number == number:
                return r
        raise KeyError(f"study {self.name!r} has no trial {number}")

    def decisions(self) -> list[DecisionRecord]:
        """Every decision recorded for this study, oldest first; the current one (the latest, unless another
        was stated current: :func:`motune.make_current`) has ``current`` set."""
        found = [DecisionRecord.from_dict(d, result=self) for d in _schema.read_decisions(self._study_attrs)]
        current, statement = _schema.current_decision(self._study_attrs)
        for d in found:
            d.current = current is not None and d.id == current["id"]
            d.made_current = statement if d.current else None
        return found

    def pick_decision(self, number: int | None = None) -> DecisionRecord:
        """Decision ``number`` (``None``: the current one); a :class:`~motune.errors.SelectionError` naming the
        decisions there are when there is no such one."""
        found = self.decisions()
        if not found:
            raise SelectionError(f"study {self.name!r} has no decision yet: motune decide {self.name} --rule ...")
        chosen = next((d for d in found if d.current), None) if number is None else \
            next((d for d in found if d.number == number), None)
        if chosen is None:
            raise SelectionError(f"study {self.name!r} has no decision {number}; it has {[d.number for d in found]}")
        return chosen

    def checks(self) -> list[dict[str, Any]]:
        """Every check of a decision on new data (:func:`motune.check`), oldest first."""
        return _schema.read_checks(self._study_attrs)

    @property
    def version(self) -> int:
        """The study's spec version (1 unless it was created as a new version of an earlier one)."""
        return int(self.info.get("version") or 1)

    @property
    def lineage(self) -> dict[str, Any] | None:
        """The earlier version this one follows and what changed (``None`` for a first version)."""
        return self.info.get("previous")

    @property
    def decision(self) -> DecisionRecord | None:
        """The current decision (the latest, unless another was stated current), or ``None``."""
        return next((d for d in self.decisions() if d.current), None)

    def load_model(self, number: int, *, device: str | None = None) -> Any:
        """Trial ``number``'s kept model, from the artifact store, after its recorded hash was checked
        (``ArtifactError`` when it was not kept, was removed, is missing or corrupt)."""
        if self._model_loader is None:
            raise ArtifactError(f"study {self.name!r} was opened without its artifact store: open it with "
                                "mt.load_study(name, storage=..., artifact_store=...)")
        return self._model_loader(self, number, device=device)

    def task(self) -> Any:
        """The study's task (its data): from the study definition when known, else from the study file its
        record names (:func:`motune.studyfile.task_of`)."""
        return task_of(self)

    def forecast_calibration(self) -> Any:
        """How well the pruning policy's stored forecasts covered the completed trials' final values
        (:func:`motune.pruning.forecast.calibration`: per metric the coverage of the stored intervals, how
        many were checked, the widening they call for, and how many completed trials had one)."""
        return calibration_of([trial_checks(list(r.forecasts.values()), r.metrics) for r in self.records()
                               if r.state == "COMPLETE" and r.forecasts])

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
        frame = _typed(pd.DataFrame(rows, columns=self._columns(rows, all_metrics=False)), rows)
        first = self.objectives[0]
        if len(frame):
            frame = frame.sort_values(first.metric, ascending=first.direction == "minimize", kind="stable")
        return frame.reset_index(drop=True)

    def trials(self) -> pd.DataFrame:
        """Every trial: state, feasibility, front membership, all metrics, params, duration, error."""
        rows = [self._row(r, all_metrics=True) for r in self._records]
        return _typed(pd.DataFrame(rows, columns=self._columns(rows, all_metrics=True)), rows)

    def interval_note(self) -> str:
        """What the confirmation's intervals are (their confidence as stored)."""
        levels = sorted({r.confirmation.get("confidence", 0.95) for r in self._records if r.confirmation})
        shown = " / ".join(f"{100 * c:g} %" for c in levels) or "95 %"
        return (f"validation -> test [{shown} bootstrap interval; latency: order-statistic interval of the quiet "
                "re-timing, its coverage stated]")

    def confirmation_table(self) -> pd.DataFrame:
        """One row per confirmed trial: each objective, constraint and extra metric as
        ``validation -> test [low, high]``, the constraints it fails on test, and whether its quiet latency
        was flagged (noisy, or other trials ran meanwhile)."""
        rows = []
        for r in self._records:
            c = r.confirmation
            if not c:
                continue
            row: dict[str, Any] = {"trial": r.number}
            for n in self.metric_columns():
                test = c["values"].get(n)
                if test is not None:
                    validation = r.metrics.get(n)
                    row[n] = f"{'n/a' if validation is None else f'{validation:.4g}'} -> {interval_text(test)}"
            row["fails on test"] = ", ".join(c["failed_constraints"]) or "no"
            row["latency flagged"] = "yes" if c.get("latency_flagged") else ""
            rows.append(row)
        return pd.DataFrame(rows)

    def infeasible_table(self) -> pd.DataFrame:
        """Each constraint each infeasible completed trial broke, and by how much (in the metric's units)."""
        by_key = {c.key: c for c in self.constraints}
        rows = []
        for r in self._records:
            if r.feasible is not False:
                continue
            for key in by_key:
                violation = r.violations.get(key)
                if violation is None or violation > 0:
                    c = by_key[key]
                    rows.append({"trial": r.number, "constraint": key, "value": r.metrics.get(c.metric),
                                 "off by": violation})
        return pd.DataFrame(rows, columns=["trial", "constraint", "value", "off by"])

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


@dataclass
class DecisionRecord:
    """A decision: the chosen trial, the rule that chose it and why, the alternatives, who decided, when,
    and what it rests on (values with intervals, spec, data, provenance, the model's artifact and hash).
    Stored with the study (``motune:decision:<number>``); :meth:`load_model` loads the chosen model."""

    number: int  # 1, 2, ... within the study, in time order; the highest is current
    study: str
    trial: int
    params: dict[str, Any]
    rule: str
    rule_params: dict[str, Any]
    reason: str  # the rule's sentence
    values_used: str  # "test" (confirmed) or "validation"
    validation: dict[str, float | None]  # every metric of the chosen trial on the validation split
    test: dict[str, Any] | None  # confirmed: metric -> {"value", "low", "high"}
    alternatives: list[dict[str, Any]]  # the other candidates: trial, values, how they compare, why excluded
    rationale: str
    decided_by: str
    decided_at: str  # ISO 8601, UTC
    spec_fingerprint: str  # of the study's objectives, constraints, data, split and metric options
    data_fingerprint: str | None
    provenance: dict[str, Any]
    artifact: dict[str, Any] | None  # the chosen model: artifact id, sha256, kind, size
    id: str | None = None  # its storage key's unique part (time and a random id)
    spec_version: int | None = None  # the study version it was made under (None: recorded before versions)
    deciding: list[str] | None = None  # the metrics the rule decided on
    indistinguishable: list[int] | None = None  # candidates whose intervals overlap the chosen one's on them all
    not_compared: list[str] | None = None  # deciding metrics without intervals to compare by
    flagged: dict[str, dict[str, str]] | None = None  # trial -> deciding metric -> why it was flagged
    accepted_noisy: bool | None = None  # flagged values decided, and the decider accepted them
    latency: dict[str, dict[str, Any]] | None = None  # each latency value used: interval, flag, load, speed
    current: bool = field(default=False, compare=False)  # read back: whether it is the study's current decision
    made_current: dict[str, Any] | None = field(default=None, compare=False)  # who stated it current, why, when
    _result: Any = field(default=None, repr=False, compare=False)

    READ_BACK = ("current", "made_current")  # computed when read, not stored with the decision

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def to_json(self, **kwargs: Any) -> str:
        import json

        return json.dumps(_schema.jsonable(self.to_dict()), **{"indent": 2, **kwargs})

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, result: Any = None) -> DecisionRecord:
        names = {f for f in cls.__dataclass_fields__ if not f.startswith("_") and f not in cls.READ_BACK}
        return cls(**{k: data.get(k) for k in names}, _result=result)

    def load_model(self, *, device: str | None = None) -> Any:
        """The chosen trial's model (hash-checked)."""
        if self._result is None:
            raise ArtifactError("this decision record is not attached to a study; use result.load_model(trial)")
        return self._result.load_model(self.trial, device=device)


def _typed(frame: pd.DataFrame, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Integer columns stay integers where some rows lack them (pandas would make them floats: a CSV would
    say ``max_iter 194.0``): nullable ``Int64``."""
    for column in frame.columns:
        values = [row.get(column) for row in rows if row.get(column) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values) \
                and frame[column].dtype.kind == "f":
            frame[column] = frame[column].astype("Int64")
    return frame


def interval_text(entry: dict[str, Any] | None) -> str:
    """A confirmed value as ``value [low, high]`` (with ``coverage`` when the interval has its own), or ``n/a``."""
    if entry is None:
        return "n/a"
    text = f"{entry['value']:.4g}"
    if entry.get("low") is not None and entry.get("high") is not None:
        coverage = f", {100 * entry['coverage']:.0f} %" if entry.get("coverage") is not None else ""
        text += f" [{entry['low']:.4g}, {entry['high']:.4g}{coverage}]"
    return text


def _with_front(record: TrialRecord) -> TrialRecord:
    from dataclasses import replace

    return replace(record, on_front=True)
