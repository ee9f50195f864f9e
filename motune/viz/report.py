"""A self-contained HTML report of a study: spec, counts, every figure that
applies (plotly.js inlined once, so it works offline), the front as a table
and provenance. Every text that comes from a user is HTML-escaped.

:func:`report_figures` lists the figures that apply to a study;
:func:`export_pngs` writes each as a PNG with kaleido, which needs a
Chrome / Chromium (Debian's ``chromium`` works; kaleido finds it on the
PATH or through ``BROWSER_PATH``).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

from pandas import NA as _NA

from motune.results import Result
from motune.viz._common import reports_of
from motune.viz.checks import plot_checks
from motune.viz.decision import summary_html
from motune.viz.groups import plot_group_fairness
from motune.viz.history import plot_hypervolume_history
from motune.viz.latency import plot_latency
from motune.viz.pareto import plot_pareto_front, plot_pareto_pairs
from motune.viz.pruning import plot_forecasts, plot_pruning
from motune.viz.tradeoffs import plot_parallel_coordinates, plot_param_importances

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; padding: 0 1rem; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2rem; overflow-wrap: anywhere; } h2 { overflow-wrap: anywhere; } .muted { color: #666; }
p, li { overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
td.text { white-space: normal; overflow-wrap: anywhere; min-width: 6rem; }
.scroll { overflow-x: auto; max-width: 100%; }
pre { background: #f7f7f7; padding: 0.75rem; overflow-x: auto; font-size: 0.8rem; white-space: pre-wrap;
      overflow-wrap: anywhere; }
.figure { margin: 0.5rem 0 2rem; overflow-x: auto; }
.figure .plotly-graph-div { min-width: 560px; } .figure.wide .plotly-graph-div { min-width: 900px; }
@media (max-width: 700px) {
  body { margin: 0.5rem auto; padding: 0 0.5rem; font-size: 0.9rem; }
  table { font-size: 0.75rem; } th, td { padding: 0.2rem 0.3rem; white-space: normal; }
  table.candidates td { min-width: 7rem; }
  h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; }
}
"""


WIDE_FIGURES = ("pareto_pairs", "parallel_coordinates", "group_fairness")  # panels side by side
TEXT_LINE_CHARS = 64  # a figure's title and notes are broken into lines this long: they fit a 560 px figure


class PngExportError(RuntimeError):
    """PNG export is not possible here (no kaleido, or no Chrome / Chromium for it)."""


def report_figures(result: Result) -> list[tuple[str, str, Any]]:
    """``(key, heading, figure)`` for every figure that applies to the study, in report order."""
    records = result.records()
    complete = [r for r in records if r.state == "COMPLETE"]
    figures: list[tuple[str, str, Any]] = []
    if not complete:
        return figures
    figures.append(("pareto_front", "Pareto front", plot_pareto_front(result)))
    if len(result.objectives) >= 3:
        figures.append(("pareto_pairs", "Pairs of objectives", plot_pareto_pairs(result)))
    if any(r.feasible for r in complete):
        figures.append(("hypervolume_history", "Hypervolume history", plot_hypervolume_history(result)))
    if any(r.params for r in complete):
        figures.append(("parallel_coordinates", "Parameters to objectives", plot_parallel_coordinates(result)))
        if len(complete) >= 2:
            figures.append(("param_importances", "Parameter importance", plot_param_importances(result)))
    if any(r.on_front and r.attrs.get("fairness") for r in complete):
        figures.append(("group_fairness", "Per-group fairness of the candidates", plot_group_fairness(result)))
    if any(r.attrs.get("latency") for r in complete):
        figures.append(("latency", "Latency", plot_latency(result)))
    if reports_of(result):
        figures.append(("pruning", "Pruning", plot_pruning(result)))
        if any(r.forecasts for r in complete):
            figures.append(("forecasts", "Pruning forecasts against final values", plot_forecasts(result)))
    if result.checks():
        figures.append(("checks", "Checks on new data", plot_checks(result)))
    return figures


