"""Multi-objective asynchronous successive halving (after MO-ASHA, Schmucker et al. 2021), with the
promotion at each rung calibrated on the study's completed trials.

Rungs sit at steps ``min_resource * eta**k`` below the study's last step (a
trial that reaches the last step completes: pruning it there would throw
its whole training away). Trials are ordered at a rung by constrained
non-dominated sorting (feasible before infeasible, smaller total violation
before larger; :func:`motune._pareto.rank_order`) with crowding distance
breaking ties inside a front. No trial waits for others: with fewer than
``min_peers`` trials at the rung it continues.

Which trials a rung stops is learned, not fixed. Once at least
``min_calibration`` completed trials reported at the rung, motune looks at
where the completed trials that ended on the front (the feasible
non-dominated ones among the completed) stood at that rung, among the
completed trials' reports there: a trial is stopped only if it stands
further down than every one of them did, by more than ``margin`` (a share
of the completed trials), and outside the top ``1/eta`` of all trials at
the rung. Where early order says little about the final one (on Adult,
epochs 1-3 agree with the final order at a Spearman correlation of about
0.1), front trials stood low at the rung and the rung stops almost nothing;
where it predicts, the rung stops most trials. Until then, ``uncalibrated``
decides: ``"continue"`` (default) or ``"prune"`` (classic successive
halving: outside the top ``1/eta``, which on Adult stopped 6 of 10 trials
that would have ended on the front). ``calibrate=False`` is classic MO-ASHA.
"""

from __future__ import annotations

import math

import numpy as np

from motune import _pareto
from motune.errors import SpecError
from motune.pruning.base import Decision, PruningPolicy, ReportContext

UNCALIBRATED = ("continue", "prune")


