"""Pruning with a stated risk: stop a trial when its forecast says it cannot matter.

At every report :class:`ForecastAware` forecasts the trial's final values
(:mod:`motune.pruning.forecast`: its curve so far, the completed trials'
curves) and stops it when, with probability at least ``1 - risk``,

- it will break a constraint at the last step, or
- it will end infeasible or dominated by the study's current feasible front
  (the completed trials' final values; a tie with a front member counts as
  dominated: it would add nothing to the front's hypervolume).

Two guards keep it honest. The forecast's optimistic end must agree: each
metric's ``risk`` quantile on its favourable side, read with the unknown
share (:meth:`~motune.pruning.forecast.Forecast.quantile`: with ``risk=0.05``
and many completed trials about the favourable end of the stored 90 %
interval; with the default 0.15 further in, and open with few trials), must
break the constraint a trial is stopped for, and a trial whose optimistic ends still
reach the front (not dominated, every constraint kept there) is never
stopped. And the forecasts widen when the study's completed trials show that
their intervals covered the final values less often than nominal
(:func:`~motune.pruning.forecast.calibration`).
A static constraint (latency, measured once) that is broken stops the trial
at once, at step 0 before any training when ``train`` reports step 0.

Every prune records the forecast (point and interval per metric), the
probability that decided it, the rule's risk and the calibration behind it;
every report stores its forecast (the runner does), so coverage can be
measured on the trials that completed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from motune import _pareto
from motune.errors import SpecError
from motune.pruning.base import Assessment, Decision, PruningPolicy, ReportContext
from motune.pruning.forecast import Calibration, Curve, Forecast, calibration_of, forecast, peer_state, trial_checks


class ForecastAware(PruningPolicy):
    """Stop a trial whose forecast final values, with probability ``1 - risk``, break a constraint or cannot
    reach the feasible front (see the module docstring).

    Parameters
    ----------
    risk: the largest probability, by the forecast, that a stopped trial would have mattered (ended feasible
        and on the front, or kept a constraint it is stopped for), for a stop after the first step; a later
        stop saves less and may take proportionally less risk (``risk * (last - step) / (last - 1)``).
    warmup_steps: the first step at which a trial is forecast (a curve's first reports say little about its end,
        and its report-to-report noise needs three of them).
    window, neighbours, min_bandwidth, prior_weight, min_peers: the forecast's settings
        (:func:`motune.pruning.forecast.forecast`).
    calibrate: widen the forecasts by what the completed trials' coverage says (``False``: never).
    min_checks: stored forecast intervals of completed trials needed per metric before they widen it.
    """

    name = "forecast"
    ranks_on_objectives = True

    def __init__(self, *, risk: float = 0.15, warmup_steps: int = 3, window: int = 3, neighbours: int = 5,
                 min_bandwidth: float = 0.5, prior_weight: float = 1.0, min_peers: int = 3, calibrate: bool = True,
                 min_checks: int = 20) -> None:
        if isinstance(risk, bool) or not isinstance(risk, (int, float)) or not 0 < risk < 0.5:
            raise SpecError(f"risk must be a probability in (0, 0.5), got {risk!r}")
        for what, value, least in (("warmup_steps", warmup_steps, 1), ("window", window, 1),
                                   ("neighbours", neighbours, 1), ("min_peers", min_peers, 1),
                                   ("min_checks", min_checks, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise SpecError(f"{what} must be an int >= {least}, got {value!r}")
        for what, value in (("min_bandwidth", min_bandwidth), ("prior_weight", prior_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise SpecError(f"{what} must be a positive number, got {value!r}")
        self.risk = float(risk)
        self.warmup_steps = warmup_steps
        self.window = window
        self.neighbours = neighbours
        self.min_bandwidth = float(min_bandwidth)
        self.prior_weight = float(prior_weight)
        self.min_peers = min_peers
        self.calibrate = calibrate
        self.min_checks = min_checks
        self._checks: dict[Any, tuple[Any, list]] = {}  # a completed peer's checks of its forecasts, made once
        self._states: dict[Any, tuple[Any, Any]] = {}  # (peer's reports, step, metrics) -> (reports, state)

    def decide(self, ctx: ReportContext) -> Decision | None:
        return self.assess(ctx).decision

    def assess(self, ctx: ReportContext) -> Assessment:
        broken = _static_broken(ctx)
        if broken is not None:
            return Assessment(broken)
        if ctx.step < self.warmup_steps or (ctx.last_step is not None and ctx.step >= ctx.last_step):
            return Assessment(None)
        objectives = [o for o in ctx.objectives]
        learning = [c for c in ctx.constraints if c.metric not in ctx.static_metrics]
        names = list(dict.fromkeys([o.metric for o in objectives] + [c.metric for c in learning]))
        names = [n for n in names if n in ctx.metrics]
        if not names:
            return Assessment(None)
        done = [p for p in ctx.peers if p.final is not None and p.reports is not None]
        calibrated = self.calibration(done) if self.calibrate else None
        reports = {s: m for s, m in ctx.history if s <= ctx.step}
        reports[ctx.step] = ctx.metrics
        step, metrics = ctx.step, tuple(names)

        def states(peer: Curve) -> Any:  # a completed trial's curve never changes: its state is computed once
            key = (id(peer.reports), step, metrics)
            cached = self._states.get(key)
            if cached is None or cached[0] is not peer.reports:
                cached = self._states[key] = (peer.reports, peer_state(peer, step, metrics, self.window))
            return cached[1]

        made = forecast(step, reports, [Curve(p.reports, p.final) for p in done], metrics,
                        window=self.window, neighbours=self.neighbours, min_bandwidth=self.min_bandwidth,
                        prior_weight=self.prior_weight, min_peers=self.min_peers,
                        scale=calibrated.scale if calibrated is not None else None,
                        constant=[n for n in names if n in ctx.static_metrics], states=states)
        if made is None:
            return Assessment(None)
        record = made.record()
        return Assessment(self._judge(ctx, made, record, done, calibrated), record)

    def calibration(self, done: Sequence[Any]) -> Calibration:
        """Coverage and widening from the completed peers' stored forecasts (each peer's checks are read once)."""
        per_trial = []
        for p in done:
            if not p.forecasts:
                continue
            key = (id(p.forecasts), p.number)
            cached = self._checks.get(key)
            if cached is None or cached[0] is not p.forecasts:
                cached = self._checks[key] = (p.forecasts, trial_checks(list(p.forecasts.values()), p.final))
            per_trial.append(cached[1])
        return calibration_of(per_trial, min_checks=self.min_checks)

    def _judge(self, ctx: ReportContext, made: Forecast, record: Mapping[str, Any], done: Sequence[Any],
               calibrated: Calibration | None) -> Decision | None:
        column = {m: j for j, m in enumerate(made.metrics)}
        risk = self.risk_at(ctx.step, ctx.last_step)
        # each metric's optimistic ends: its risk quantile from below and from above
        interval = {m: (made.quantile(m, risk), made.quantile(m, 1 - risk)) for m in made.metrics}
        needed = 1 - risk
        samples = made.samples
        violated = np.zeros(len(samples), dtype=bool)
        kept_at_best = True  # every constraint kept at its interval's favourable end
        for c in ctx.constraints:
            if c.metric in column:
                breaks = c.broken(samples[:, column[c.metric]])
                violated |= breaks
                best = c.best_end(*interval[c.metric])
                best_breaks = bool(c.broken(best))
                kept_at_best = kept_at_best and not best_breaks
                probability = made.probability(breaks)
                if probability >= needed and best_breaks:
                    return self._decision(ctx, "constraint", probability, record, calibrated, c,
                                          f"{c} broken at the last step with probability {probability:.3f}")
            elif c.metric in ctx.metrics and c.broken(ctx.metrics[c.metric]):
                violated[:] = True  # a static constraint already broken (decided above, at once)
                kept_at_best = False
        if not all(o.metric in column for o in ctx.objectives):
            return None
        front = _feasible_front(done, ctx.objectives, ctx.constraints)
        directions = [o.direction for o in ctx.objectives]
        losses = _pareto.to_losses(samples[:, [column[o.metric] for o in ctx.objectives]], directions)
        dominated = _weakly_dominated(losses, front)
        corner = [interval[o.metric][1 if o.direction == "maximize" else 0] for o in ctx.objectives]
        if kept_at_best and (any(v is None for v in corner) or not _weakly_dominated(
                _pareto.to_losses([corner], directions), front)[0]):
            return None  # the interval still reaches the front
        probability = made.probability(dominated | violated)
        if probability < needed:
            return None
        what = "infeasible or dominated by the feasible front" if violated.any() else "dominated by the feasible front"
        return self._decision(ctx, "front", probability, record, calibrated, None,
                              f"{what} of {len(front)} completed trial(s) at the last step with probability "
                              f"{probability:.3f}")

    def risk_at(self, step: int, last_step: int | None) -> float:
        """The risk a stop at ``step`` may take: ``risk`` at the first step, shrinking with the compute the stop
        saves (``risk`` when the last step is not known yet)."""
        if last_step is None or last_step <= 1:
            return self.risk
        return self.risk * (max(0, last_step - step) / (last_step - 1))

    def _decision(self, ctx: ReportContext, kind: str, probability: float, record: Mapping[str, Any],
                  calibrated: Calibration | None, constraint: Any, what: str) -> Decision:
        shown = [constraint.metric] if constraint is not None else [o.metric for o in ctx.objectives]
        values = ", ".join(_describe(m, record["metrics"][m]) for m in shown if m in record["metrics"])
        risk = self.risk_at(ctx.step, ctx.last_step)
        reason = (f"forecast at step {ctx.step}: {what} >= 1 - risk {risk:.3g} ({values}; {record['peers']} "
                  "completed trials)")
        details = {"kind": kind, "probability": probability, "risk": risk, "rule_risk": self.risk,
                   "forecast": dict(record),
                   "constraint": None if constraint is None else constraint.key,
                   "calibration": None if calibrated is None else calibrated.record()}
        return Decision(self.name, reason, details)


def _describe(metric: str, f: Mapping[str, Any]) -> str:
    def show(v: Any) -> str:
        return "open" if v is None else f"{v:.3g}"

    return f"{metric} forecast {show(f['point'])} [{show(f['low'])}, {show(f['high'])}]"


def _static_broken(ctx: ReportContext) -> Decision | None:
    """A static constraint (measured once, e.g. latency) broken: no training changes it."""
    for c in ctx.constraints:
        if c.metric in ctx.static_metrics and c.metric in ctx.metrics:
            value = ctx.metrics[c.metric]
            if c.broken(value):
                when = "before training" if ctx.step == 0 else f"at step {ctx.step}"
                return Decision("forecast", f"static constraint {c} broken {when}: {c.metric} = {value:.4g}",
                                {"kind": "static", "probability": 1.0, "constraint": c.key})
    return None


def _feasible_front(done: Sequence[Any], objectives: Sequence[Any], constraints: Sequence[Any]) -> np.ndarray:
    """The completed trials' front (:func:`motune._pareto.front_of` of their final values), as losses."""
    values = [[p.final.get(o.metric) for o in objectives] for p in done]
    feasible = [all(_finite(p.final.get(c.metric)) and c.kept(p.final[c.metric]) for c in constraints) for p in done]
    rows = [v for v, keep in zip(values, _pareto.front_of(values, [o.direction for o in objectives], feasible)) if keep]
    if not rows:
        return np.zeros((0, len(objectives)))
    return _pareto.to_losses(rows, [o.direction for o in objectives])


def _weakly_dominated(losses: np.ndarray, front: np.ndarray) -> np.ndarray:
    """For each row, whether some front row is no worse in every column."""
    if len(front) == 0:
        return np.zeros(len(losses), dtype=bool)
    return np.any(np.all(front[None, :, :] <= losses[:, None, :], axis=2), axis=1)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
