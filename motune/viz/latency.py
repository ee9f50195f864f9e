"""Latency percentiles per trial, with their spread, labelled with what was timed.

For each completed trial with a latency record: p50 with its confidence
interval (order statistics, 95 %, less with under 6 samples; stored with the
run) as an error bar, p90 / p95 / p99 as markers (p95 and p99 with their
intervals on hover), and min-max as a thin range, at batch size 1 (or at the
deployment batch with ``batch=True``). The title says the timing mode
(device time or end to end; :mod:`motune.metrics.latency`), or that the
trials were timed in several modes (each trial's mode is on hover).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import plotly.graph_objects as go

from motune.results import Result
from motune.viz._common import as_result, empty_figure, esc

MODE_LABELS = {"device": "device time", "end_to_end": "end to end", None: "mode not recorded"}


class _LatencyInfo(NamedTuple):
    trials: list[int]
    stats: list[dict[str, float]]  # the stored run statistics per trial
    device: str | None
    method: str | None
    batch_size: int | None
    modes: list[str | None]  # per trial: "device", "end_to_end", or None (recorded before modes existed)
    window: str | None  # what was timed, in words (when every trial was timed the same way)


def _get_latency_info(result: Result, *, batch: bool = False) -> _LatencyInfo:
    trials, stats, device, method, size, modes, windows = [], [], None, None, None, [], set()
    for r in result.records():
        latency = r.attrs.get("latency")
        if r.state != "COMPLETE" or not latency:
            continue
        run = latency.get("batch" if batch else "batch_1")
        if not run:
            continue
        trials.append(r.number)
        stats.append(run)
        modes.append(latency.get("mode"))
        windows.add(latency.get("window"))
        device, method, size = latency.get("device"), latency.get("method"), run.get("batch_size")
    return _LatencyInfo(trials, stats, device, method, size, modes, windows.pop() if len(windows) == 1 else None)


def mode_label(modes: list[str | None]) -> str:
    """The timing mode of a set of trials, in words: one mode, or the modes they mix."""
    kinds = sorted({MODE_LABELS.get(m, str(m)) for m in modes})
    return kinds[0] if len(kinds) == 1 else "mixed modes: " + ", ".join(kinds)


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
                                     marker=dict(size=8, symbol="diamond", color=colour),
                                     customdata=[[_interval(v, name), MODE_LABELS.get(m, str(m))]
                                                 for v, m in zip(s, info.modes)],
                                     hovertemplate=f"%{{x}}: {name} %{{y:.4g}} ms%{{customdata[0]}}, "
                                                   "%{customdata[1]}<extra></extra>"))
    _range_from_spread(fig, x, s)
    what = f"batch of {info.batch_size}" if batch else "batch size 1"
    fig.update_layout(title=f"Latency per trial ({what}, {esc(mode_label(info.modes))}, {esc(info.device)}, "
                            f"{esc(info.method)}): {esc(result.name)}",
                      yaxis_title="latency (ms)", template="plotly_white", height=420)
    if info.window:
        fig.add_annotation(text=esc(f"timed: {info.window}"), xref="paper", yref="paper", x=0, y=1.02,
                           showarrow=False, xanchor="left", yanchor="bottom", font=dict(size=11, color="#555"))
    return fig


def _range_from_spread(fig: go.Figure, x: list[str], stats: list[dict[str, Any]]) -> None:
    """The y-range covers the spread of what is compared (min to p95 and the p50 intervals), not one slow
    outlier: a max or p99 above it is drawn at the top edge as a triangle with its value, and said."""
    core = [v[k] for v in stats for k in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "p50_ci_high_ms")
            if isinstance(v.get(k), (int, float))]
    if not core:
        return
    low, high = min(core), max(core)
    top = high + 0.15 * max(high - low, 0.05 * high, 1e-6)
    above = [(t, k, v[k]) for t, v in zip(x, stats) for k in ("max_ms", "p99_ms")
             if isinstance(v.get(k), (int, float)) and v[k] > top]
    if not above:
        return
    bottom = max(0.0, low - 0.15 * max(high - low, 0.05 * high, 1e-6))
    fig.update_yaxes(range=[bottom, top])
    fig.add_trace(go.Scatter(x=[t for t, _, _ in above], y=[top] * len(above), mode="markers", cliponaxis=False,
                             name=f"above the range ({len(above)})", marker=dict(symbol="triangle-up", size=11,
                                                                                  color="#d62728"),
                             hovertext=[f"{t}: {k.removesuffix('_ms')} {value:.4g} ms (above the range)"
                                        for t, k, value in above], hoverinfo="text"))
    fig.add_annotation(text=f"{len(above)} value(s) above the range, up to {max(v for *_, v in above):.4g} ms "
                            "(triangles; hover for each)", xref="paper", yref="paper", x=1, y=1.02,
                       showarrow=False, xanchor="right", yanchor="bottom", font=dict(size=11, color="#d62728"))


def _interval(run: dict[str, Any], name: str) -> str:
    low, high, confidence = (run.get(f"{name}_ci_{k}") for k in ("low_ms", "high_ms", "confidence"))
    if low is None or high is None or confidence is None:
        return ""
    return f" ({100 * confidence:.0f} % interval {low:.4g} to {high:.4g})"
