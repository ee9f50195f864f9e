"""Hypervolume of the feasible front after each trial.

:func:`_get_hypervolume_history_info` gathers plain data, :func:`plot_hypervolume_history`
draws it. The hypervolume is updated incrementally: the current feasible
front is kept; a feasible completed trial that the front weakly dominates
leaves it, and the hypervolume, unchanged; otherwise the trial joins the
front (the points it dominates leave) and the hypervolume grows by the
trial's exclusive contribution: the volume of its box up to the reference
point minus the part the old front already covers (the old front clipped to
the trial, with :func:`motune._pareto.hypervolume`). Infeasible, pruned and failed
trials leave it unchanged.

Reference point rule (:func:`reference_point`), written on the figure: per
objective, the worst value among the feasible completed trials, moved
outwards by 10 % of that objective's range over them (10 % of its magnitude,
or 1, when the range is 0), so every feasible trial contributes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import plotly.graph_objects as go

from motune import _pareto
from motune.errors import SpecError
from motune.results import FINISHED, Result
from motune.viz._common import as_result, empty_figure, esc, fmt

RULE = _pareto.REFERENCE_RULE


class _HypervolumeHistoryInfo(NamedTuple):
    trials: list[int]  # every finished trial, in number order
    hypervolume: list[float]  # of the feasible front after that trial
    front_size: list[int]
    reference: dict[str, float]  # metric -> reference value (in the metric's units)
    rule: str


def reference_point(result: Result) -> dict[str, float]:
    """The reference point by :data:`RULE` (raises ``ValueError`` with no feasible trial)."""
    return result.reference_point()


def _get_hypervolume_history_info(result: Result, reference: dict[str, float] | None = None) -> _HypervolumeHistoryInfo:
    reference = reference or result.reference_point()
    missing = [o.metric for o in result.objectives if o.metric not in reference]
    if missing:
        raise SpecError(f"reference lacks {missing}")
    ref = _pareto.to_losses([[reference[o.metric] for o in result.objectives]], result.directions)[0]
    front = np.empty((0, len(ref)))  # losses
    hv, trials, values, sizes = 0.0, [], [], []
    for r in result.records():
        if r.state not in FINISHED:
            continue
        if r.feasible:
            p = result.losses([r])[0]
            if not any(_pareto.dominates(f, p) for f in front):  # p enters the front (an equal point adds 0)
                hv += _pareto.hypervolume_gain(front, p, ref)
                front = np.vstack([front[[not _pareto.dominates(p, f) for f in front]], p])
        trials.append(r.number)
        values.append(hv)
        sizes.append(len(front))
    return _HypervolumeHistoryInfo(trials, values, sizes, reference, RULE)


def plot_hypervolume_history(study: Any, *, reference: dict[str, float] | None = None) -> go.Figure:
    """Hypervolume of the feasible front after each finished trial, with the reference point stated."""
    result = as_result(study)
    try:
        info = _get_hypervolume_history_info(result, reference)
    except ValueError as err:
        return empty_figure(f"Hypervolume history: {err}")
    fig = go.Figure(go.Scatter(
        x=info.trials, y=info.hypervolume, mode="lines+markers", line_shape="hv", name="feasible hypervolume",
        customdata=info.front_size, hovertemplate="trial %{x}<br>hypervolume %{y:.4g}<br>front %{customdata}<extra></extra>"))
    ref_text = ", ".join(f"{esc(k)} = {fmt(v)}" for k, v in info.reference.items())
    rule = esc(info.rule if reference is None else "given by the caller")
    fig.add_annotation(text=f"reference point: {ref_text}<br>({rule})", xref="paper", yref="paper", x=0, y=1.12,
                       showarrow=False, align="left", font=dict(size=11))
    fig.update_layout(title=f"Hypervolume of the feasible front: {esc(result.name)}", xaxis_title="trial",
                      yaxis_title="hypervolume", template="plotly_white", height=420, margin=dict(t=110))
    values = [v for v in info.hypervolume if v is not None and v == v]
    if values:
        low, high = min(values), max(values)
        if high - low <= 1e-9 * max(abs(high), 1e-300):  # flat: its own scale around the value, said, not 0..1
            pad = abs(high) * 0.1 or 1.0
            fig.update_yaxes(range=[low - pad, high + pad], tickformat=".4g")
            fig.add_annotation(text=f"flat at {high:.4g}: no trial improved the front after trial {info.trials[0]}",
                               xref="paper", yref="y", x=0.5, y=high, yshift=14, showarrow=False,
                               font=dict(size=11, color="#555"))
        else:
            fig.update_yaxes(tickformat=".4g")
    return fig
