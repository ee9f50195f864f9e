"""Latency percentiles per trial, with their spread.

For each completed trial with a latency record: p50 with its confidence
interval (order statistics, 95 %, less with under 6 samples; stored with the
run) as an error bar,
p90 / p95 / p99 as markers, and min-max as a thin range, at batch size 1 (or
at the deployment batch with ``batch=True``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import plotly.graph_objects as go

from motune.results import Result
from motune.viz._common import as_result, empty_figure, esc


class _LatencyInfo(NamedTuple):
    trials: list[int]
    stats: list[dict[str, float]]  # the stored run statistics per trial
    device: str | None
    method: str | None
    batch_size: int | None


def _get_latency_info(result: Result, *, batch: bool = False) -> _LatencyInfo:
    trials, stats, device, method, size = [], [], None, None, None
    for r in result.records():
        latency = r.attrs.get("latency")
        if r.state != "COMPLETE" or not latency:
            continue
        run = latency.get("batch" if batch else "batch_1")
        if not run:
            continue
        trials.append(r.number)
        stats.append(run)
        device, method, size = latency.get("device"), latency.get("method"), run.get("batch_size")
    return _LatencyInfo(trials, stats, device, method, size)


def plot_latency(study: Any, *, batch: bool = False) -> go.Figure:
    """Latency percentiles per completed trial (batch size 1, or the deployment batch)."""
    result = as_result(study)
    info = _get_latency_info(result, batch=batch)
    if not info.trials:
        return empty_figure("Latency: no completed trial measured latency")
    x = [f"trial {t}" for t in info.trials]
    s = info.stats
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=[v["min_ms"] for v in s], mode="markers", marker=dict(symbol="line-ew-open",
                             size=14, color="#999"), name="min", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=x, y=[v["max_ms"] for v in s], mode="markers", marker=dict(symbol="line-ew-open",
                             size=14, color="#999"), name="max"))
    has_ci = all("p50_ci_low_ms" in v for v in s)
    coverage = min((v.get("p50_ci_confidence", 0.95) for v in s), default=0.95) if has_ci else None
    error = dict(type="data", symmetric=False, array=[v["p50_ci_high_ms"] - v["p50_ms"] for v in s],
                 arrayminus=[v["p50_ms"] - v["p50_ci_low_ms"] for v in s]) if has_ci else None
    fig.add_trace(go.Scatter(x=x, y=[v["p50_ms"] for v in s], mode="markers", name=f"p50 ({100 * coverage:.0f} % CI)" if has_ci else "p50",
                             marker=dict(size=10, color="#1f77b4"), error_y=error,
                             customdata=[v.get("count") for v in s], hovertemplate="%{x}: p50 %{y:.4g} ms, "
                             "%{customdata} timed calls<extra></extra>"))
    for name, colour in (("p90", "#2ca02c"), ("p95", "#ff7f0e"), ("p99", "#d62728")):
        if all(f"{name}_ms" in v for v in s):
            fig.add_trace(go.Scatter(x=x, y=[v[f"{name}_ms"] for v in s], mode="markers", name=name,
                                     marker=dict(size=8, symbol="diamond", color=colour)))
    what = f"batch of {info.batch_size}" if batch else "batch size 1"
    fig.update_layout(title=f"Latency per trial ({what}, {esc(info.device)}, {esc(info.method)}): {esc(result.name)}",
                      yaxis_title="latency (ms)", template="plotly_white", height=420)
    return fig
