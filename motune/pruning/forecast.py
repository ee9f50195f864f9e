"""Forecasts of a trial's final values from its partial learning curve and the study's finished curves.

A forecast answers: if this trial trained to the study's last step, where
would each of its metrics end? It is made for every report, from

- the trial's own curve up to the report (its *state*: the mean of its last
  ``window`` reported values of each metric), and
- the completed trials of the same study that reported at the same step:
  each one's state there, and its final values.

Each completed peer ``i`` gives one joint sample of the final values: the
trial's state plus the change the peer went through from the same step to
its end (``final_i - state_i``), all metrics at once, so that what moves
together (accuracy and a fairness gap) stays together. Peers whose state
was like the trial's count more: a Gaussian kernel on the distance between
the two states (each metric in units of its spread among the peers; the
bandwidth is the distance to the ``neighbours``-th nearest peer, at least
``min_bandwidth``). A trial stuck at the majority class is compared with the
trials that were stuck there, a trial already learning with those that
were. Each peer's change is corrected for where it stood (a kernel-weighted
linear fit of change on state, per metric: local linear regression), so a
peer a little ahead of the trial counts as it would have from the trial's
state. The spread of the changes is widened by the trial's own
report-to-report noise (the final value is one more noisy measurement).
The forecast is this weighted sample: a point (its weighted median per
metric) and a 90 % interval (its weighted quantiles, always closed), which
are stored with the report and checked when the trial completes. The rule
that decides on it (:mod:`motune.pruning.risk`) adds an *unknown* share of
weight ``prior_weight`` that counts against every event it tests (with
three peers that all agree, a probability is at most 3 / 4): a handful of
completed trials cannot stop a trial alone.

Calibration: each stored forecast of a trial that completed can be checked
against its final value. :func:`calibration` measures how often the final
value fell inside its interval (the coverage) and the factor by which the
intervals would have had to widen for the nominal share to be covered (a
conformal quantile of the needed factors); forecasts then widen by that
factor (never narrow; at most ``MAX_WIDEN``, which is also the widening when
intervals of no width missed), so a study whose curves the forecast reads
badly prunes less.

The model was chosen by measurement over recorded learning curves
(``benchmarks/forecast.py``); everything here is numpy on a few hundred
numbers, well under a millisecond per forecast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

LEVEL = 0.9  # the nominal coverage of a stored forecast interval
MAX_WIDEN = 10.0  # the most calibration widens a forecast (and its widening when zero-width intervals missed)


class Curve(NamedTuple):
    """A finished trial's reports by step and its final values."""

    reports: Mapping[int, Mapping[str, float]]
    final: Mapping[str, float]


class Forecast(NamedTuple):
    """A trial's forecast final values at one report."""

    step: int
    metrics: tuple[str, ...]
    state: np.ndarray  # (m,) the trial's state at the step
    samples: np.ndarray  # (n, m) one joint sample of the final values per completed peer
    weights: np.ndarray  # (n,) the peers' kernel weights
    prior_weight: float  # the unknown share, counted against every event
    scale: np.ndarray  # (m,) how much the spread was widened, by calibration and for measurement noise (>= 1)
    level: float = LEVEL

    @property
    def peers(self) -> int:
        return len(self.weights)

    @property
    def effective_peers(self) -> float:
        """Kish's effective sample size of the weights."""
        total = float(self.weights.sum())
        return total * total / float((self.weights ** 2).sum()) if total > 0 else 0.0

    def point(self) -> dict[str, float]:
        return {m: _weighted_quantile(self.samples[:, j], self.weights, 0.5) for j, m in enumerate(self.metrics)}

    def interval(self) -> dict[str, tuple[float, float]]:
        """Each metric's central ``level`` interval of the peers' weighted sample (the model's own interval,
        always closed: what is stored with a report and checked against the final value, so that coverage
        measures the model; the unknown share is the rule's caution and is kept out of it)."""
        tail = (1 - self.level) / 2
        return {m: (_weighted_quantile(self.samples[:, j], self.weights, tail),
                    _weighted_quantile(self.samples[:, j], self.weights, 1 - tail)) for j, m in enumerate(self.metrics)}

    def quantile(self, metric: str, q: float) -> float | None:
        """The ``q`` quantile of ``metric``'s forecast as the rule reads it, with half the unknown share at each
        infinity (``None`` where the quantile falls there: too little weight to place it)."""
        j = self.metrics.index(metric)
        return _open_quantile(self.samples[:, j], self.weights, self.prior_weight, q)

    def probability(self, event: np.ndarray) -> float:
        """The forecast probability of an event that holds for the samples marked ``True``; the unknown share
        counts as the event not holding."""
        event = np.asarray(event, dtype=bool)
        return float(self.weights[event].sum() / (self.weights.sum() + self.prior_weight))

    def record(self) -> dict[str, Any]:
        """The JSON-able record stored with the report: per metric the point, the interval and the scale."""
        point, interval = self.point(), self.interval()
        return {"level": self.level, "peers": self.peers, "effective_peers": round(self.effective_peers, 2),
                "prior_weight": self.prior_weight,
                "metrics": {m: {"point": point[m], "low": interval[m][0], "high": interval[m][1],
                                "scale": float(self.scale[j])} for j, m in enumerate(self.metrics)}}


