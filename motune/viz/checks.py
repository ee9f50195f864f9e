"""The history of a decision's checks on new data (:func:`motune.check`), one panel per metric.

Each check is a point at its time: the new value with its bootstrap
interval, green when the check passed and red when it failed, joined by a
line per decision (checks of two decisions are never joined); the value each
decision rests on (its confirmed test value, else validation) is a dotted
line in its colour, labelled with the decision, and every constraint bound on the metric a dashed red line (a bound
that changed between spec versions appears once per value, labelled with
the version whose constraints judged the check).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from motune.results import Result
from motune.viz._common import as_result, axis_title, empty_figure, esc, fmt

PASS, FAIL, BOUND = "#2ca02c", "#d62728", "#d62728"
LINES = ("#1f77b4", "#9467bd", "#8c564b", "#17becf", "#bcbd22")  # one per decision


def _metrics(checks: list[dict[str, Any]], result: Result) -> list[str]:
    """Objectives first, then constrained and other metrics, as the checks measured them."""
    seen = list(dict.fromkeys(m for c in checks for m in c["values"]))
    order = [o.metric for o in result.objectives] + [c.metric for c in result.constraints]
    return sorted(seen, key=lambda m: (order.index(m) if m in order else len(order), seen.index(m)))


def plot_checks(study: Any) -> go.Figure:
    """One panel per metric: each check's new value and interval over time, the recorded value, the bounds."""
    result = as_result(study)
    checks = result.checks()
    if not checks:
        return empty_figure("no checks yet: motune check NAME --data FILE")
    metrics = _metrics(checks, result)
    directions = {o.metric: o.direction for o in result.objectives}
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.25 / max(len(metrics), 1),
                        subplot_titles=[axis_title(m, directions.get(m)) for m in metrics])
    for row, metric in enumerate(metrics, start=1):
        mine = [c for c in checks if c["values"].get(metric, {}).get("value") is not None]
        if not mine:
            continue
        decisions = list(dict.fromkeys(c["decision"] for c in mine))
        for k, number in enumerate(decisions):  # one line per decision: checks of two decisions are not joined
            theirs = [c for c in mine if c["decision"] == number]
            values = [c["values"][metric] for c in theirs]
            low = [v["value"] - v["low"] if v.get("low") is not None else 0.0 for v in values]
            high = [v["high"] - v["value"] if v.get("high") is not None else 0.0 for v in values]
            colour = LINES[k % len(LINES)]
            label = f"decision {number} (trial {theirs[0]['trial']})"
            fig.add_trace(go.Scatter(
                x=[c["at"] for c in theirs], y=[v["value"] for v in values], mode="lines+markers",
                marker={"color": [PASS if c["verdict"] == "pass" else FAIL for c in theirs], "size": 10,
                        "line": {"color": colour, "width": 2}},
                line={"color": colour, "width": 1.5},
                error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low, "color": "#555555"},
                name=esc(label), legendgroup=str(number), showlegend=row == 1,
                hovertext=[f"check {c['number']} of decision {c['decision']} (trial {c['trial']})<br>"
                           f"{esc(c['data']['source'])}, {c['data']['rows']} rows<br>{esc(metric)} = "
                           f"{fmt(v['value'])} (recorded {fmt(v['recorded'])})<br>verdict: {c['verdict']}"
                           for c, v in zip(theirs, values)],
                hoverinfo="text"), row=row, col=1)
            recorded = sorted({v["recorded"] for v in values if v.get("recorded") is not None})
            for value in recorded:  # each decision's baseline in its colour, labelled, at its own side
                fig.add_hline(y=value, line={"dash": "dot", "color": colour}, row=row, col=1,
                              annotation_text=f"decision {number}: recorded {fmt(value)}",
                              annotation_font_color=colour,
                              annotation_position="top left" if k % 2 == 0 else "bottom left")
        bounds = {}
        for c in mine:
            for entry in c["constraints"].values():
                if entry["metric"] == metric:
                    bounds.setdefault((entry["op"], entry["bound"]), c.get("constraints_of") or c["study"])
        for (op, bound), judged_by in bounds.items():
            fig.add_hline(y=bound, line={"dash": "dash", "color": BOUND}, row=row, col=1,
                          annotation_text=f"{op} {fmt(bound)} ({esc(judged_by)})", annotation_position="bottom right")
    fig.update_layout(template="plotly_white", height=max(300, 230 * len(metrics)),
                      title=f"Checks of {esc(result.name)}'s decisions on new data ({len(checks)})",
                      margin={"t": 80})
    fig.update_xaxes(title_text="check time (UTC)", row=len(metrics), col=1)
    return fig
