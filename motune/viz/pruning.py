"""What pruning did: how many trials each rule ended, at which step, and the compute saved; and how its
forecasts compared with what the completed trials really ended at.

Compute is counted in steps (epochs, boosting stages: whatever the train
function reports): a trial that reported is charged its last reported step
(a pruned one, the step it was pruned at); the budget is the largest step a
completed trial reported, for every trial that reported (unknown, and the
saving n/a, while no completed trial has reported). Saved = 1 - used /
budget. Only trials that reported are counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from motune.results import Result
from motune.viz._common import as_result, empty_figure, esc, reports_of


class _PruningInfo(NamedTuple):
    by_rule: dict[str, int]  # rule -> trials it ended
    steps: dict[str, list[int]]  # rule -> the step of each trial it ended
    used_steps: int
    budget_steps: int
    reporting_trials: int
    saved_fraction: float | None


def _get_pruning_info(result: Result) -> _PruningInfo:
    reports = reports_of(result)
    records = result.records()
    reporting = [r for r in records if reports.get(r.number) and r.state in ("COMPLETE", "PRUNED")]
    pruned = [r for r in reporting if r.state == "PRUNED"]  # by a motune rule, at a report
    by_rule = Counter(str(r.attrs.get("pruned", {}).get("rule", "unknown")) for r in pruned)
    steps: dict[str, list[int]] = {}
    for r in pruned:
        info = r.attrs.get("pruned", {})
        steps.setdefault(str(info.get("rule", "unknown")), []).append(int(info.get("step", max(reports[r.number]))))
    complete_steps = [max(reports[r.number]) for r in reporting if r.state == "COMPLETE"]
    full = max(complete_steps, default=0)  # no completed trial reported: the budget is unknown
    used = sum(max(reports[r.number]) for r in reporting)
    budget = full * len(reporting)
    saved = (1 - used / budget) if budget else None
    return _PruningInfo(dict(by_rule), steps, used, budget, len(reporting), saved)


def plot_pruning(study: Any) -> go.Figure:
    """Trials ended per rule, the steps they were ended at, and the compute saved (in steps)."""
    result = as_result(study)
    info = _get_pruning_info(result)
    if not info.reporting_trials:
        return empty_figure("Pruning: no trial reported intermediate results")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["trials ended per rule", "step at which they were ended"])
    rules = sorted(info.by_rule)
    fig.add_trace(go.Bar(x=[esc(r) for r in rules], y=[info.by_rule[r] for r in rules], name="trials pruned",
                         marker_color="#ff7f0e", showlegend=False), row=1, col=1)
    for rule in rules:
        counts = Counter(info.steps[rule])
        fig.add_trace(go.Bar(x=sorted(counts), y=[counts[s] for s in sorted(counts)], name=esc(rule)), row=1, col=2)
    saved = "n/a" if info.saved_fraction is None else f"{100 * info.saved_fraction:.0f} %"
    fig.update_layout(barmode="stack", template="plotly_white", height=400,
                      title=f"Pruning: {sum(info.by_rule.values())} of {info.reporting_trials} reporting trials ended "
                            f"early; compute saved {saved} ({info.used_steps} of {info.budget_steps} steps): "
                            f"{esc(result.name)}")
    fig.update_xaxes(title_text="step", dtick=1, row=1, col=2)
    fig.update_yaxes(title_text="trials", row=1, col=1)
    return fig


class _ForecastInfo(NamedTuple):
    metrics: list[str]
    points: dict[str, list[tuple[int, int, float, float | None, float | None, float]]]  # trial, step, point, low,
    # high, final: each completed trial's first forecast
    coverage: dict[str, float | None]
    checked: dict[str, int]
    level: float


def _get_forecast_info(result: Result) -> _ForecastInfo:
    calibrated = result.forecast_calibration()
    points: dict[str, list[tuple[int, int, float, float | None, float | None, float]]] = {}
    for r in result.records():
        if r.state != "COMPLETE" or not r.forecasts:
            continue
        step = min(r.forecasts)
        for metric, f in r.forecasts[step].get("metrics", {}).items():
            final = r.metrics.get(metric)
            if final is not None and f.get("point") is not None:
                points.setdefault(metric, []).append((r.number, step, f["point"], f.get("low"), f.get("high"), final))
    return _ForecastInfo(sorted(points), points, calibrated.coverage, calibrated.checked, calibrated.level)


def plot_forecasts(study: Any) -> go.Figure:
    """The pruning forecasts against the final values of the trials that completed: each trial's first
    forecast (point and interval) per metric, the diagonal where they agree, and the coverage of every
    stored interval in the panel's title."""
    result = as_result(study)
    info = _get_forecast_info(result)
    if not info.metrics:
        return empty_figure("Forecasts: no completed trial has a stored forecast (the pruning policy makes them "
                            "once enough trials completed)")
    titles = []
    for m in info.metrics:
        covered = info.coverage.get(m)
        held = "n/a" if covered is None else f"{100 * covered:.0f} %"
        titles.append(f"{esc(m)}: {held} of {info.checked.get(m, 0)} intervals held the final value")
    fig = make_subplots(rows=1, cols=len(info.metrics), subplot_titles=titles, horizontal_spacing=0.08)
    for col, metric in enumerate(info.metrics, start=1):
        rows = info.points[metric]
        x = [p[2] for p in rows]
        y = [p[5] for p in rows]
        plus = [None if p[4] is None else p[4] - p[2] for p in rows]
        minus = [None if p[3] is None else p[2] - p[3] for p in rows]
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", marker={"color": "#1f77b4", "size": 7}, showlegend=False,
            error_x={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1,
                     "color": "rgba(31,119,180,0.4)"},
            text=[f"trial {p[0]}, forecast at step {p[1]}" for p in rows],
            hovertemplate="%{text}<br>forecast %{x:.4g}<br>final %{y:.4g}<extra></extra>"), row=1, col=col)
        low, high = min(x + y), max(x + y)
        fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", line={"color": "#999", "dash": "dot"},
                                 showlegend=False, hoverinfo="skip"), row=1, col=col)
        fig.update_xaxes(title_text="forecast", row=1, col=col)
        fig.update_yaxes(title_text="final" if col == 1 else None, row=1, col=col)
    fig.update_layout(template="plotly_white", height=380,
                      title=f"Forecasts of the final values ({100 * info.level:.0f} % intervals) against the "
                            f"completed trials' final values: {esc(result.name)}")
    return fig
