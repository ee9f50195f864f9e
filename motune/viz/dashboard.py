"""motune's figures in optuna-dashboard: the constraint-aware front and the decision.

optuna-dashboard 0.21 computes its "Best Trials" and its Pareto-front plot
without constraints (an infeasible trial can carry the badge; the decided
trial may not). It shows figures a program saves to the study with
``optuna_dashboard.save_plotly_graph_object`` on the study's page: motune
saves its own Pareto front there (feasible front, infeasible and pruned
trials apart, the current decision starred) under fixed ids, so each save
replaces the last. ``motune run`` and ``motune decide`` save them; from
Python, call :func:`save_dashboard_figures` after ``optimize`` or
``decide``. Without optuna-dashboard installed nothing is saved.
"""

from __future__ import annotations

from typing import Any

from motune.viz._common import as_result
from motune.viz.pareto import plot_pareto_front, plot_pareto_pairs

FRONT_ID = "motune-front"  # the dashboard's graph-object ids (valid HTML ids): each save replaces the last
PAIRS_ID = "motune-front-pairs"


def save_dashboard_figures(study: Any) -> list[str]:
    """Save motune's front (and, with three objectives or more, its pairs) to the study for
    optuna-dashboard; returns the ids saved (empty without optuna-dashboard or a completed trial)."""
    try:
        from optuna_dashboard import save_plotly_graph_object
    except ImportError:
        return []
    result = as_result(study)
    if not any(r.state == "COMPLETE" for r in result.records()):
        return []
    decision = result.decision
    suffix = f"; decision {decision.number}: trial {decision.trial} (star)" if decision is not None else ""
    saved = []
    front = plot_pareto_front(result)
    front.update_layout(title=f"motune: feasible front of {result.name} (constraints applied){suffix}")
    saved.append(save_plotly_graph_object(result.study, front, graph_object_id=FRONT_ID))
    if len(result.objectives) >= 3:
        pairs = plot_pareto_pairs(result)
        pairs.update_layout(title=f"motune: pairs of objectives, feasible front of {result.name}{suffix}")
        saved.append(save_plotly_graph_object(result.study, pairs, graph_object_id=PAIRS_ID))
    return saved


__all__ = ["FRONT_ID", "PAIRS_ID", "save_dashboard_figures"]