def state_of(reports: Mapping[int, Mapping[str, float]], step: int, metrics: Sequence[str], window: int
             ) -> np.ndarray | None:
    """The mean of the last ``window`` reported values of each metric at steps up to ``step`` (``step`` itself
    must be reported); ``None`` when a metric is missing there."""
    here = reports.get(step)
    if here is None:
        return None
    steps = [step]
    if window > 1:
        steps = sorted(s for s in reports if s <= step)[-window:]
    out = np.empty(len(metrics))
    for j, m in enumerate(metrics):
        if m not in here:
            return None
        values = [reports[s][m] for s in steps if m in reports[s]]
        out[j] = sum(values) / len(values)
    return out


def forecast(step: int, reports: Mapping[int, Mapping[str, float]], peers: Sequence[Curve], metrics: Sequence[str],
             *, window: int = 3, neighbours: int = 5, min_bandwidth: float = 0.5, prior_weight: float = 1.0,
             min_peers: int = 3, scale: Mapping[str, float] | None = None, level: float = LEVEL,
             constant: Sequence[str] = (), states: Any = None, local_linear: bool = True) -> Forecast | None:
    """The forecast final values of ``metrics`` for a trial with ``reports`` (step -> values, up to ``step``),
    from the completed ``peers`` that reported ``step``; ``None`` with fewer than ``min_peers`` such peers.
    ``constant`` metrics (latency: measured once) end where they are. ``scale``: calibration's widening per
    metric (:func:`calibration`). ``states(peer) -> (state, final) | None``: the peers' states and final values
    (default: computed here; a caller that forecasts often passes a cached one). ``local_linear``: the peers'
    changes corrected by a kernel-weighted linear fit of change on state, per metric (with five peers or
    more), so that a peer a little ahead or behind the trial counts as it would have from the trial's state;
    ``False``: the changes as they were."""
    metrics = tuple(metrics)
    state = state_of(reports, step, metrics, window)
    if state is None:
        return None
    if states is None:
        def states(peer: Curve) -> tuple[np.ndarray, np.ndarray] | None:
            return peer_state(peer, step, metrics, window)
    rows, finals = [], []
    for peer in peers:
        found = states(peer)
        if found is not None:
            rows.append(found[0])
            finals.append(found[1])
    if len(rows) < min_peers:
        return None
    x, y = np.asarray(rows), np.asarray(finals)
    weights = kernel_weights(state, x, neighbours=neighbours, min_bandwidth=min_bandwidth)
    change = y - x
    if local_linear and len(x) >= 5:  # change_i = a + b (state_i - state) + e_i: the sample is a + e_i
        for j in range(len(metrics)):
            design = np.column_stack([np.ones(len(x)), x[:, j] - state[j]])
            root = np.sqrt(weights)
            coef, *_ = np.linalg.lstsq(design * root[:, None], change[:, j] * root, rcond=None)
            change[:, j] = coef[0] + (change[:, j] - design @ coef)
    fixed = np.array([m in constant for m in metrics])
    change[:, fixed] = 0.0
    centre = np.array([_weighted_quantile(change[:, j], weights, 0.5) for j in range(len(metrics))])
    spread = np.sqrt(np.average((change - centre) ** 2, axis=0, weights=weights)) if weights.sum() > 0 \
        else np.zeros(len(metrics))
    # the final value is one more noisy measurement: the trial's own report-to-report noise (its recent jumps)
    # is added to the spread of the peers' changes, however alike those were
    noise = np.where(fixed, 0.0, jitter(reports, step, metrics))
    floor = np.where(spread > 0, np.sqrt(spread ** 2 + noise ** 2) / np.where(spread > 0, spread, 1.0), 1.0)
    widen = np.array([max(1.0, float((scale or {}).get(m, 1.0))) for m in metrics]) * floor
    change = centre + widen * (change - centre)
    return Forecast(step, metrics, state, state + change, weights, float(prior_weight), widen, level)


