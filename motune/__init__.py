"""motune: multi-objective hyperparameter tuning with first-class constraints.

>>> import motune as mt
>>> task = mt.data.adult(sensitive="sex")
>>> study = mt.Study(name="adult", task=task, space=space, train=train,
...                  objectives=[mt.maximize("accuracy"), mt.minimize("latency_p95_ms")],
...                  constraints=[mt.at_most("equalized_odds_difference", 0.10)])
>>> result = study.optimize(n_trials=30)
>>> result.front()
"""

from importlib import metadata as _metadata

from motune import data, errors, integrations, metrics, pruning, viz
from motune.confirm import confirm
from motune.errors import (
    ArtifactError,
    CallbackError,
    MetricError,
    MotuneError,
    OutputError,
    SelectionError,
    SpecError,
    SpecTypeError,
    StorageError,
    StudyFileError,
    StudyNotFoundError,
    TaskError,
    UnknownMetricError,
)
from motune.export import export_decision, load_exported
from motune.metrics.registry import Measurement, register_metric
from motune.monitoring.check import check
from motune.results import DecisionRecord, Result, TrialRecord
from motune.run import DEFAULT_STORAGE, Callback, ReportRecord, StudyStart, TrialContext, TrialStart, load_study
from motune.selection import Choice, decide, make_current, rules, select
from motune.spec import Constraint, Objective, Study, at_least, at_most, maximize, minimize
from motune.task import NumericSplits, Task, TextTask

try:
    __version__ = _metadata.version("motune")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "DEFAULT_STORAGE",
    "ArtifactError",
    "Callback",
    "CallbackError",
    "Choice",
    "Constraint",
    "DecisionRecord",
    "Measurement",
    "MetricError",
    "MotuneError",
    "NumericSplits",
    "Objective",
    "OutputError",
    "ReportRecord",
    "Result",
    "SelectionError",
    "SpecError",
    "SpecTypeError",
    "StorageError",
    "Study",
    "StudyFileError",
    "StudyNotFoundError",
    "StudyStart",
    "Task",
    "TaskError",
    "TextTask",
    "TrialContext",
    "TrialRecord",
    "TrialStart",
    "UnknownMetricError",
    "__version__",
    "at_least",
    "at_most",
    "check",
    "confirm",
    "data",
    "decide",
    "make_current",
    "errors",
    "export_decision",
    "integrations",
    "load_exported",
    "load_study",
    "maximize",
    "metrics",
    "minimize",
    "pruning",
    "register_metric",
    "rules",
    "select",
    "viz",
]
