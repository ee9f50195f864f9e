"""The Pareto front figure.

Built in two steps, as Optuna's visualization is: :func:`_get_pareto_info`
gathers plain data from a :class:`~motune.Result` (tested without pixels),
:func:`plot_pareto_front` draws it with plotly. One objective: value per
trial; two: a 2-D scatter; three: 3-D; more: a scatter matrix. The feasible
front, feasible but dominated trials, infeasible trials and pruned trials (at
the values of their last report) are told apart; a constraint on a plotted
metric is drawn as a bound line (2-D) or a bound plane (3-D). Hover shows the
trial's params and metrics.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import plotly.graph_objects as go

from motune.errors import SpecError
from motune.results import Result, TrialRecord
from motune.viz._common import as_result, axis_title, esc, fmt, reports_of, unit_of, wrapped  # noqa: F401

CATEGORIES = {  # category -> (legend name, colour, marker symbol)
    "front": ("feasible front", "#d62728", "circle"),
    "dominated": ("feasible, dominated", "#1f77b4", "circle-open"),
    "infeasible": ("infeasible", "#a0a0a0", "x"),
    "pruned": ("pruned (at its last report)", "#ff7f0e", "triangle-down-open"),
}


class _ParetoInfo(NamedTuple):
    axes: list[str]  # metric names, one per axis
    titles: list[str]  # axis titles with unit and direction
    points: dict[str, list[tuple[int, tuple[float, ...], str]]]  # category -> (trial, values, hover)
    bounds: list[tuple[int, str, float]]  # (axis index, op, bound) for constraints on plotted metrics
    highlight: list[tuple[int, tuple[float, ...], str]]  # (trial, values, label): the chosen trial(s)


def hover_text(record: TrialRecord, names: list[str], *, values: dict | None = None) -> str:
    """Trial number, the ``names`` metrics (from ``values``, default the trial's final metrics), params."""
    values = record.metrics if values is None else values
    lines = [f"<b>trial {record.number}</b>"]
    lines += [f"{esc(m)} = {fmt(values.get(m))}" for m in names]
    lines += [f"{esc(str(k))}: {esc(fmt(v))}" for k, v in record.params.items()]
    return "<br>".join(lines)


def _get_pareto_info(result: Result, objectives: list[str] | None = None,
                     highlight: dict[int, str] | None = None) -> _ParetoInfo:
    by_metric = {o.metric: o for o in result.objectives}
    axes = objectives or list(by_metric)
    unknown = [a for a in axes if a not in by_metric]
    if unknown:
        raise SpecError(f"{unknown} are not objectives of study {result.name!r}; objectives: {list(by_metric)}")
    hover_metrics = list(dict.fromkeys(axes + [c.metric for c in result.constraints]))
    points: dict[str, list] = {c: [] for c in CATEGORIES}
    reports = reports_of(result)
    for r in result.records():
        if r.state == "PRUNED" and reports.get(r.number):
            last = reports[r.number][max(reports[r.number])]
            values = tuple(last.get(a) for a in axes)
            if all(v is not None for v in values):
                pruned = r.attrs.get("pruned", {})
                hover = hover_text(r, hover_metrics, values=last) + (
                    f"<br>pruned at step {esc(pruned.get('step'))} by {esc(pruned.get('rule'))}")
                points["pruned"].append((r.number, values, hover))
            continue
        if r.feasible is None:
            continue
        values = tuple(r.metrics.get(a) for a in axes)
        if any(v is None for v in values):
            continue
        category = "front" if r.on_front else ("dominated" if r.feasible else "infeasible")
        points[category].append((r.number, values, hover_text(r, hover_metrics)))
    bounds = [(axes.index(c.metric), c.op, c.bound) for c in result.constraints if c.metric in axes]
    titles = [axis_title(a, by_metric[a].direction) for a in axes]
    if highlight is None:
        decision = result.decision
        highlight = {} if decision is None else {decision.trial: f"chosen (decision {decision.number})"}
    marked = []
    for r in result.records():
        if r.number in highlight and all(r.metrics.get(a) is not None for a in axes):
            marked.append((r.number, tuple(r.metrics[a] for a in axes), highlight[r.number]))
    return _ParetoInfo(axes, titles, points, bounds, marked)


def plot_pareto_front(study: Any, *, objectives: list[str] | None = None,
                      highlight: dict[int, str] | None = None) -> go.Figure:
    """The study's trials in objective space, front highlighted (a Result, an optuna.Study or a
    motune.Study). ``highlight``: trial number -> label, drawn as stars (default: the current decision)."""
    result = as_result(study)
    info = _get_pareto_info(result, objectives, highlight)
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
            # WebGL markers: "x" draws as a box in software GL (headless Chromium), "cross" does not
            marker["symbol"] = {"circle-open": "circle-open", "x": "cross", "triangle-down-open": "diamond-open"}.get(
                symbol, "circle")
            fig.add_trace(go.Scatter3d(x=cols[0], y=cols[1], z=cols[2], mode="markers", marker=marker, **common))
        else:
            dims = [dict(label=t, values=c) for t, c in zip(info.titles, cols)]
            fig.add_trace(go.Splom(dimensions=dims, marker=dict(color=colour, size=5), diagonal_visible=False, **common))
    for number, values, label in info.highlight:
        common = dict(name=esc(label), hovertext=[f"trial {number}: {esc(label)}"], hoverinfo="text",
                      marker=dict(symbol="star", size=16, color="#2ca02c", line=dict(color="#222", width=1)))
        if n == 1:
            fig.add_trace(go.Scatter(x=[number], y=[values[0]], mode="markers", **common))
        elif n == 2:
            fig.add_trace(go.Scatter(x=[values[0]], y=[values[1]], mode="markers", **common))
        elif n == 3:
            common["marker"] |= {"symbol": "diamond", "size": 8}
            fig.add_trace(go.Scatter3d(x=[values[0]], y=[values[1]], z=[values[2]], mode="markers", **common))
        else:  # a scatter matrix: its own trace, a larger marker in every panel
            dims = [dict(label=t, values=[v]) for t, v in zip(info.titles, values)]
            fig.add_trace(go.Splom(dimensions=dims, diagonal_visible=False, name=common["name"],
                                   hovertext=common["hovertext"], hoverinfo="text",
                                   marker=dict(color="#2ca02c", size=12, line=dict(color="#222", width=1))))
    title = f"Pareto front: {esc(result.name)}"
    if n == 1:
        fig.update_layout(xaxis_title="trial", yaxis_title=info.titles[0])
    elif n == 2:
        fig.update_layout(xaxis_title=info.titles[0], yaxis_title=info.titles[1])
        for axis, op, bound in info.bounds:
            line = dict(line_dash="dash", line_color="#555", annotation_text=f"{op} {bound:g}")
            (fig.add_vline if axis == 0 else fig.add_hline)(bound, **line)
    elif n == 3:
        titles = [wrapped(t) for t in info.titles]  # short lines: the 3-D scene's titles are not cut
        fig.update_layout(scene=dict(xaxis_title=titles[0], yaxis_title=titles[1], zaxis_title=titles[2]),
                          scene_camera=dict(eye=dict(x=1.6, y=1.6, z=0.9)))
        _bound_planes(fig, info)
    fig.update_layout(title=title, template="plotly_white", legend_title_text="trials", height=600)
    return fig


def _bound_planes(fig: go.Figure, info: _ParetoInfo) -> None:
    """A translucent plane at each constraint bound on a 3-D axis, spanning the points' range."""
    values = [v for pts in info.points.values() for _, v, _ in pts]
    if not values or not info.bounds:
        return
    lows = [min(v[i] for v in values) for i in range(3)]
    highs = [max(v[i] for v in values) for i in range(3)]
    for axis, op, bound in info.bounds:
        others = [i for i in range(3) if i != axis]
        a = [lows[others[0]], highs[others[0]]]
        b = [lows[others[1]], highs[others[1]]]
        grid = {others[0]: [[a[0], a[1]], [a[0], a[1]]], others[1]: [[b[0], b[0]], [b[1], b[1]]],
                axis: [[bound, bound], [bound, bound]]}
        fig.add_trace(go.Surface(x=grid[0], y=grid[1], z=grid[2], showscale=False, opacity=0.25,
                                 colorscale=[[0, "#555"], [1, "#555"]], hoverinfo="skip",
                                 name=f"{esc(info.axes[axis])} {op} {bound:g}", showlegend=True))


def plot_pareto_pairs(study: Any, *, highlight: dict[int, str] | None = None) -> go.Figure:
    """Every pair of objectives as its own 2-D panel (readable where a 3-D scene or a scatter matrix is
    not), with the same categories, bounds and highlighted trials as :func:`plot_pareto_front`."""
    from plotly.subplots import make_subplots

    result = as_result(study)
    info = _get_pareto_info(result, None, highlight)
    n = len(info.axes)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if not pairs:
        return plot_pareto_front(result, highlight=highlight)
    cols = min(3, len(pairs))
    rows = (len(pairs) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.09, vertical_spacing=0.16)
    for k, (i, j) in enumerate(pairs):
        row, col = k // cols + 1, k % cols + 1
        for category, (name, colour, symbol) in CATEGORIES.items():
            pts = info.points[category]
            if pts:
                fig.add_trace(go.Scatter(x=[v[i] for _, v, _ in pts], y=[v[j] for _, v, _ in pts], mode="markers",
                                         name=f"{name} ({len(pts)})", legendgroup=category, showlegend=k == 0,
                                         marker=dict(color=colour, symbol=symbol, size=8 if category == "front" else 6),
                                         hovertext=[h for *_, h in pts], hoverinfo="text"), row=row, col=col)
        for number, values, label in info.highlight:
            fig.add_trace(go.Scatter(x=[values[i]], y=[values[j]], mode="markers", name=esc(label),
                                     legendgroup="highlight", showlegend=k == 0,
                                     marker=dict(symbol="star", size=15, color="#2ca02c", line=dict(color="#222", width=1)),
                                     hovertext=[f"trial {number}: {esc(label)}"], hoverinfo="text"), row=row, col=col)
        for axis, op, bound in info.bounds:
            if axis in (i, j):
                line = dict(line_dash="dash", line_color="#555", row=row, col=col)
                (fig.add_vline if axis == i else fig.add_hline)(bound, **line)
        fig.update_xaxes(title_text=wrapped(info.titles[i], 28), title_font_size=11, row=row, col=col)
        fig.update_yaxes(title_text=wrapped(info.titles[j], 22), title_font_size=11, row=row, col=col)
    fig.update_layout(title=f"Pairs of objectives: {esc(result.name)}", template="plotly_white",
                      height=380 * rows + 80, legend_title_text="trials")
    return fig
