"""Multi-objective maths with one sign convention.

Every function here works on **losses**: one row per point, one column per
objective, smaller is better. :func:`to_losses` makes them from objective
values and directions (a value to maximise is negated); nothing else in
motune flips signs. On losses:

- ``a`` *dominates* ``b`` when ``a <= b`` in every column and ``a < b`` in at
  least one (:func:`dominates`); equal points do not dominate each other, so
  both stay on a front (:func:`nondominated_mask`).
- :func:`non_domination_rank`: the constrained non-dominated sort of NSGA-II
  (Deb et al., 2002): points with ``penalty <= 0`` (feasible) are ranked by
  successive fronts; infeasible ones come after all of them, ordered by their
  penalty (the summed constraint violation), equal penalties sharing a rank.
- :func:`crowding_distance`: NSGA-II's crowding distance within one front
  (the extremes of every column get infinity).
- :func:`rank_order`: indices best first by rank, then crowding (larger first),
  then index.
- :func:`hypervolume`: the exact volume dominated by the points up to a
  reference point; points that do not dominate the reference add nothing.
  Optuna's private WFG implementation is used where it is importable and
  works; any failure of it falls back to the slicing algorithm here
  (:func:`_hypervolume_slicing`), which gives the same numbers.
- :func:`front_of`: the front of a set of trials (feasible, with every value,
  not dominated): the one computation behind the shown front, the models kept
  and the progress line.
- :func:`reference_point`: motune's stated rule (:data:`REFERENCE_RULE`).

Everything is pure: numpy arrays in, numbers out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REFERENCE_RULE = ("worst feasible value per objective, moved outwards by 10 % of its range "
                  "(of its magnitude, or 1, when the range is 0)")


def to_losses(values: Sequence[Sequence[float]] | np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Rows of objective values as losses: columns to maximise are negated."""
    sign = signs(directions)
    return np.asarray(values, dtype=float).reshape(-1, len(sign)) * sign


def signs(directions: Sequence[str]) -> np.ndarray:
    """``-1`` for a ``"maximize"`` column, ``+1`` for ``"minimize"`` (what :func:`to_losses` multiplies by)."""
    out = []
    for d in directions:
        if d not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', got {d!r}")
        out.append(-1.0 if d == "maximize" else 1.0)
    return np.array(out)


def better(a: float, b: float, direction: str) -> bool:
    """Whether value ``a`` is better than ``b`` for an objective with ``direction`` (strictly)."""
    return bool(signs([direction])[0] * (a - b) < 0)


def worse_change(change: float, direction: str) -> bool:
    """Whether a change of an objective's value (new - old) makes it worse."""
    return bool(signs([direction])[0] * change > 0)


def from_losses(losses: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """The inverse of :func:`to_losses`."""
    return np.asarray(losses, dtype=float) * signs(directions)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether loss vector ``a`` dominates ``b`` (no worse anywhere, better somewhere)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a <= b) and np.any(a < b))


