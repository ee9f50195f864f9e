"""Plain data for pruning decisions, and how policies combine.

A policy sees a :class:`ReportContext` (the current report, this trial's
earlier reports, the other trials' reports at the same step, and the study's
objectives and constraints) and returns a :class:`Decision` to prune, or
``None`` to go on (:meth:`PruningPolicy.decide`). A policy that forecasts
also returns what it forecast, which the runner stores with the report
whether or not it prunes (:meth:`PruningPolicy.assess`). It never talks to
Optuna: the runner gathers the numbers from storage and acts on the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple


class PeerReport(NamedTuple):
    """Another trial's report at the same step."""

    number: int
    state: str  # RUNNING, COMPLETE, PRUNED, FAIL
    metrics: Mapping[str, float]
    final: Mapping[str, float] | None  # the trial's final metrics when it completed
    reports: Mapping[int, Mapping[str, float]] | None = None  # a completed trial's reports by step
    forecasts: Mapping[int, Mapping[str, Any]] | None = None  # a completed trial's stored forecasts by step


class ReportContext(NamedTuple):
    step: int
    metrics: Mapping[str, float]
    history: Sequence[tuple[int, Mapping[str, float]]]  # this trial's earlier (step, metrics)
    peers: Sequence[PeerReport]
    objectives: Sequence[Any]  # motune.Objective
    constraints: Sequence[Any]  # motune.Constraint
    static_metrics: frozenset[str]  # measurable before training (e.g. latency)
    last_step: int | None = None  # the study's last step (a report there is never pruned); None: not known yet


class Decision(NamedTuple):
    """Prune, by which rule, why (``details``: what decided it, e.g. the forecast and its probability)."""

    rule: str
    reason: str
    details: Mapping[str, Any] | None = None


class Assessment(NamedTuple):
    """What a policy made of a report: its decision (``None``: go on) and the forecast it made (``None``: it
    does not forecast, or could not yet), stored with the report either way."""

    decision: Decision | None
    forecast: Mapping[str, Any] | None = None


class PruningPolicy:
    """Base class: ``decide(ctx) -> Decision | None``; ``a | b`` prunes when either does."""

    name = "policy"
    ranks_on_objectives = False  # needs every objective in a report to decide (successive halving)

    def decide(self, ctx: ReportContext) -> Decision | None:
        raise NotImplementedError

    def assess(self, ctx: ReportContext) -> Assessment:
        """The decision and the forecast behind it (a policy that does not forecast: its decision only)."""
        return Assessment(self.decide(ctx))

    def __or__(self, other: PruningPolicy) -> AnyOf:
        if not isinstance(other, PruningPolicy):
            return NotImplemented
        return AnyOf([*_flatten(self), *_flatten(other)])

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


class AnyOf(PruningPolicy):
    """Prunes when any of its policies does (the first one's reason is recorded)."""

    name = "any_of"

    def __init__(self, policies: Sequence[PruningPolicy]) -> None:
        self.policies = list(policies)
        self.ranks_on_objectives = any(p.ranks_on_objectives for p in self.policies)

    def decide(self, ctx: ReportContext) -> Decision | None:
        return self.assess(ctx).decision

    def assess(self, ctx: ReportContext) -> Assessment:
        """Every policy's assessment: the first forecast made, and the first decision to prune."""
        decision, forecast = None, None
        for policy in self.policies:
            assessment = policy.assess(ctx)
            forecast = forecast if forecast is not None else assessment.forecast
            if assessment.decision is not None:
                decision = assessment.decision
                break
        return Assessment(decision, forecast)

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, "policies": [p.describe() for p in self.policies]}


def _flatten(policy: PruningPolicy) -> list[PruningPolicy]:
    return list(policy.policies) if isinstance(policy, AnyOf) else [policy]
