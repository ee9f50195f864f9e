"""The Pareto front figure.

Built in two steps, as Optuna's visualization is: :func:`_get_pareto_info`
gathers plain data from a :class:`~motune.Result` (tested without pixels),
:func:`plot_pareto_front` draws it with plotly. One objective: value per
trial; two: a 2-D scatter; three: 3-D; more: a scatter matrix. The feasible
front, feasible but dominated trials and infeasible trials are told apart;
a constraint on a plotted metric is drawn as a bound line (2-D).
"""

from __future__ import annotations

import html
from typing import Any, NamedTuple

import plotly.graph_objects as go

from motune.frontier import Result, TrialRecord

CATEGORIES = {  # category -> (legend name, colour, marker symbol)
    "front": ("feasible front", "#d62728", "circle"),
    "dominated": ("feasible, dominated", "#1f77b4", "circle-open"),
    "infeasible": ("infeasible", "#a0a0a0", "x"),
}


class _ParetoInfo(NamedTuple):
    axes: list[str]  # metric names, one per axis
    titles: list[str]  # axis titles with unit and direction
    points: dict[str, list[tuple[int, tuple[float, ...], str]]]  # category -> (trial, values, hover)
    bounds: list[tuple[int, str, float]]  # (axis index, op, bound) for constraints on plotted metrics


def unit_of(metric: str) -> str:
    """The unit a metric's name ends in (``_ms`` -> ms, ``_per_s`` -> 1/s), else ''."""
    for suffix, unit in (("_per_s", "1/s"), ("_ms", "ms"), ("_s", "s"), ("_mb", "MB")):
        if metric.endswith(suffix):
            return unit
    return ""


def axis_title(metric: str, direction: str | None = None) -> str:
    unit = unit_of(metric)
    parts = [unit] if unit else []
    if direction:
        parts.append("higher is better" if direction == "maximize" else "lower is better")
    name = html.escape(metric)
    return f"{name} ({', '.join(parts)})" if parts else name


def hover_text(record: TrialRecord, metrics: list[str]) -> str:
    lines = [f"<b>trial {record.number}</b>"]
    lines += [f"{html.escape(m)} = {_fmt(record.metrics.get(m))}" for m in metrics]
    lines += [f"{html.escape(str(k))}: {html.escape(_fmt(v))}" for k, v in record.params.items()]
    return "<br>".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _get_pareto_info(result: Result, objectives: list[str] | None = None) -> _ParetoInfo:
    by_metric = {o.metric: o for o in result.objectives}
    axes = objectives or list(by_metric)
    unknown = [a for a in axes if a not in by_metric]
    if unknown:
        raise ValueError(f"{unknown} are not objectives of study {result.name!r}; objectives: {list(by_metric)}")
    hover_metrics = list(dict.fromkeys(axes + [c.metric for c in result.constraints]))
    points: dict[str, list] = {c: [] for c in CATEGORIES}
    for r in result.records():
        if r.feasible is None:
            continue
        values = tuple(r.metrics.get(a) for a in axes)
        if any(v is None for v in values):
            continue
        category = "front" if r.on_front else ("dominated" if r.feasible else "infeasible")
        points[category].append((r.number, values, hover_text(r, hover_metrics)))
    bounds = [(axes.index(c.metric), c.op, c.bound) for c in result.constraints if c.metric in axes]
    titles = [axis_title(a, by_metric[a].direction) for a in axes]
    return _ParetoInfo(axes, titles, points, bounds)


def plot_pareto_front(result: Result, *, objectives: list[str] | None = None) -> go.Figure:
    """The study's trials in objective space, front highlighted."""
    info = _get_pareto_info(result, objectives)
    fig = go.Figure()
    n = len(info.axes)
    for category, (name, colour, symbol) in CATEGORIES.items():
        pts = info.points[category]
        if not pts:
            continue
        cols = list(zip(*(values for _, values, _ in pts)))
        common = dict(name=f"{name} ({len(pts)})", hovertext=[h for *_, h in pts], hoverinfo="text")
        marker = dict(color=colour, symbol=symbol, size=9 if category == "front" else 7)
        if n == 1:
            fig.add_trace(go.Scatter(x=[t for t, *_ in pts], y=cols[0], mode="markers", marker=marker, **common))
        elif n == 2:
            fig.add_trace(go.Scatter(x=cols[0], y=cols[1], mode="markers", marker=marker, **common))
        elif n == 3:
            marker["size"] = 5 if category == "front" else 4
            marker["symbol"] = {"circle-open": "circle-open", "x": "x"}.get(symbol, "circle")
            fig.add_trace(go.Scatter3d(x=cols[0], y=cols[1], z=cols[2], mode="markers", marker=marker, **common))
        else:
            dims = [dict(label=html.escape(a), values=c) for a, c in zip(info.axes, cols)]
            fig.add_trace(go.Splom(dimensions=dims, marker=dict(color=colour, size=5), diagonal_visible=False, **common))
    title = f"Pareto front: {html.escape(result.name)}"
    if n == 1:
        fig.update_layout(xaxis_title="trial", yaxis_title=info.titles[0])
    elif n == 2:
        fig.update_layout(xaxis_title=info.titles[0], yaxis_title=info.titles[1])
        for axis, op, bound in info.bounds:
            line = dict(line_dash="dash", line_color="#555", annotation_text=f"{op} {bound:g}")
            (fig.add_vline if axis == 0 else fig.add_hline)(bound, **line)
    elif n == 3:
        fig.update_layout(scene=dict(xaxis_title=info.titles[0], yaxis_title=info.titles[1], zaxis_title=info.titles[2]))
    fig.update_layout(title=title, template="plotly_white", legend_title_text="trials", height=600)
    return fig
