"""Plain data for pruning decisions, and how policies combine.

A policy sees a :class:`ReportContext` (the current report, this trial's
earlier reports, the other trials' reports at the same step, and the study's
objectives and constraints) and returns a :class:`Decision` to prune, or
``None`` to go on. It never talks to Optuna: the runner gathers the numbers
from storage and acts on the decision.
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
    """Prune, by which rule, why."""

    rule: str
    reason: str


class PruningPolicy:
    """Base class: ``decide(ctx) -> Decision | None``; ``a | b`` prunes when either does."""

    name = "policy"
    ranks_on_objectives = False  # needs every objective in a report to decide (successive halving)

    def decide(self, ctx: ReportContext) -> Decision | None:
        raise NotImplementedError

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
        for policy in self.policies:
            decision = policy.decide(ctx)
            if decision is not None:
                return decision
        return None

    def describe(self) -> dict[str, Any]:
        return {"rule": self.name, "policies": [p.describe() for p in self.policies]}


def _flatten(policy: PruningPolicy) -> list[PruningPolicy]:
    return list(policy.policies) if isinstance(policy, AnyOf) else [policy]
