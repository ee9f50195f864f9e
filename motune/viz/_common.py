"""What every figure shares: reading a study or a result, axis titles with units, escaping."""

from __future__ import annotations

import html
from typing import Any

from motune.errors import SpecTypeError
from motune.results import Result


def as_result(obj: Any) -> Result:
    """A :class:`~motune.Result` from a Result, an ``optuna.Study`` or a ``motune.Study`` spec."""
    import optuna

    from motune.spec import Study

    if isinstance(obj, Result):
        return obj
    if isinstance(obj, optuna.Study):
        return Result(obj)
    if isinstance(obj, Study):
        return obj.result()
    raise SpecTypeError(f"expected a motune Result, an optuna.Study or a motune.Study, got {type(obj).__name__}")


def esc(value: Any) -> str:
    """Text from a user (study, parameter, metric, group names) for a plotly label: ``& < >``
    escaped (plotly reads labels as a small HTML subset and decodes only a few entities, so quotes
    stay as they are)."""
    return html.escape(str(value), quote=False)


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
    name = esc(metric)
    return f"{name} ({', '.join(parts)})" if parts else name


def wrapped(title: str, width: int = 18) -> str:
    """An axis title in lines of about ``width`` characters for a small panel or a 3-D scene: the metric
    broken after underscores, its parenthesis (unit, direction) on a line of its own."""
    name, paren, rest = title.partition(" (")
    lines: list[str] = []
    for part in [p + "_" for p in name.split("_")[:-1]] + [name.split("_")[-1]]:
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
        else:
            lines.append(part)
    return "<br>".join(lines + ([f"({rest}"] if paren else []))


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def reports_of(result: Result) -> dict[int, dict[int, dict[str, float]]]:
    """Intermediate reports by trial number, then step (trials that reported)."""
    return {r.number: r.reports for r in result.records() if r.reports}


def empty_figure(message: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=esc(message), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(template="plotly_white", xaxis_visible=False, yaxis_visible=False, height=250)
    return fig