def export_pngs(figures: list[tuple[str, str, Any]], folder: str | Path, *, width: int = 1100) -> list[Path]:
    """Write each figure as ``<folder>/<key>.png`` (kaleido + Chrome / Chromium); returns the paths."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise PngExportError("PNG export needs kaleido: pip install kaleido (and a Chrome or Chromium, e.g. "
                             "apt-get install chromium)") from None
    import plotly.io as pio

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{key}.png" for key, _, _ in figures]
    try:
        pio.write_images([f for _, _, f in figures], paths, format="png", width=width,
                         height=[f.layout.height or 500 for _, _, f in figures])
    except (RuntimeError, OSError, *_browser_errors()) as err:  # no browser, or it could not start
        for path in paths:  # no half-written set
            path.unlink(missing_ok=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise PngExportError(f"PNG export failed ({type(err).__name__}: {err}); kaleido needs a Chrome or "
                             "Chromium: install one (apt-get install chromium) or set BROWSER_PATH to it") from None
    return paths


def _browser_errors() -> tuple[type[BaseException], ...]:
    """The exception types kaleido / choreographer raise when no usable browser is found."""
    found: list[type[BaseException]] = []
    try:
        from choreographer import errors

        found += [e for e in vars(errors).values() if isinstance(e, type) and issubclass(e, Exception)]
    except ImportError:
        pass
    return tuple(found) or (RuntimeError,)


def _esc(value: Any) -> str:  # text in the report's own HTML (attributes included): quotes escaped too
    return html.escape(str(value), quote=True)


def _cell(value: Any) -> str:
    """A table cell: a number at 4 significant digits with its exact value on hover (``title``), text left
    aligned and escaped, a missing value empty."""
    import numbers

    if value is None or value is _NA or (isinstance(value, float) and value != value):
        return "<td></td>"
    if isinstance(value, bool):
        return f"<td class='text'>{_esc(value)}</td>"
    if isinstance(value, numbers.Integral):
        return f"<td>{int(value)}</td>"
    if isinstance(value, numbers.Real):
        return f"<td title='{float(value)!r}'>{float(value):.4g}</td>"
    return f"<td class='text'>{_esc(value)}</td>"


def _table(frame) -> str:
    """``frame`` as an HTML table inside a box that scrolls sideways on a narrow screen."""
    head = "".join(f"<th class='text'>{_esc(str(c).removeprefix('params_')).replace('_', '_<wbr>')}</th>"
                   for c in frame.columns)  # a narrow screen breaks a header after its underscores
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>"
                   for row in frame.astype(object).itertuples(index=False, name=None))
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _version_line(result: Result) -> str:
    lineage = result.lineage
    if not lineage:
        return f"{result.version}"
    return (f"{result.version}, following {lineage['study']} (version {lineage['version']}): "
            + ("; ".join(lineage.get("changes") or []) or "no change recorded"))


def render_report(result: Result, figures: list[tuple[str, str, Any]] | None = None) -> str:
    """The report as one HTML string (``figures``: from :func:`report_figures`, computed if not given)."""
    figures = report_figures(result) if figures is None else figures
    info = result.info
    counts = result.summary()
    front = result.front()
    records = result.records()
    complete = [r for r in records if r.state == "COMPLETE"]
    prov = complete[-1].attrs.get("provenance") if complete else None

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>motune report: {_esc(result.name)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_esc(result.name)}</h1>",
        f"<p class='muted'>{_esc(info.get('description') or '')}</p>",
        "<h2>Study</h2><table>",
        "<tr><th class='text'>objectives</th><td class='text'>"
        + "<br>".join(_esc(o) for o in result.objectives) + "</td></tr>",
        "<tr><th class='text'>constraints</th><td class='text'>"
        + ("<br>".join(_esc(c) for c in result.constraints) or
           ("<br>".join(f"{_esc(k)} (Optuna's value; bound not recorded)" for k in result.constraint_keys)
            if result.foreign else "") or "none") + "</td></tr>",
        *([] if result.foreign else [  # a plain Optuna study records none of these: nothing made up
            f"<tr><th class='text'>version</th><td class='text'>{_esc(_version_line(result))}</td></tr>",
            f"<tr><th class='text'>task</th><td class='text'>{_esc(_task_line(info.get('task', {})))}</td></tr>",
            f"<tr><th class='text'>metrics measured on</th><td class='text'>{_esc(info.get('split', 'valid'))} "
            "split</td></tr>"]),
        "<tr><th class='text'>trials</th><td class='text'>"
        + _esc(", ".join(f"{k} {v}" for k, v in counts.items())) + "</td></tr></table>",
    ]
    if complete:
        parts.insert(4, summary_html(result))  # right under the title: what a decision needs
    if result.foreign:
        parts.insert(4, f"<p class='muted'>Not created by motune: read from Optuna's directions, metric names and "
                        f"constraint values. Missing: {_esc(info.get('missing', ''))}.</p>")
    if not figures:
        parts.append("<h2>Figures</h2><p>No completed trial yet.</p>")
    for i, (key, heading, fig) in enumerate(figures):
        wide = " wide" if key in WIDE_FIGURES else ""  # panels side by side: scroll, not squeeze, on a phone
        parts.append(f"<h2 id='{key}'>{_esc(heading)}</h2><div class='figure{wide}'>")
        parts.append(_narrow_texts(fig).to_html(full_html=False, include_plotlyjs=i == 0, div_id=f"fig-{key}",
                                                config={"responsive": True}))
        parts.append("</div>")
    parts.append(f"<h2>Front ({len(front)} feasible non-dominated trials)</h2>")
    for tied in _ties(front, [o.metric for o in result.objectives]):
        parts.append(f"<p class='muted'>Trials {_esc(', '.join(map(str, tied)))} tie on every objective: one "
                     "point of the front, not several (any of them is the same trade-off).</p>")
    parts.append(_table(front) if len(front) else "<p>No feasible trial yet.</p>")
    confirmations = result.confirmation_table()
    if len(confirmations):
        parts.append(f"<h2>Confirmation on the test split</h2><p class='muted'>{_esc(result.interval_note())}; "
                     "latency re-timed with nothing else of the study running</p>")
        parts.append(_table(confirmations))
    infeasible = result.infeasible_table()
    if len(infeasible):
        parts.append(f"<h2>Infeasible trials ({infeasible['trial'].nunique()})</h2><p class='muted'>each constraint "
                     "broken, and by how much (in the metric's units)</p>")
        parts.append(_table(infeasible))
    noisy = _noisy_latency(records)
    if len(noisy):
        parts.append(f"<h2>Noisy latency ({len(noisy)} trials)</h2><p class='muted'>measurements whose median "
                     "interval was wide: compare these latencies with care, or confirm them quietly</p>")
        parts.append(_table(noisy))
    if prov:
        parts.append("<h2>Provenance</h2><p class='muted'>of the latest completed trial</p>")
        parts.append(f"<pre>{_esc(json.dumps(prov, indent=2, sort_keys=True))}</pre>")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    made = f"; the study was recorded by motune {info['motune_version']}" if info.get("motune_version") else ""
    parts.append(f"<p class='muted'>Generated by motune {_esc(_installed_version())} on {stamp}{_esc(made)}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _lines(text: str, width: int = TEXT_LINE_CHARS) -> str:
    """``text`` (plotly's label HTML) with each line longer than ``width`` broken at ", " or a space."""
    out = []
    for line in text.split("<br>"):
        while len(line) > width:
            cut = max(line.rfind(", ", 0, width), line.rfind(": ", 0, width))
            cut = cut + 1 if cut > width // 3 else line.rfind(" ", 0, width)
            if cut <= 0:
                break
            out.append(line[:cut].rstrip())
            line = line[cut:].lstrip()
        out.append(line)
    return "<br>".join(out)


def _narrow_texts(fig: Any) -> Any:
    """A copy of ``fig`` whose title and annotations are broken into lines that fit a narrow figure."""
    fig = type(fig)(fig)
    title = fig.layout.title.text
    if title and len(title) > TEXT_LINE_CHARS:
        fig.update_layout(title_text=_lines(title), margin_t=max(fig.layout.margin.t or 80, 100))
    for note in fig.layout.annotations or ():
        if note.text and len(note.text) > TEXT_LINE_CHARS:
            note.text = _lines(note.text)
    return fig


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("motune")
    except PackageNotFoundError:
        return "(not installed)"


def _ties(front: Any, objectives: list[str]) -> list[list[int]]:
    """Groups of front trials with the same value of every objective (at 4 significant digits, as shown)."""
    if not len(front) or not all(o in front.columns for o in objectives):
        return []
    groups: dict[tuple, list[int]] = {}
    for _, row in front.iterrows():
        groups.setdefault(tuple(f"{row[o]:.4g}" for o in objectives), []).append(int(row["trial"]))
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _noisy_latency(records: list[Any]) -> Any:
    import pandas as pd

    rows = [{"trial": r.number, "flags": "; ".join((r.attrs.get("latency") or {}).get("flags") or [])}
            for r in records if r.state == "COMPLETE" and (r.attrs.get("latency") or {}).get("noisy")]
    return pd.DataFrame(rows, columns=["trial", "flags"])


def _task_line(task: dict[str, Any]) -> str:
    rows = task.get("rows", {})
    return (
        f"{task.get('name')}: label {task.get('label')} (positive {task.get('positive_label')}), "
        f"sensitive {task.get('sensitive')} {task.get('groups')}, rows train/valid/test "
        f"{rows.get('train')}/{rows.get('valid')}/{rows.get('test')}, data {task.get('fingerprint')}"
    )


def write_report(result: Result, path: str | Path, *, figures: list[tuple[str, str, Any]] | None = None) -> Path:
    """Write the report to ``path``; returns the path. ``figures``: from :func:`report_figures`
    (computed if not given; pass them to reuse them for :func:`export_pngs`)."""
    path = Path(path)
    path.write_text(render_report(result, figures), encoding="utf-8")
    return path
