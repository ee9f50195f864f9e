"""Per-group fairness bars for chosen trials, from the per-group tables stored on each trial.

By default the chosen trials are the decision's candidates (the chosen
trial, the knee, the best front trial on each objective; see
:mod:`motune.viz.decision`), labelled as such, else the front's first five.
One panel per per-group metric (selection rate, true and false positive rate,
accuracy); one bar per trial and group.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from motune.errors import SpecError
from motune.results import Result
from motune.viz._common import as_result, empty_figure, esc
from motune.viz.decision import candidates

METRICS = ("selection_rate", "true_positive_rate", "false_positive_rate", "accuracy")


class _GroupInfo(NamedTuple):
    metrics: list[str]
    groups: list[str]
    bars: dict[int, dict[str, dict[str, float | None]]]  # trial -> metric -> group -> value
    counts: dict[str, int]  # group -> rows (of the first chosen trial's table)
    split: str | None
    labels: dict[int, str]  # trial -> why it is shown ("knee; best accuracy"), when a candidate


def _chosen(result: Result, trials: list[int] | None, limit: int) -> dict[int, str]:
    """Trial -> label of the trials to draw: ``trials``, else the decision candidates (the chosen trial, the
    knee, the best on each objective), else the front's first ``limit``."""
    if trials is not None:
        return {int(t): "" for t in trials}
    picked = {n: "; ".join(labels) for n, labels in list(candidates(result).items())[:limit]}
    if picked:
        return picked
    front = result.front()
    return {int(t): "" for t in front["trial"].head(limit)} if len(front) else {}


def _get_group_info(result: Result, trials: list[int] | None = None, *, limit: int = 5) -> _GroupInfo:
    records = {r.number: r for r in result.records()}
    chosen = _chosen(result, trials, limit)
    unknown = [t for t in chosen if t not in records]
    if unknown:
        raise SpecError(f"no trial(s) {unknown} in study {result.name!r}")
    bars, groups, counts, split, metrics = {}, [], {}, None, []
    for number in chosen:
        fairness = records[number].attrs.get("fairness")
        if not fairness:
            continue
        split = split or fairness.get("split")
        table = fairness["by_group"]
        metrics = metrics or [m for m in METRICS if m in table[0]]
        bars[number] = {m: {row["group"]: row.get(m) for row in table} for m in metrics}
        for row in table:
            if row["group"] not in groups:
                groups.append(row["group"])
            counts.setdefault(row["group"], row.get("count"))
    return _GroupInfo(metrics, groups, bars, counts, split, {n: chosen[n] for n in bars})


def plot_group_fairness(study: Any, *, trials: list[int] | None = None, limit: int = 5) -> go.Figure:
    """Per-group selection rate, TPR, FPR and accuracy of chosen trials (default: the decision's candidates)."""
    result = as_result(study)
    info = _get_group_info(result, trials, limit=limit)
    if not info.bars:
        return empty_figure("Per-group fairness: no chosen trial has a per-group table")
    fig = make_subplots(rows=1, cols=len(info.metrics), subplot_titles=[m.replace("_", " ") for m in info.metrics],
                        shared_yaxes=True)
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    labels = [f"{esc(g)} (n={info.counts.get(g)})" for g in info.groups]
    for k, (number, by_metric) in enumerate(info.bars.items()):
        for j, metric in enumerate(info.metrics, start=1):
            label = f"trial {number}" + (f" ({esc(info.labels[number])})" if info.labels.get(number) else "")
            fig.add_trace(go.Bar(x=labels, y=[by_metric[metric].get(g) for g in info.groups], name=label,
                                 legendgroup=str(number), showlegend=j == 1, marker_color=palette[k % len(palette)]),
                          row=1, col=j)
    where = f" on the {esc(info.split)} split" if info.split else ""
    fig.update_layout(barmode="group", title=f"Per-group rates of chosen trials{where}: {esc(result.name)}",
                      template="plotly_white", height=420)
    fig.update_yaxes(range=[0, 1.08], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1])  # rates: the top tick below the titles
    return fig