def jitter(reports: Mapping[int, Mapping[str, float]], step: int, metrics: Sequence[str], recent: int = 6
           ) -> np.ndarray:
    """Each metric's report-to-report noise at ``step``: the median absolute change between consecutive
    reports among the last ``recent``, as a standard deviation of one report (/ (0.6745 * sqrt 2)); 0 with
    fewer than three reports."""
    steps = sorted(s for s in reports if s <= step)[-recent:]
    out = np.zeros(len(metrics))
    if len(steps) < 3:
        return out
    for j, m in enumerate(metrics):
        values = [reports[s][m] for s in steps if m in reports[s]]
        if len(values) >= 3:
            out[j] = float(np.median(np.abs(np.diff(values)))) / (0.6745 * np.sqrt(2))
    return out


def peer_state(peer: Curve, step: int, metrics: Sequence[str], window: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A completed peer's state at ``step`` and its final values (``None``: it lacks one, or one is not finite)."""
    state = state_of(peer.reports, step, metrics, window)
    if state is None:
        return None
    final = [peer.final.get(m) for m in metrics]
    if any(v is None for v in final):
        return None
    final = np.asarray(final, dtype=float)
    return (state, final) if np.all(np.isfinite(state)) and np.all(np.isfinite(final)) else None


def kernel_weights(state: np.ndarray, peers: np.ndarray, *, neighbours: int, min_bandwidth: float) -> np.ndarray:
    """Gaussian kernel weights of the peers' states around ``state``: each metric in units of its robust
    spread among the peers (the interquartile range / 1.349, at least 1 % of its typical size and 1e-3), the
    bandwidth the distance to the ``neighbours``-th nearest peer and at least ``min_bandwidth``."""
    spread = _robust_spread(np.vstack([peers, state]))
    distance = np.sqrt(np.mean(((peers - state) / spread) ** 2, axis=1))
    k = min(max(1, neighbours), len(distance)) - 1
    bandwidth = max(min_bandwidth, float(np.partition(distance, k)[k]))
    return np.exp(-0.5 * (distance / bandwidth) ** 2)


def _robust_spread(values: np.ndarray) -> np.ndarray:
    q75, q25 = np.percentile(values, [75, 25], axis=0)
    spread = (q75 - q25) / 1.349
    floor = np.maximum(1e-3, 0.01 * np.abs(np.median(values, axis=0)))
    return np.maximum(spread, floor)


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cumulative = np.cumsum(w) - 0.5 * w
    total = w.sum()
    if total <= 0:
        return float(np.median(values))
    return float(np.interp(q * total, cumulative, v))


def _open_quantile(values: np.ndarray, weights: np.ndarray, unknown: float, q: float) -> float | None:
    """The ``q`` quantile of the weighted values with half the unknown share at each infinity (``None`` where
    it falls there)."""
    total = weights.sum() + unknown
    target = q * total - unknown / 2
    if target <= 0 or target >= weights.sum():
        return None
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][int(np.searchsorted(cumulative, target))])


# ---------------------------------------------------------------- calibration

