"""What ``train(params, task, ctx)`` gets besides params and task, and intermediate reports.

``ctx.report(step, model)`` measures the study's objective and constraint
metrics on the model (at step 0 only the static ones, such as latency,
before any training), stores the report in the study's storage (so that
workers on other machines decide on the same numbers), and the first
objective's value as Optuna's intermediate value at that step (the learning
curve optuna-dashboard and ``plot_intermediate_values`` draw), asks the
study's pruning policy (not at the study's last step), tells the callbacks,
and raises ``optuna.TrialPruned`` when the policy prunes.

Static metrics do not change with training. They are measured once: at
step 0, or, when ``train`` does not report step 0, at its first report with
a model; every later report carries those values, so rules that rank on
every objective (successive halving) can use them. A report that still
lacks an objective (metrics passed by hand, no model) cannot be ranked by
successive halving: motune warns once per trial and records the warning on
the trial (``pruning_warning``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from motune import _schema
from motune.errors import MetricError, SpecError
from motune.metrics.registry import measure, non_finite
from motune.pruning import PeerReport, ReportContext
from motune.run import _optuna_compat as compat
from motune.run.callbacks import Hooks, ReportRecord


@dataclass
class TrialContext:
    """What ``train(params, task, ctx)`` gets besides params and task.

    ``seed`` (the study's seed plus the trial number; Python's, numpy's and torch's global
    random generators are seeded with it when the trial starts), ``trial_number``, ``params``,
    ``study_name`` and ``device`` (``"cuda"`` when this worker was given a GPU, else ``"cpu"``;
    put the model there); :meth:`report` for intermediate results; :meth:`set_attr` to record a
    value on the trial.
    """

    trial_number: int
    seed: int
    params: dict[str, Any]
    study_name: str
    device: str  # where train should put the model: "cuda" when this worker has a GPU, else "cpu"
    _trial: optuna.Trial = field(repr=False)
    _study: Any = field(repr=False, default=None)  # the motune.Study
    _hooks: Hooks = field(repr=False, default_factory=lambda: Hooks([]))
    _control: Any = field(repr=False, default=None)  # the run's Interrupts
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    pruned: str | None = None  # why a report pruned this trial (the trial ends pruned even if that was caught)
    _static: dict[str, float] | None = field(repr=False, default=None)  # static metrics, once measured
    _warned: bool = field(repr=False, default=False)

    def set_attr(self, key: str, value: Any) -> None:
        """Record a JSON-able value on the trial (stored as user attribute ``user:<key>``)."""
        self._trial.set_user_attr(f"{_schema.USER_PREFIX}{key}", _schema.jsonable(value))

    def report(self, step: int, model: Any = None, *, metrics: dict[str, float] | None = None) -> dict[str, float]:
        """Report progress at ``step`` (an epoch, a boosting stage, a fidelity step; 0 = before training).

        With ``model``, motune measures the study's metrics on it: at step 0 the static ones
        (latency ...), later the objective and constraint metrics that need training, plus the
        static ones at the first report if step 0 was not reported. ``metrics`` adds (or
        overrides) values you computed. The report is stored in the study's storage; the study's
        pruning policy may then end the trial by raising ``optuna.TrialPruned`` (let it
        propagate; if it is caught, as a Trainer callback must, the trial still ends pruned when
        ``train`` returns). Returns the reported values.
        """
        if self._control is not None:
            self._control.check()
        step = _check_step(self, step)
        study = self._study
        values = self._measure(step, model)
        for name, value in (metrics or {}).items():
            values[str(name)] = float(value)
        if not values:
            raise SpecError("ctx.report needs a model to measure or metrics={...} (at step 0 with a model, "
                            "only static metrics such as latency are measured, and this study has none)")
        static = set(study.static_metrics)
        if self._static is None:
            self._static = {n: v for n, v in values.items() if n in static} or None
        else:
            values = {**self._static, **values}
        trial = self._trial
        notes = self._warn_if_unrankable(step, values)
        decision = store_and_decide(trial, step, values, self.history, policy=study.pruning_policy,
                                    objectives=study.objectives, constraints=study.constraints,
                                    static_metrics=frozenset(study.static_metrics), max_step=study.max_step)
        self.history.append((step, values))
        pruned = None if decision is None else {"rule": decision.rule, "reason": decision.reason}
        self._hooks("on_report", ReportRecord(trial.number, step, dict(values), pruned, notes))
        if decision is not None:
            self.pruned = f"{decision.rule}: {decision.reason}"
            raise optuna.TrialPruned(self.pruned)
        return values

    def _measure(self, step: int, model: Any) -> dict[str, float]:
        """The study's metrics this report measures on ``model`` (see the module docstring)."""
        if model is None:
            return {}
        study = self._study
        static = set(study.static_metrics)
        needed = list(dict.fromkeys([o.metric for o in study.objectives] + [c.metric for c in study.constraints]))
        wanted = [n for n in needed if n in static] if step == 0 else [n for n in needed if n not in static]
        if step > 0 and self._static is None:  # step 0 was not reported: measure the static ones now
            wanted += [n for n in needed if n in static]
        if not wanted:
            return {}
        measured = measure(model, study.task, wanted, options=study.metric_options, split=study.split).values
        return {n: measured[n] for n in wanted}

    def _warn_if_unrankable(self, step: int, values: dict[str, float]) -> list[str]:
        study = self._study
        missing = [o.metric for o in study.objectives if o.metric not in values]
        policy = study.pruning_policy
        if step == 0 or not missing or policy is None or not policy.ranks_on_objectives or self._warned:
            return []
        self._warned = True
        text = (f"trial {self._trial.number}'s report at step {step} lacks objective(s) {missing}: successive "
                "halving cannot rank it, so it never prunes this trial; pass the model to ctx.report (motune "
                "measures them) or add them to metrics=")
        warnings.warn(text, stacklevel=3)
        self._trial.set_user_attr(_schema.PRUNING_WARNING_ATTR, text)
        return [text]