class SuccessiveHalving(PruningPolicy):
    name = "successive_halving"
    ranks_on_objectives = True

    def __init__(self, *, min_resource: int = 1, eta: int = 3, min_peers: int | None = None, calibrate: bool = True,
                 min_calibration: int = 5, margin: float = 0.1, uncalibrated: str = "continue",
                 constrained: bool = True, front_depth: int = 1, min_agreement: float | None = None) -> None:
        if min_resource < 1 or eta < 2:
            raise SpecError(f"need min_resource >= 1 and eta >= 2, got {min_resource}, {eta}")
        if min_calibration < 3:
            raise SpecError(f"min_calibration must be at least 3 completed trials, got {min_calibration}")
        if not 0 <= margin < 1:
            raise SpecError(f"margin must be a share of the completed trials in [0, 1), got {margin!r}")
        if isinstance(front_depth, bool) or not isinstance(front_depth, int) or front_depth < 1:
            raise SpecError(f"front_depth must be an int >= 1 (the best fronts a trial is compared with), got "
                            f"{front_depth!r}")
        if min_agreement is not None and not -1 <= min_agreement <= 1:
            raise SpecError(f"min_agreement is a Spearman correlation in [-1, 1] (or None), got {min_agreement!r}")
        if uncalibrated not in UNCALIBRATED:
            raise SpecError(f"uncalibrated must be one of {list(UNCALIBRATED)}, got {uncalibrated!r}")
        self.min_resource = min_resource
        self.eta = eta
        self.min_peers = eta if min_peers is None else min_peers
        self.calibrate = calibrate
        self.min_calibration = min_calibration
        self.margin = margin
        self.uncalibrated = uncalibrated
        self.constrained = constrained
        self.front_depth = front_depth
        self.min_agreement = min_agreement

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
        if k is None or (ctx.last_step is not None and ctx.step >= ctx.last_step):
            return None
        names = [o.metric for o in ctx.objectives]
        ranked = [p for p in ctx.peers if all(n in p.metrics for n in names)]
        if not all(n in ctx.metrics for n in names) or len(ranked) + 1 < self.min_peers:
            return None
        constraints = [c for c in ctx.constraints if c.metric not in ctx.static_metrics] if self.constrained else []
        entries = [ctx.metrics] + [p.metrics for p in ranked]
        keep = max(1, len(entries) // self.eta)
        place = rank_order(entries, ctx.objectives, constraints).index(0) + 1
        if place <= keep:
            return None
        where = f"rung {k} (step {ctx.step}): placed {place} of {len(entries)} by constrained non-dominated sorting"
        if not self.calibrate:
            return Decision(self.name, f"{where}; the top {keep} continue")
        done = [p for p in ranked if p.final is not None and all(n in p.final for n in names)]
        if len(done) < self.min_calibration:
            if self.uncalibrated == "continue":
                return None
            return Decision(self.name, f"{where}; the top {keep} continue (not calibrated yet: {len(done)} of "
                                       f"{self.min_calibration} completed trials reported here)")
        if self.min_agreement is not None:
            agreement = rung_agreement(done, ctx.objectives, constraints, ctx.constraints)
            if agreement is None or agreement < self.min_agreement:
                return None
        limit = front_place_limit(done, ctx.objectives, constraints, ctx.constraints, self.front_depth)
        mine = rank_order([ctx.metrics] + [p.metrics for p in done], ctx.objectives, constraints).index(0) + 1
        allowed = limit + math.ceil(self.margin * len(done))
        if mine <= allowed:
            return None
        return Decision(self.name, f"{where}; among the {len(done)} completed trials' reports here it places {mine}, "
                                   f"below every completed trial that reached the front (the lowest placed {limit}) "
                                   f"and the margin of {allowed - limit}")


def front_place_limit(done, objectives, ranking_constraints, constraints, depth: int = 1) -> int:
    """The lowest place (1 = best) at the rung, among the completed trials ``done``'s reports there, of a
    completed trial that ended on their front (feasible and non-dominated by its final values; with
    ``depth`` 2, the first two fronts)."""
    places = _positions(rank_order([p.metrics for p in done], objectives, ranking_constraints))
    finals = [p.final for p in done]
    losses = _pareto.to_losses([[f[o.metric] for o in objectives] for f in finals], [o.direction for o in objectives])
    feasible = np.array([all(c.kept(f[c.metric]) for c in constraints if c.metric in f) for f in finals])
    if not feasible.any():
        return len(done)  # nothing completed is feasible yet: the rung cannot tell what leads to the front
    ranks = np.full(len(done), np.iinfo(np.int64).max)
    ranks[feasible] = _pareto.non_domination_rank(losses[feasible])
    return max(places[i] for i in np.flatnonzero(ranks < depth)) + 1


def rung_agreement(done, objectives, ranking_constraints, constraints=None) -> float | None:
    """Spearman correlation between the completed trials' order at the rung (as the rung ranks them, by
    ``ranking_constraints``) and their final constrained order (by ``constraints``, default the same)."""
    early = _positions(rank_order([p.metrics for p in done], objectives, ranking_constraints))
    late = _positions(rank_order([p.final for p in done], objectives,
                                 ranking_constraints if constraints is None else constraints))
    rho = float(np.corrcoef(early, late)[0, 1]) if len(done) > 2 else float("nan")
    return None if np.isnan(rho) else rho


def _positions(order: list[int]) -> list[int]:
    places = [0] * len(order)
    for place, index in enumerate(order):
        places[index] = place
    return places


def rank_order(entries, objectives, constraints) -> list[int]:
    """Indices of ``entries`` (metric dicts) best first: constrained non-domination rank, then
    crowding distance (larger first). A constraint whose metric an entry lacks is not counted."""
    losses = _pareto.to_losses([[e[o.metric] for o in objectives] for e in entries], [o.direction for o in objectives])
    penalty = np.array([sum(max(0.0, c.violation(e[c.metric])) for c in constraints if c.metric in e)
                        for e in entries], dtype=float)
    return _pareto.rank_order(losses, penalty)