class Calibration(NamedTuple):
    """How well the stored forecasts of completed trials covered their final values."""

    coverage: dict[str, float | None]  # per metric: share of intervals that held the final value
    checked: dict[str, int]  # per metric: how many intervals were checked (records of old releases may be open)
    trials: int  # completed trials with at least one checked forecast
    scale: dict[str, float]  # per metric: the widening that would have covered the nominal share (>= 1)
    level: float = LEVEL

    def record(self) -> dict[str, Any]:
        return {"level": self.level, "trials": self.trials, "coverage": self.coverage, "checked": self.checked,
                "scale": self.scale}


def checks_of(record: Mapping[str, Any], final: Mapping[str, float]) -> dict[str, tuple[bool, float]]:
    """One stored forecast against a completed trial's final values: per metric with a closed interval,
    whether the final value fell inside it and the factor by which the interval without its widening would
    have had to widen to hold it."""
    out = {}
    for m, f in (record.get("metrics") or {}).items():
        point, low, high, value = f.get("point"), f.get("low"), f.get("high"), final.get(m)
        if point is None or low is None or high is None or value is None:
            continue
        s = float(f.get("scale") or 1.0)
        below, above = (point - low) / s, (high - point) / s  # the interval without its widening
        if value < point:
            need = (point - value) / below if below > 0 else np.inf
        elif value > point:
            need = (value - point) / above if above > 0 else np.inf
        else:
            need = 0.0
        out[m] = (bool(low <= value <= high), float(need))
    return out


def trial_checks(records: Sequence[Mapping[str, Any]], final: Mapping[str, float]
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A completed trial's stored forecasts against its final values, per metric: whether each closed
    interval held the final value, and the widening each needed (:func:`checks_of`), as arrays."""
    held: dict[str, list[bool]] = {}
    need: dict[str, list[float]] = {}
    for record in records:
        for m, (inside, factor) in checks_of(record, final).items():
            held.setdefault(m, []).append(inside)
            need.setdefault(m, []).append(factor)
    return {m: (np.asarray(held[m], dtype=bool), np.asarray(need[m], dtype=float)) for m in held}


def calibration(checks: Sequence[tuple[Mapping[str, Any], Mapping[str, float]]], *, level: float = LEVEL,
                min_checks: int = 20) -> Calibration:
    """Coverage and widening from ``(stored forecast record, final values)`` pairs of completed trials.

    A record's interval was made with its own ``scale``; the widening needed is measured on the interval
    without it, so that it does not compound. With fewer than ``min_checks`` checked intervals of a metric its
    scale stays 1."""
    return calibration_of([trial_checks([record], final) for record, final in checks], level=level,
                          min_checks=min_checks)


def calibration_of(per_trial: Sequence[Mapping[str, tuple[np.ndarray, np.ndarray]]], *, level: float = LEVEL,
                   min_checks: int = 20) -> Calibration:
    """:func:`calibration` from :func:`trial_checks` results, one per trial (cached by callers)."""
    by_metric: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for checked in per_trial:
        for m, pair in checked.items():
            by_metric.setdefault(m, []).append(pair)
    scale, coverage, counted = {}, {}, {}
    for m, pairs in by_metric.items():
        held = np.concatenate([h for h, _ in pairs])
        factors = np.concatenate([f for _, f in pairs])
        counted[m] = int(len(held))
        coverage[m] = float(held.mean()) if len(held) else None
        scale[m] = 1.0
        if len(factors) >= min_checks:
            rank = min(len(factors), int(np.ceil((len(factors) + 1) * level))) - 1  # a conformal quantile
            factor = float(np.partition(factors, rank)[rank])
            scale[m] = min(MAX_WIDEN, max(1.0, factor))  # inf: intervals of no width missed
    trials = sum(1 for checked in per_trial if any(len(h) for h, _ in checked.values()))
    return Calibration(coverage, counted, trials, scale, level)


__all__ = ["LEVEL", "MAX_WIDEN", "Calibration", "Curve", "Forecast", "calibration", "calibration_of", "checks_of", "forecast",
           "kernel_weights", "peer_state", "state_of", "trial_checks"]
