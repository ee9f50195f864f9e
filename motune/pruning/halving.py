"""Multi-objective asynchronous successive halving (after MO-ASHA, Schmucker et al. 2021).

Rungs sit at steps ``min_resource * eta**k``. A trial reporting at a rung
continues only if it ranks in the top ``1/eta`` (at least one) of all trials
that reached that rung, itself included: constrained non-dominated sorting
(feasible before infeasible, smaller total violation before larger;
:func:`motune._pareto.rank_order`) with crowding distance breaking ties inside a front. No trial waits
for others: with fewer than ``min_peers`` trials at the rung it continues.
"""

from __future__ import annotations

import numpy as np

from motune import _pareto
from motune.errors import SpecError
from motune.pruning.base import Decision, PruningPolicy, ReportContext


class SuccessiveHalving(PruningPolicy):
    name = "successive_halving"
    ranks_on_objectives = True

    def __init__(self, *, min_resource: int = 1, eta: int = 3, min_peers: int | None = None) -> None:
        if min_resource < 1 or eta < 2:
            raise SpecError(f"need min_resource >= 1 and eta >= 2, got {min_resource}, {eta}")
        self.min_resource = min_resource
        self.eta = eta
        self.min_peers = eta if min_peers is None else min_peers

    def rung(self, step: int) -> int | None:
        """The rung index of ``step``, or None when ``step`` is not a rung."""
        if step < self.min_resource or step % self.min_resource:
            return None
        ratio, k = step // self.min_resource, 0
        while ratio % self.eta == 0:
            ratio //= self.eta
            k += 1
        return k if ratio == 1 else None

    def decide(self, ctx: ReportContext) -> Decision | None:
        k = self.rung(ctx.step)
        if k is None:
            return None
        names = [o.metric for o in ctx.objectives]
        entries = [ctx.metrics] + [p.metrics for p in ctx.peers if all(n in p.metrics for n in names)]
        if not all(n in ctx.metrics for n in names) or len(entries) < self.min_peers:
            return None
        order = rank_order(entries, ctx.objectives, [c for c in ctx.constraints if c.metric not in ctx.static_metrics])
        keep = max(1, len(entries) // self.eta)
        place = order.index(0) + 1
        if place <= keep:
            return None
        return Decision(self.name, f"rung {k} (step {ctx.step}): placed {place} of {len(entries)} by constrained "
                                   f"non-dominated sorting; the top {keep} continue")


def rank_order(entries, objectives, constraints) -> list[int]:
    """Indices of ``entries`` (metric dicts) best first: constrained non-domination rank, then
    crowding distance (larger first). A constraint whose metric an entry lacks is not counted."""
    losses = _pareto.to_losses([[e[o.metric] for o in objectives] for e in entries], [o.direction for o in objectives])
    penalty = np.array([sum(max(0.0, c.violation(e[c.metric])) for c in constraints if c.metric in e)
                        for e in entries], dtype=float)
    return _pareto.rank_order(losses, penalty)

