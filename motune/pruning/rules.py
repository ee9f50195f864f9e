"""Constraint-aware pruning: stop trials that will break a constraint.

- Static constraints (on metrics measurable before training, such as
  latency) are checked at step 0: a violating trial is pruned before it trains.
- Learning-curve constraints (a fairness gap, an accuracy floor) are checked
  from ``warmup_steps`` on. Where the study already holds at least
  ``min_calibration`` completed trials that reported at this step, the rule is
  calibrated on them: among those that were at least this far off at this
  step, if at most ``max_feasible_rate`` ended feasible on that constraint
  (counted with one feasible and one infeasible trial added, so that a
  handful of trials cannot prune alone), the trial is pruned; if more than
  that share of them did, it is not (even past the margin); with too little
  evidence either way the margin rule below applies. Without enough history
  only a violation larger than ``margin`` prunes (and, when ``patience`` is
  set, one that persists for that many consecutive reports; off by default:
  early learning curves are noisy, and a persistent small violation at epoch 3
  often ends feasible).
"""

from __future__ import annotations

from motune.errors import SpecError
from motune.pruning.base import Decision, PruningPolicy, ReportContext


class ConstraintAware(PruningPolicy):
    name = "constraint_aware"

    def __init__(
        self,
        *,
        warmup_steps: int = 2,
        margin: float = 0.2,
        patience: int | None = None,
        min_calibration: int = 8,
        max_feasible_rate: float = 0.05,
    ) -> None:
        if warmup_steps < 0 or (patience is not None and patience < 1) or margin < 0 or min_calibration < 1 \
                or not 0 <= max_feasible_rate < 1:
            raise SpecError(
                "need warmup_steps >= 0, patience >= 1 (or None), margin >= 0, min_calibration >= 1 and "
                f"0 <= max_feasible_rate < 1; got {warmup_steps}, {patience}, {margin}, {min_calibration}, "
                f"{max_feasible_rate}"
            )
        self.warmup_steps = warmup_steps
        self.margin = margin
        self.patience = patience
        self.min_calibration = min_calibration
        self.max_feasible_rate = max_feasible_rate

    def decide(self, ctx: ReportContext) -> Decision | None:
        if ctx.step == 0:
            for c in ctx.constraints:
                if c.metric in ctx.static_metrics and c.metric in ctx.metrics:
                    value = ctx.metrics[c.metric]
                    if c.broken(value):
                        return Decision(self.name, f"static constraint {c} broken before training: "
                                                   f"{c.metric} = {value:.4g}")
            return None
        if ctx.step < self.warmup_steps:
            return None
        for c in ctx.constraints:
            if c.metric in ctx.static_metrics or c.metric not in ctx.metrics:
                continue
            if c.kept(ctx.metrics[c.metric]):
                continue
            violation = c.violation(ctx.metrics[c.metric])
            calibrated = self._feasible_rate(c, violation, ctx)
            if calibrated is not None:
                rate, raw, n = calibrated
                if rate <= self.max_feasible_rate:
                    return Decision(self.name, f"{c} off by {violation:.4g} at step {ctx.step}; of {n} completed "
                                               f"trials at least this far off here, {rate:.0%} ended feasible "
                                               "(counting one more of each)")
                if raw > self.max_feasible_rate:
                    continue  # such trials did recover: not even a large violation prunes
            if violation > self.margin:
                return Decision(self.name, f"{c} off by {violation:.4g} > margin {self.margin:g} at step {ctx.step}")
            if self.patience is None:
                continue
            streak = 1
            for step, metrics in reversed(ctx.history):
                if step < self.warmup_steps or c.metric not in metrics or c.kept(metrics[c.metric]):
                    break
                streak += 1
            if streak >= self.patience:
                return Decision(self.name, f"{c} broken for {streak} consecutive reports (patience {self.patience})")
        return None

    def _feasible_rate(self, c, violation: float, ctx: ReportContext) -> tuple[float, float, int] | None:
        """Among completed trials as far off at this step, the share that ended feasible on ``c``: counted
        with one feasible and one infeasible trial added (Laplace's rule: three trials that all ended
        infeasible say 20 %, not 0 %, so a handful cannot prune alone; 18 are needed for 5 %), as
        counted, and how many trials."""
        completed = [p for p in ctx.peers if p.final is not None and c.metric in p.metrics and c.metric in p.final]
        if len(completed) < self.min_calibration:
            return None
        similar = [p for p in completed if c.violation(p.metrics[c.metric]) >= violation]
        if len(similar) < 3:  # further off than nearly all history: too little evidence either way
            return None
        ended_feasible = sum(1 for p in similar if c.kept(p.final[c.metric]))
        return (ended_feasible + 1) / (len(similar) + 2), ended_feasible / len(similar), len(similar)
