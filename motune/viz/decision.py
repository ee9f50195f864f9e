"""The decision part of the report: the current decision, or the candidates to decide between.

:func:`candidates` names the trials worth comparing: the current decision's,
the knee and the best front trial on each objective (by
:mod:`motune.selection`, on confirmed test values when every front trial is
confirmed). :func:`summary_html` shows them side by side, validation next to
test with intervals, so the page opens on what a decision needs.
"""

from __future__ import annotations

import html
from typing import Any

from motune.errors import MotuneError
from motune.results import Result, interval_text
from motune.selection import rules, select


def candidates(result: Result) -> dict[int, list[str]]:
    """Trial number -> labels ("chosen (decision 2)", "knee", "best accuracy" ...), in that order."""
    out: dict[int, list[str]] = {}
    decision = result.decision
    if decision is not None:
        out.setdefault(decision.trial, []).append(f"chosen (decision {decision.number})")
    picks = [("knee", rules.knee())] + [(f"best {o.metric}", rules.lexicographic([o.metric]))
                                        for o in result.objectives]
    for label, rule in picks:
        try:
            out.setdefault(select(result, rule).trial, []).append(label)
        except MotuneError:  # no front yet, or nothing passes on test
            break
    return out


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(record: Any, metric: str) -> str:
    validation = record.metrics.get(metric)
    text = "n/a" if validation is None else f"{validation:.4g}"
    test = ((record.confirmation or {}).get("values") or {}).get(metric)
    if test is not None:
        value, _, interval = interval_text(test).partition(" ")
        text += f" &rarr; <b>{_esc(value)}</b> {_esc(interval)}"
    return text


def _decision_notes(decision: Any) -> list[str]:
    """What the intervals and flags said of the decision, and every latency value it used (interval, flag,
    the host's load and speed while it was timed)."""
    parts = []
    if decision.indistinguishable:
        parts.append(f"<p>Not to be told apart from trial {decision.trial} on {_esc(', '.join(decision.deciding or []))} "
                     f"by their intervals: trial(s) {_esc(', '.join(map(str, decision.indistinguishable)))}.</p>")
    if decision.accepted_noisy:
        flagged = "; ".join(f"trial {n} {m}: {why}" for n, f in (decision.flagged or {}).items() for m, why in f.items())
        parts.append(f"<p><b>Decided on values flagged as noisy</b>, accepted by {_esc(decision.decided_by)}: "
                     f"{_esc(flagged)}.</p>")
    facts = decision.latency or {}
    if facts:
        rows = ["<tr><th class='text'>latency used</th><th>value [interval]</th><th class='text'>run</th>"
                "<th>load (1, 5, 15 min)</th><th>in kernel units</th></tr>"]
        for metric, f in facts.items():
            value = interval_text({"value": f["value"], "low": f.get("low"), "high": f.get("high")})
            run = ("flagged: " + "; ".join(f.get("flags") or [])) if f.get("noisy") else "not flagged"
            load = ", ".join(f"{v:.2f}" for v in f.get("load_average") or []) or "n/a"
            units = ((f.get("speed") or {}).get("normalised") or {}).get(metric)
            rows.append(f"<tr><th class='text'>{_breakable(metric)}</th><td>{_esc(value)}</td><td class='text'>{_esc(run)}"
                        f"</td><td>{_esc(load)}</td><td>{'n/a' if units is None else f'{units:.4g}'}</td></tr>")
        parts.append("<div class='scroll'><table class='latency-used'>" + "".join(rows) + "</table></div>")
    return parts


def _breakable(name: Any) -> str:
    """A metric name that a narrow screen may break after its underscores (never inside a word)."""
    return _esc(name).replace("_", "_<wbr>")


def _param(name: str, value: Any) -> str:
    """``name=value``, a float at 4 significant digits with its exact value on hover."""
    if isinstance(value, float):
        return f"<span title='{_esc(repr(value))}'>{_esc(name)}={value:.4g}</span>"
    return f"{_esc(name)}={_esc(value)}"


def summary_html(result: Result) -> str:
    """The report's first section (HTML; every user text escaped)."""
    front = [r for r in result.records() if r.on_front]
    confirmed = [r for r in front if r.confirmation]
    failing = [r.number for r in confirmed if r.confirmation.get("fails_on_test")]
    status = (f"{len(confirmed)} of {len(front)} front trials confirmed on the test split"
              + (f"; trial(s) {', '.join(map(str, failing))} fail a constraint on test" if failing else "")
              + ("" if confirmed else " (run <code>motune confirm</code> to re-measure them on held-out data)"))
    parts = ["<section id='decision'>"]
    decision = result.decision
    if decision is not None:
        stated = decision.made_current
        parts.append(f"<h2>Decision {decision.number} (current): trial {decision.trial}</h2>")
        parts.append(f"<p>{_esc(decision.reason)} (rule <code>{_esc(decision.rule)}</code> on "
                     f"{_esc(decision.values_used)} values). <b>Why:</b> {_esc(decision.rationale)} &mdash; "
                     f"{_esc(decision.decided_by)}, {_esc(decision.decided_at)}.</p>")
        if stated:
            parts.append(f"<p>Made current by {_esc(stated.get('by'))} on {_esc(stated.get('at'))}: "
                         f"{_esc(stated.get('why'))} (of {len(result.decisions())} decisions).</p>")
        parts += _decision_notes(decision)
    else:
        parts.append("<h2>No decision yet</h2><p>The candidates below are what the stated rules would choose; "
                     "record one with <code>motune decide</code>.</p>")
    parts.append(f"<p class='muted'>{status}. Cells: {_esc(result.interval_note())}.</p>")
    chosen = candidates(result)
    if chosen:
        records = {r.number: r for r in result.records()}
        header = "".join(f"<th>trial {n}<br><span class='muted'>{_esc('; '.join(labels))}</span></th>"
                         for n, labels in chosen.items())
        rows = [f"<tr><th class='text'>metric</th>{header}</tr>"]
        for metric in result.metric_columns():
            rows.append(f"<tr><th class='text'>{_breakable(metric)}</th>"
                        + "".join(f"<td>{_cell(records[n], metric)}</td>" for n in chosen) + "</tr>")
        rows.append("<tr><th class='text'>params</th>" + "".join(
            f"<td class='text'>{', '.join(_param(k, v) for k, v in records[n].params.items())}</td>"
            for n in chosen) + "</tr>")
        parts.append("<div class='scroll'><table class='candidates'>" + "".join(rows) + "</table></div>")
    parts.append("</section>")
    return "\n".join(parts)
