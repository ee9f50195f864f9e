"""Selection rules: pure functions over candidates, each choosing one and saying why.

A rule sees :class:`Candidate` rows (a trial's number and the values the
choice is made on: confirmed test values when every candidate has them,
else validation values; with their intervals where they have them) and the
study's objectives and constraints, and returns a :class:`Chosen`: the index
of its choice, a sentence, and the metrics that decided it (which
:func:`motune.selection.select` compares by interval). Rules never talk to
storage or Optuna; :func:`motune.selection.select` builds the candidates from
a :class:`motune.Result` and wraps the answer in a :class:`~motune.selection.Choice`.

- :class:`Lexicographic`: the best on a primary objective; then, among the
  candidates within a tolerance of that best, the best on the next, and so on
  (the "primary and secondary layers" of responsible-AI practice).
- :class:`Knee`: on objectives normalised to [0, 1] over the candidates
  (0 = the best candidate, 1 = the worst), the candidate farthest from the
  line (two objectives) or hyperplane through the extreme candidates, on the
  side of the ideal point (Das, 1999; Branke et al., 2004). Where the
  extremes do not span a hyperplane (fewer distinct extremes than
  objectives), the candidate nearest the ideal point, and the sentence says so.
- :class:`Weighted`: the smallest weighted Chebyshev distance (or weighted
  sum, ``kind="linear"``) to the ideal point on the same normalised scale,
  with stated weights (every objective weighted, or a stated ``default``).
- :class:`BestWithin`: the best on one metric among the candidates that keep
  every constraint with a stated margin (``value <= bound - margin`` for a
  ``<=`` constraint).

Ties go to the lower trial number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from motune import _pareto
from motune.errors import SpecError

DIRECTIONS = ("maximize", "minimize")


class Candidate(NamedTuple):
    number: int
    values: Mapping[str, float]  # every objective and constraint metric, on the split the choice uses
    intervals: Mapping[str, tuple[float, float]] = {}  # metric -> (low, high), where the value has one
    flags: Mapping[str, str] = {}  # metric -> why its value is not to be trusted as it is (noisy latency)


class Chosen(NamedTuple):
    """A rule's answer: the candidate's index, the sentence, and the metrics that decided it."""

    index: int
    reason: str
    deciding: tuple[str, ...]


class Rule:
    """Base class: ``choose(candidates, objectives, constraints) -> Chosen`` (a rule of one's own may return
    ``(index, sentence)``: every objective then counts as deciding)."""

    name = "rule"

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def choose(self, candidates: Sequence[Candidate], objectives: Sequence[Any],
               constraints: Sequence[Any]) -> Chosen:
        raise NotImplementedError


def finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and np.isfinite(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _require(candidates: Sequence[Candidate], metrics: Sequence[str], rule: str) -> None:
    lacking = sorted({m for c in candidates for m in metrics if c.values.get(m) is None})
    if lacking:
        raise SpecError(f"{rule}: not every candidate has a value of {lacking}")


def _normalised(candidates: Sequence[Candidate], objectives: Sequence[Any]) -> np.ndarray:
    """Losses scaled per objective to [0, 1] over the candidates (0 = best); a constant objective is 0."""
    _require(candidates, [o.metric for o in objectives], "this rule")
    losses = _pareto.to_losses([[c.values[o.metric] for o in objectives] for c in candidates],
                               [o.direction for o in objectives])
    low, high = losses.min(axis=0), losses.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return (losses - low) / span


def _best(indices: Sequence[int], candidates: Sequence[Candidate], metric: str, direction: str) -> int:
    sign = _pareto.signs([direction])[0]
    return min(indices, key=lambda i: (sign * candidates[i].values[metric], candidates[i].number))


class Lexicographic(Rule):
    """``order``: objective metrics, most important first (default: the study's objective order);
    ``tolerances``: per metric, how far (in its own units) from the best a candidate may be and still
    count as tied on it (default 0)."""

    name = "lexicographic"

    def __init__(self, order: Sequence[str] | None = None, tolerances: Mapping[str, float] | None = None) -> None:
        self.order = None if order is None else list(order)
        self.tolerances = dict(tolerances or {})
        for metric, tol in self.tolerances.items():
            if not finite_number(tol) or not tol >= 0:
                raise SpecError(f"the tolerance for {metric!r} must be a finite number >= 0, got {tol!r}")
        if self.order is not None and len(set(self.order)) != len(self.order):
            raise SpecError(f"lexicographic: each objective once in the order, got {self.order}")

    def choose(self, candidates, objectives, constraints):
        by_metric = {o.metric: o for o in objectives}
        order = list(self.order or [o.metric for o in objectives])
        unknown = [m for m in [*order, *self.tolerances] if m not in by_metric]
        if unknown:
            raise SpecError(f"lexicographic: {unknown} are not objectives; objectives are {list(by_metric)}")
        order += [m for m in by_metric if m not in order]
        _require(candidates, order, "lexicographic")
        remaining = list(range(len(candidates)))
        parts, used = [], []
        for metric in order:
            used.append(metric)
            o = by_metric[metric]
            best = candidates[_best(remaining, candidates, metric, o.direction)].values[metric]
            tol = self.tolerances.get(metric, 0.0)
            slack = tol + 1e-12 * max(1.0, abs(best))  # "within 0.02" holds at 0.88 vs 0.90 despite float error
            kept = [i for i in remaining if abs(candidates[i].values[metric] - best) <= slack]
            near = f"within {_fmt(tol)} of " if tol else "at "
            parts.append(f"{len(kept)} of {len(remaining)} {near}the best {metric} ({_fmt(best)})")
            remaining = kept
            if len(remaining) == 1:
                break
        chosen = min(remaining, key=lambda i: candidates[i].number)
        return Chosen(chosen, "lexicographic: " + "; then ".join(parts), tuple(used))


class Knee(Rule):
    name = "knee"

    def choose(self, candidates, objectives, constraints):
        every = tuple(o.metric for o in objectives)
        if len(candidates) == 1:
            return Chosen(0, "knee: the only candidate", every)
        z = _normalised(candidates, objectives)
        m = z.shape[1]
        extremes = sorted({int(np.lexsort((z.sum(axis=1), z[:, j]))[0]) for j in range(m)})
        if m >= 2 and len(extremes) >= m:
            anchor = z[extremes]
            # the hyperplane n . x = 1 through the m extreme points (no exact solution: they do not span one)
            normal, *_ = np.linalg.lstsq(anchor, np.ones(len(anchor)), rcond=None)
            if np.linalg.norm(normal) > 0 and np.allclose(anchor @ normal, 1.0, atol=1e-9):
                distance = (1.0 - z @ normal) / np.linalg.norm(normal)  # > 0: on the ideal point's side
                chosen = min(range(len(candidates)), key=lambda i: (-distance[i], candidates[i].number))
                return Chosen(chosen, f"knee: farthest from the {'line' if m == 2 else 'hyperplane'} through the "
                                      f"{len(extremes)} extreme candidates (distance {_fmt(distance[chosen])} on "
                                      "objectives scaled to [0, 1])", every)
        distance = np.linalg.norm(z, axis=1)
        chosen = min(range(len(candidates)), key=lambda i: (distance[i], candidates[i].number))
        return Chosen(chosen, f"knee: the extremes do not span a {'line' if m == 2 else 'hyperplane'} "
                              f"({len(extremes)} distinct of {m}), so the candidate nearest the ideal point "
                              f"(distance {_fmt(distance[chosen])} on objectives scaled to [0, 1])", every)


class Weighted(Rule):
    """``weights``: per objective metric, finite and > 0; an objective not named takes ``default`` (``None``:
    every objective must be named); ``kind``: ``"chebyshev"`` (the largest weighted scaled loss) or
    ``"linear"`` (their sum)."""

    name = "weighted"

    def __init__(self, weights: Mapping[str, float], *, kind: str = "chebyshev", default: float | None = None) -> None:
        if kind not in ("chebyshev", "linear"):
            raise SpecError(f"kind must be 'chebyshev' or 'linear', got {kind!r}")
        self.weights = dict(weights)
        self.kind = kind
        self.default = default
        bad = {k: w for k, w in self.weights.items() if not finite_number(w) or not w > 0}
        if bad or not self.weights and default is None:
            raise SpecError(f"weights must be finite numbers > 0, one per objective; got {self.weights}")
        if default is not None and (not finite_number(default) or not default > 0):
            raise SpecError(f"the default weight must be a finite number > 0, got {default!r}")

    def choose(self, candidates, objectives, constraints):
        names = [o.metric for o in objectives]
        unknown = [m for m in self.weights if m not in names]
        if unknown:
            raise SpecError(f"weighted: {unknown} are not objectives; objectives are {names}")
        unweighted = [m for m in names if m not in self.weights]
        if unweighted and self.default is None:
            raise SpecError(f"weighted: no weight for {unweighted}; weigh every objective ({names}), or give a "
                            "default weight for the others")
        w = np.array([float(self.weights.get(m, self.default or 0.0)) for m in names])
        scaled = _normalised(candidates, objectives)
        z = scaled * w
        score = z.max(axis=1) if self.kind == "chebyshev" else z.sum(axis=1)
        # ties (a zero weight, Chebyshev's flat max) go to the smaller unweighted sum: never a dominated candidate
        chosen = min(range(len(candidates)), key=lambda i: (score[i], scaled[i].sum(), candidates[i].number))
        shown = ", ".join(f"{m} {weight:g}" for m, weight in zip(names, w))
        return Chosen(chosen, f"weighted {self.kind}: the smallest weighted "
                              f"{'largest' if self.kind == 'chebyshev' else 'summed'} scaled loss "
                              f"({_fmt(score[chosen])}) with weights {shown}", tuple(names))


class BestWithin(Rule):
    """The best on ``metric`` among candidates that keep every constraint with ``margin`` to spare
    (one number for all constraints, or per constraint metric, in the metric's units)."""

    name = "best_within"

    def __init__(self, metric: str, *, margin: float | Mapping[str, float] = 0.0, direction: str | None = None) -> None:
        if direction is not None and direction not in DIRECTIONS:
            raise SpecError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        if not isinstance(metric, str) or not metric:
            raise SpecError(f"best_within needs a metric name, got {metric!r}")
        self.metric = metric
        self.margin = margin if isinstance(margin, (int, float)) else dict(margin)
        self.direction = direction
        margins = [self.margin] if isinstance(self.margin, (int, float)) else list(self.margin.values())
        if any(not finite_number(v) or not v >= 0 for v in margins):
            raise SpecError(f"margin must be a finite number >= 0 (or one per constraint metric), got {margin!r}")

    def _margin(self, metric: str) -> float:
        return float(self.margin) if isinstance(self.margin, (int, float)) else float(self.margin.get(metric, 0.0))

    def choose(self, candidates, objectives, constraints):
        direction = self.direction or next((o.direction for o in objectives if o.metric == self.metric), None)
        if direction is None:
            raise SpecError(f"best_within: {self.metric!r} is not an objective; pass direction='maximize' or "
                            "'minimize'")
        if not isinstance(self.margin, (int, float)):
            unknown = sorted(set(self.margin) - {k.metric for k in constraints})
            if unknown:
                raise SpecError(f"best_within: margins for {unknown}, which no constraint bounds; constraints are on "
                                f"{sorted({k.metric for k in constraints})}")
        needed = [self.metric, *(k.metric for k in constraints)]
        lacking = sorted({n for c in candidates for n in needed if c.values.get(n) is None})
        if lacking:
            raise SpecError(f"best_within: not every candidate has a value of {lacking}")
        keep = [i for i, c in enumerate(candidates)
                if all(k.kept_with_margin(c.values[k.metric], self._margin(k.metric)) for k in constraints)]
        if not keep:
            raise SpecError(f"best_within: no candidate keeps every constraint with the margin {self.margin}")
        chosen = _best(keep, candidates, self.metric, direction)
        margin = (f"margin {self.margin:g}" if isinstance(self.margin, (int, float))
                  else "margins " + ", ".join(f"{k} {v:g}" for k, v in self.margin.items()))
        return Chosen(chosen, f"best_within: the {'highest' if direction == 'maximize' else 'lowest'} {self.metric} "
                              f"({_fmt(candidates[chosen].values[self.metric])}) among the {len(keep)} of "
                              f"{len(candidates)} candidates that keep every constraint with {margin}",
                      (self.metric,))


def lexicographic(order: Sequence[str] | None = None, tolerances: Mapping[str, float] | None = None) -> Lexicographic:
    return Lexicographic(order, tolerances)


def knee() -> Knee:
    return Knee()


def weighted(weights: Mapping[str, float], *, kind: str = "chebyshev", default: float | None = None) -> Weighted:
    return Weighted(weights, kind=kind, default=default)


def best_within(metric: str, *, margin: float | Mapping[str, float] = 0.0, direction: str | None = None) -> BestWithin:
    return BestWithin(metric, margin=margin, direction=direction)


RULES = {"lexicographic": Lexicographic, "knee": Knee, "weighted": Weighted, "best_within": BestWithin}
