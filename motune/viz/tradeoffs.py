"""Parameters to objectives: parallel coordinates and per-objective parameter importance.

Each figure is gathered (``_get_..._info``, plain data) then drawn.
Importances come from Optuna's evaluators (fANOVA by default, seeded), one
evaluation per objective over the completed trials.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import plotly.graph_objects as go

from motune.results import Result
from motune.viz._common import as_result, empty_figure, esc, unit_of


class _Dimension(NamedTuple):
    label: str
    values: list[float]
    tickvals: list[float] | None
    ticktext: list[str] | None


class _ParallelInfo(NamedTuple):
    dimensions: list[_Dimension]  # params first, then objectives
    color: list[float]  # the first objective
    color_title: str
    trials: list[int]


def _get_parallel_info(result: Result, params: list[str] | None = None) -> _ParallelInfo:
    complete = [r for r in result.records() if r.state == "COMPLETE"
                and all(r.metrics.get(o.metric) is not None for o in result.objectives)]
    names = params if params is not None else sorted({k for r in complete for k in r.params})
    distributions = result.distributions
    dims = []
    for name in names:
        raw = [r.params.get(name) for r in complete]
        present = [v for v in raw if v is not None]
        if not present:
            continue
        dist = distributions.get(name)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
        if numeric:
            log = bool(getattr(dist, "log", False)) and all(v > 0 for v in present)
            scaled = [None if v is None else (math.log10(v) if log else float(v)) for v in raw]
            label = esc(f"log10({name})" if log else name)
            if len(present) == len(raw):
                dims.append(_Dimension(label, scaled, None, None))
                continue
            # a conditional parameter: trials without it sit at an "n/a" tick below its range
            low, high = min(x for x in scaled if x is not None), max(x for x in scaled if x is not None)
            span = (high - low) or 1.0
            na = low - 0.15 * span
            ticks = [low + k * (high - low) / 4 for k in range(5)] if high > low else [low]
            dims.append(_Dimension(label, [na if x is None else x for x in scaled], [na, *ticks],
                                   ["n/a", *(f"{t:.3g}" for t in ticks)]))
        else:
            choices = list(getattr(dist, "choices", None) or dict.fromkeys(map(str, present)))
            labels = [str(c) for c in choices] + (["n/a"] if len(present) < len(raw) else [])
            codes = [float(labels.index("n/a" if v is None else str(v))) for v in raw]
            # tick text is set as plain text by plotly (no markup): the user's values as they are
            dims.append(_Dimension(esc(name), codes, list(map(float, range(len(labels)))), labels))
    for o in result.objectives:  # short labels (arrows for the direction): parallel axes sit close together
        unit = f" ({unit_of(o.metric)})" if unit_of(o.metric) else ""
        arrow = "\u2191" if o.direction == "maximize" else "\u2193"
        dims.append(_Dimension(f"{esc(o.metric)}{unit} {arrow}", [float(r.metrics[o.metric]) for r in complete],
                               None, None))
    first = result.objectives[0]
    return _ParallelInfo(dims, [float(r.metrics[first.metric]) for r in complete], esc(first.metric),
                         [r.number for r in complete])


def plot_parallel_coordinates(study: Any, *, params: list[str] | None = None) -> go.Figure:
    """Completed trials from parameters to objectives, coloured by the first objective."""
    result = as_result(study)
    info = _get_parallel_info(result, params)
    if not info.trials:
        return empty_figure("Parallel coordinates: no completed trial yet")
    dims = [dict(label=d.label, values=d.values, **({"tickvals": d.tickvals, "ticktext": d.ticktext}
                                                     if d.tickvals is not None else {})) for d in info.dimensions]
    fig = go.Figure(go.Parcoords(dimensions=dims, labelangle=_label_angle(info.dimensions), labelfont=dict(size=11), line=dict(color=info.color, colorscale="Viridis", showscale=True,
                                                            colorbar=dict(title=info.color_title))))
    fig.update_layout(title=f"Parameters to objectives: {esc(result.name)} ({len(info.trials)} completed trials)",
                      template="plotly_white", height=520, margin=dict(l=110, r=80, t=150))
    return fig


def _label_angle(dimensions: list[Any]) -> int:
    """Axis labels level when each fits the space of its axis (about 1000 px shared), else slanted: a
    multi-line label would run over the axis's range text."""
    room = 1000 / max(len(dimensions), 1)
    return 0 if max(len(d.label) for d in dimensions) * 6.5 < room - 10 else -20


class _ImportanceInfo(NamedTuple):
    importances: dict[str, dict[str, float]]  # objective metric -> param -> importance (sums to 1)
    evaluator: str
    trials: int
    left_out: list[str]  # conditional params (not on every completed trial): Optuna's evaluators skip them


def _get_importance_info(result: Result, evaluator: Any = None) -> _ImportanceInfo:
    import optuna

    complete = [r for r in result.records() if r.state == "COMPLETE"]
    if len(complete) < 2:
        raise ValueError("parameter importance needs at least 2 completed trials")
    evaluator = evaluator or optuna.importance.FanovaImportanceEvaluator(seed=0)
    out = {}
    study = result.completed_study()
    for i, o in enumerate(result.objectives):
        out[o.metric] = dict(optuna.importance.get_param_importances(
            study, evaluator=evaluator, target=lambda t, i=i: t.values[i], normalize=True))
    suggested = [set(r.params) & set(result.distributions) for r in complete]  # Optuna's params only
    everywhere = set.intersection(*suggested)
    left_out = sorted(set().union(*suggested) - everywhere)
    return _ImportanceInfo(out, type(evaluator).__name__, len(complete), left_out)


def plot_param_importances(study: Any, *, evaluator: Any = None) -> go.Figure:
    """Per objective, how much of its variance each parameter explains (Optuna's evaluators)."""
    result = as_result(study)
    try:
        info = _get_importance_info(result, evaluator)
    except (ValueError, RuntimeError) as err:
        return empty_figure(f"Parameter importance: {err}")
    params = sorted({p for imp in info.importances.values() for p in imp})
    fig = go.Figure()
    for metric, imp in info.importances.items():
        fig.add_trace(go.Bar(y=[esc(p) for p in params], x=[imp.get(p, 0.0) for p in params], orientation="h",
                             name=esc(metric)))
    if info.left_out:
        fig.add_annotation(text="left out, not set on every trial: " + ", ".join(esc(p) for p in info.left_out),
                           xref="paper", yref="paper", x=0, y=0, yshift=-62, yanchor="top", xanchor="left",
                           showarrow=False, align="left", font=dict(size=11, color="#555"))  # below the axis title
    fig.update_layout(barmode="group", title=f"Parameter importance per objective: {esc(result.name)} "
                      f"({esc(info.evaluator)}, {info.trials} completed trials)", xaxis_title="importance (share)",
                      template="plotly_white", height=max(300, 60 + 28 * len(params) * max(1, len(info.importances))),
                      margin=dict(b=110 if info.left_out else 70))
    return fig


__all__ = ["plot_parallel_coordinates", "plot_param_importances"]
