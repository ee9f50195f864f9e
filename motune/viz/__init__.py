"""plotly figures from plain data gathered from a study, and the HTML report.

Every figure takes a :class:`motune.Result`, an ``optuna.Study`` or a
``motune.Study`` and returns a ``plotly.graph_objects.Figure``; each is built
in two steps (an ``_get_..._info`` function gathering plain data, then
drawing), so the data part is tested without pixels.
"""

from motune.viz.checks import plot_checks
from motune.viz.groups import plot_group_fairness
from motune.viz.history import plot_hypervolume_history, reference_point
from motune.viz.latency import plot_latency
from motune.viz.notebook import notebook_figures
from motune.viz.pareto import plot_pareto_front
from motune.viz.pruning import plot_forecasts, plot_pruning
from motune.viz.report import PngExportError, export_pngs, render_report, report_figures, write_report
from motune.viz.tradeoffs import plot_parallel_coordinates, plot_param_importances

__all__ = [
    "PngExportError",
    "export_pngs",
    "notebook_figures",
    "plot_checks",
    "plot_forecasts",
    "plot_group_fairness",
    "plot_hypervolume_history",
    "plot_latency",
    "plot_parallel_coordinates",
    "plot_param_importances",
    "plot_pareto_front",
    "plot_pruning",
    "reference_point",
    "render_report",
    "report_figures",
    "write_report",
]
