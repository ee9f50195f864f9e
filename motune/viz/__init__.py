"""plotly figures from plain data gathered from a study, and the HTML report."""

from motune.viz.pareto import plot_pareto_front
from motune.viz.report import render_report, write_report

__all__ = ["plot_pareto_front", "render_report", "write_report"]