def store_and_decide(trial: optuna.Trial, step: int, values: dict[str, float],
                     history: list[tuple[int, dict[str, float]]], *, policy: Any, objectives: Any, constraints: Any,
                     static_metrics: frozenset[str] = frozenset(), max_step: int | None = None) -> Any:
    """Ask ``policy`` about a trial's report at ``step`` (not at the last step: ``max_step``, else the last step
    a completed trial reported), then store the report, the policy's forecast and, when it prunes, why, in one
    write (and the first objective as the trial's Optuna intermediate value). Returns the pruning
    :class:`~motune.pruning.Decision` or ``None``. Non-finite values are refused
    (:class:`~motune.errors.MetricError`) before anything is stored."""
    bad = non_finite(values, values)
    if bad:
        raise MetricError("reported values are not finite numbers: " + ", ".join(f"{n}={values[n]}" for n in bad))
    decision, forecast = None, None
    if policy is not None:
        peers, last_step = _peers(trial, step)
        last_step = max_step if max_step is not None else last_step
        if last_step is None or step < last_step:  # a trial that reached the last step completes
            decision, forecast = policy.assess(ReportContext(step, values, list(history), peers, objectives,
                                                             constraints, static_metrics, last_step))
    system = {_schema.report_key(trial.number, step): values} | _schema.forecast_attrs(trial.number, step, forecast)
    user = {} if decision is None else _schema.pruned_attrs(rule=decision.rule, reason=decision.reason, step=step,
                                                            reports=len(history) + 1, details=decision.details)
    compat.write_trial_attrs(trial, user, system)
    curve = _schema.intermediate_value(values, [o.metric for o in objectives])
    if curve is not None:  # optuna-dashboard's learning curve; samplers never see it (run.sampling)
        compat.set_intermediate_value(trial, step, curve)
    return decision


def record_values(trial: optuna.Trial, values: dict[str, float], constraints: Any) -> None:
    """Store an evaluation's values on a running trial the way motune's own trials store them: each
    constraint's value (``constraints:<key>``, what samplers and the front read) and the metrics record (one
    write). The public call for integrations that run trials themselves (a Trainer's search): the last
    call's values stand."""
    keys = [c.key for c in constraints]
    system = _schema.constraint_attrs(keys, [c.violation(values[c.metric]) for c in constraints], legacy=False)
    user = {k: v for k, v in _schema.outcome_attrs(values=values, details={}, timing={}, provenance={}).items()
            if k == _schema.METRICS_ATTR or k.startswith(_schema.FLAT_METRIC_PREFIX)}
    compat.write_trial_attrs(trial, user, system)


report_step = store_and_decide  # the public name integrations report an intermediate step with


def _check_step(ctx: TrialContext, step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise SpecError(f"step must be a non-negative integer, got {step!r}")
    step = int(step)
    if ctx.history and step <= ctx.history[-1][0]:
        raise SpecError(f"steps must increase within a trial: got {step} after {ctx.history[-1][0]}")
    if ctx.pruned is not None:
        raise SpecError(f"this trial was pruned ({ctx.pruned}); it cannot report again")
    return step


def _peers(trial: optuna.Trial, step: int) -> tuple[list[Any], int | None]:
    """Other trials' reports at ``step`` (a completed one's with its whole curve, its stored forecasts and its
    final metrics), and the last step a completed trial reported (``None``: no completed trial reported).
    ``get_trials(deepcopy=False)`` reads from the database only the unfinished trials (Optuna's storage cache
    keeps finished ones), and a completed trial's records are parsed once (:func:`_completed`)."""
    peers, last_step = [], None
    name = trial.study.study_name
    for t in trial.study.get_trials(deepcopy=False):
        if t.number == trial.number:
            continue
        if t.state == optuna.trial.TrialState.COMPLETE:
            reports, forecasts, final = _completed(name, t)
            if reports:
                last_step = max(reports) if last_step is None else max(last_step, max(reports))
            if step in reports:
                peers.append(PeerReport(t.number, t.state.name, reports[step], final, reports, forecasts))
            continue
        report = t.system_attrs.get(_schema.report_key(t.number, step))
        if report is not None:
            peers.append(PeerReport(t.number, t.state.name, report, None))
    return peers, last_step


_COMPLETED: dict[tuple[str, int, Any], tuple[dict, dict, dict]] = {}
_COMPLETED_MAX = 20_000


def _completed(study_name: str, t: Any) -> tuple[dict, dict, dict]:
    """A completed trial's reports, stored forecasts and final metrics, parsed once per process (a finished
    trial never changes; its start time tells a retry's number apart from a deleted study's)."""
    key = (study_name, t.number, t.datetime_start)
    found = _COMPLETED.get(key)
    if found is None:
        if len(_COMPLETED) >= _COMPLETED_MAX:
            _COMPLETED.clear()
        found = _COMPLETED[key] = (_schema.read_reports(t.system_attrs, t.number),
                                   _schema.read_forecasts(t.system_attrs, t.number), _schema.read_metrics(t.user_attrs))
    return found