def weakly_dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether loss vector ``a`` is no worse than ``b`` in every column (equal counts)."""
    return bool(np.all(np.asarray(a, dtype=float) <= np.asarray(b, dtype=float)))


def nondominated_mask(losses: np.ndarray) -> np.ndarray:
    """``True`` for the rows no other row dominates (duplicates of a front point are all on it)."""
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    if n == 0:
        return np.zeros(0, dtype=bool)
    losses = losses.reshape(n, -1)
    on_front = np.ones(n, dtype=bool)
    for start in range(0, n, 512):  # blocks keep the n x n x m comparison small
        block = losses[start:start + 512]
        no_worse = np.all(losses[None, :, :] <= block[:, None, :], axis=2)
        better = np.any(losses[None, :, :] < block[:, None, :], axis=2)
        on_front[start:start + 512] = ~np.any(no_worse & better, axis=1)
    return on_front


def non_domination_rank(losses: np.ndarray, penalty: np.ndarray | None = None) -> np.ndarray:
    """Constrained non-domination rank of each row (0 = first front); see the module docstring."""
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    if n == 0:
        return np.zeros(0, dtype=int)
    losses = losses.reshape(n, -1)
    if penalty is None:
        return _front_ranks(losses)
    penalty = np.asarray(penalty, dtype=float)
    if penalty.shape != (n,):
        raise ValueError(f"need one penalty per row: {n} rows, penalty of shape {penalty.shape}")
    ranks = np.zeros(n, dtype=int)
    feasible = penalty <= 0
    ranks[feasible] = _front_ranks(losses[feasible])
    first_infeasible = int(ranks[feasible].max()) + 1 if feasible.any() else 0
    _, dense = np.unique(penalty[~feasible], return_inverse=True)
    ranks[~feasible] = first_infeasible + dense.reshape(-1)
    return ranks


def _front_ranks(losses: np.ndarray) -> np.ndarray:
    ranks = np.zeros(len(losses), dtype=int)
    remaining = np.arange(len(losses))
    rank = 0
    while remaining.size:
        front = nondominated_mask(losses[remaining])
        ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    return ranks


def crowding_distance(losses: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row among the rows (the extremes get infinity)."""
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    if n <= 2:
        return np.full(n, np.inf)
    losses = losses.reshape(n, -1)
    distance = np.zeros(n)
    for j in range(losses.shape[1]):
        order = np.argsort(losses[:, j], kind="stable")
        span = losses[order[-1], j] - losses[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (losses[order[2:], j] - losses[order[:-2], j]) / span
    return distance


def rank_order(losses: np.ndarray, penalty: np.ndarray | None = None) -> list[int]:
    """Row indices best first: constrained non-domination rank, then crowding distance within the
    rank (larger first), then index."""
    losses = np.asarray(losses, dtype=float)
    ranks = non_domination_rank(losses, penalty)
    crowding = np.zeros(len(losses))
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        crowding[members] = crowding_distance(losses[members])
    return sorted(range(len(losses)), key=lambda i: (ranks[i], -crowding[i], i))


def front_of(values: Sequence[Sequence[float] | None], directions: Sequence[str], feasible: Sequence[bool]) -> list[bool]:
    """The one front of a set of trials: ``True`` for a row that is feasible, has every objective value, and
    that no other such row dominates (equal rows all stay). ``values``: each trial's objective values in
    their own directions (``None``: the trial has none)."""
    usable = [i for i, (v, f) in enumerate(zip(values, feasible))
              if f and v is not None and all(x is not None and np.isfinite(x) for x in v)]
    out = [False] * len(values)
    if usable:
        losses = to_losses([values[i] for i in usable], directions)
        for i, keep in zip(usable, nondominated_mask(losses)):
            out[i] = bool(keep)
    return out


def joins_front(values: Sequence[float], directions: Sequence[str], others: Sequence[Sequence[float]],
                others_feasible: Sequence[bool]) -> bool:
    """Whether a feasible trial with ``values`` is on the front of itself and ``others`` (:func:`front_of`'s
    rule for one row: no feasible other with every value dominates it), in one pass."""
    point = to_losses([values], directions)[0]
    rows = [o for o, f in zip(others, others_feasible) if f and o is not None and all(np.isfinite(x) for x in o)]
    if not rows:
        return True
    losses = to_losses(rows, directions)
    return not bool(np.any(np.all(losses <= point, axis=1) & np.any(losses < point, axis=1)))


def add_to_front(front: list[Sequence[float]], values: Sequence[float], directions: Sequence[str]
                 ) -> list[Sequence[float]]:
    """The front (:func:`front_of`'s rule) of the feasible rows ``front`` already is plus one more feasible
    row ``values``: kept incrementally, as a progress line does."""
    if front and not joins_front(values, directions, front, [True] * len(front)):
        return front
    point = to_losses([values], directions)[0]
    losses = to_losses(front, directions) if front else np.zeros((0, len(point)))
    dominated = np.all(point <= losses, axis=1) & np.any(point < losses, axis=1) if len(losses) else []
    return [f for f, gone in zip(front, dominated) if not gone] + [values]


# ------------------------------------------------------------------ hypervolume

_USE_OPTUNA_HYPERVOLUME = True  # tests switch this off to run the fallback


def hypervolume(losses: np.ndarray, reference: Sequence[float]) -> float:
    """The volume the rows dominate up to ``reference`` (losses; rows not strictly better than the
    reference in every column add nothing)."""
    ref = np.asarray(reference, dtype=float).reshape(-1)
    points = np.asarray(losses, dtype=float).reshape(-1, len(ref))
    points = points[np.all(points < ref, axis=1)]
    if len(points) == 0:
        return 0.0
    points = points[nondominated_mask(points)]
    if _USE_OPTUNA_HYPERVOLUME:
        try:
            from optuna._hypervolume import compute_hypervolume

            return float(compute_hypervolume(points, ref))
        except Exception:  # noqa: BLE001  (any failure of Optuna's private code: the slicing path below)
            pass
    return _hypervolume_slicing(np.unique(points, axis=0), ref)


def _hypervolume_slicing(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume by slicing along the last column (HSO; While et al., 2006). ``points`` are
    non-dominated and strictly better than ``ref``."""
    n, d = points.shape
    if n == 0:
        return 0.0
    if d == 1:
        return float(ref[0] - points[:, 0].min())
    if d == 2:
        order = np.argsort(points[:, 0], kind="stable")
        xs, ys = points[order, 0], points[order, 1]
        best_y = np.minimum.accumulate(ys)
        widths = np.append(xs[1:], ref[0]) - xs
        return float(np.sum(widths * (ref[1] - best_y)))
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    total = 0.0
    for i in range(n):
        upper = points[i + 1, -1] if i + 1 < n else ref[-1]
        depth = upper - points[i, -1]
        if depth > 0:
            slab = points[: i + 1, :-1]
            total += depth * _hypervolume_slicing(slab[nondominated_mask(slab)], ref[:-1])
    return float(total)


def hypervolume_gain(front: np.ndarray, point: Sequence[float], reference: Sequence[float]) -> float:
    """How much the hypervolume grows when ``point`` joins ``front`` (losses): its box up to the
    reference minus the part of that box the front already covers (the front clipped to the point)."""
    ref = np.asarray(reference, dtype=float).reshape(-1)
    p = np.asarray(point, dtype=float).reshape(-1)
    if not np.all(p < ref):
        return 0.0
    front = np.asarray(front, dtype=float).reshape(-1, len(ref))
    inside = front[np.all(front < ref, axis=1)]
    covered = hypervolume(np.maximum(inside, p), ref) if len(inside) else 0.0
    return float(np.prod(ref - p)) - covered


def reference_point(losses: np.ndarray) -> np.ndarray:
    """The reference point by :data:`REFERENCE_RULE`, in losses: per column the worst (largest)
    loss plus 10 % of the column's range (of its magnitude, or 1, when the range is 0)."""
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 2 or len(losses) == 0:
        raise ValueError("the reference point needs at least one point")
    worst = losses.max(axis=0)
    span = losses.max(axis=0) - losses.min(axis=0)
    span = np.where(span > 0, span, np.where(np.abs(worst) > 0, np.abs(worst), 1.0))
    return worst + 0.1 * span


__all__ = [
    "REFERENCE_RULE",
    "crowding_distance",
    "dominates",
    "from_losses",
    "better",
    "add_to_front",
    "front_of",
    "joins_front",
    "hypervolume",
    "hypervolume_gain",
    "non_domination_rank",
    "nondominated_mask",
    "rank_order",
    "reference_point",
    "signs",
    "to_losses",
    "weakly_dominates",
    "worse_change",
]
