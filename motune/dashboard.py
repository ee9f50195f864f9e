"""The study's note in optuna-dashboard: what the study optimises, under which constraints, and what
was decided.

optuna-dashboard shows a Markdown note per study (its ``save_note`` API,
stored as study system attributes). motune writes one when a study is
created or reopened and after each decision (only when the text changed);
without optuna-dashboard installed, nothing is written. The note's last line
is a marker the dashboard does not show (a Markdown link definition): a note
without it (written or edited by a person who removed the line) is left as it
is. What the dashboard still gets wrong is said in the note itself: it reads
only the legacy ``constraints`` list for feasibility and computes its "Best
Trials" without constraints, so an infeasible trial can carry its badge;
motune's front (``motune front NAME``, and the figure
:mod:`motune.viz.dashboard` saves on the study's page) holds only feasible
trials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from motune import _schema

MARKER = "[//]: # (written by motune; remove this line to keep your edits)"  # a Markdown link definition:
# the dashboard shows nothing of it (an HTML comment it escaped, and showed as text)
OLD_MARKERS = ("<!-- written by motune; remove this line to keep your edits -->",)  # notes of earlier versions


def note_text(study_name: str, study_attrs: Mapping[str, Any]) -> str:
    """The note: objectives, constraints, how reports and metrics appear, and the current decision."""
    record = _schema.read_study_record(study_attrs) or {}
    lines = [f"## {study_name} (motune)", ""]
    if record.get("description"):
        lines += [str(record["description"]), ""]
    objectives = [f"{o['direction']} `{o['metric']}`" for o in record.get("objectives", [])]
    constraints = [f"`{c['metric']} {c['op']} {c['bound']}`" for c in record.get("constraints", [])]
    lines += [f"**Objectives:** {', '.join(objectives) or 'none recorded'}",
              f"**Constraints:** {', '.join(constraints) or 'none'}", ""]
    first = record.get("objectives", [{}])[0].get("metric") if record.get("objectives") else None
    lines += [f"Learning curves are the first objective (`{first}`) at each report; every metric of a completed "
              "trial is a sortable user attribute `metric:<name>`.", "",
              "The dashboard's *Best Trials* ignore constraints: an infeasible trial may carry its badge. "
              "motune's front holds only feasible trials: `motune front " + study_name + "`, and the figure "
              "*motune: feasible front* below.", ""]
    current, statement = _schema.current_decision(study_attrs)
    if current is not None:
        if statement is not None:
            lines += [f"Decision {current['number']} is current: {statement.get('why', '')} "
                      f"({statement.get('by', '?')}, {statement.get('at', '')})", ""]
        lines += [f"**Decision {current['number']}** ({current.get('decided_at', '')}, by "
                  f"{current.get('decided_by', '?')}): trial {current.get('trial')} by `{current.get('rule')}`: "
                  f"{current.get('reason', '')}", "", f"Why: {current.get('rationale', '')}"]
    else:
        lines.append("No decision recorded yet (`motune decide`).")
    return "\n".join([*lines, "", MARKER]) + "\n"


def save_study_note(study: Any) -> bool:
    """Write the study's note for optuna-dashboard when it changed; ``False`` when optuna-dashboard is
    not installed."""
    try:
        from optuna_dashboard import get_note, save_note
    except ImportError:
        return False
    text = note_text(study.study_name, study.user_attrs)
    current = get_note(study)
    if current and not any(m in current for m in (MARKER, *OLD_MARKERS)):
        return True  # a person's note: kept
    if current != text:
        save_note(study, text)
    return True
