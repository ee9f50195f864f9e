"""The only bridge to Optuna: storage, creating and resuming studies, one trial, the trial context and its
reports, callbacks, progress, signals, and the shims for Optuna's private parts.

=====================  ======================================================================
module                 idea
=====================  ======================================================================
``storage``            where a study is stored; SQLite settings; the heartbeat; URL redaction
``study``              create or resume a study (spec check), its stored record, ``load_study``
``sampling``           the default sampler, seeded per trial number
``trial``              one trial: suggest, seed, train, measure, store
``context``            ``TrialContext`` and ``ctx.report`` (pruning decisions); ``report_step`` and
                       ``record_values``, the public calls integrations store a trial's values with
``callbacks``          the callback protocol (plain records) beside Optuna's callbacks
``progress``           progress output, the first motune callback
``interrupt``          SIGINT / SIGTERM / ``sys.exit`` in ``train``: no trial left RUNNING
``optimize``           a run: arguments, the loop, the stale-trial watch, the result
``_optuna_compat``     the one place that touches Optuna's private parts
=====================  ======================================================================
"""

from motune.run.callbacks import Callback, ReportRecord, StudyStart, TrialStart
from motune.run.context import TrialContext, record_values, report_step
from motune.run.optimize import optimize
from motune.run.storage import DEFAULT_STORAGE, open_storage, redact_url, storage_location
from motune.run.study import load_study, open_study

__all__ = [
    "DEFAULT_STORAGE",
    "Callback",
    "ReportRecord",
    "StudyStart",
    "TrialContext",
    "TrialStart",
    "load_study",
    "open_storage",
    "open_study",
    "optimize",
    "record_values",
    "redact_url",
    "report_step",
    "storage_location",
]
