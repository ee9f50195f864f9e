"""The only bridge to Optuna: storage, creating and resuming studies, one trial, the trial context and its
reports, callbacks, progress, signals, and the shims for Optuna's private parts.

=====================  ======================================================================
module                 idea
=====================  ======================================================================
``location``           where a study lives, resolved once: storage, heartbeat, artifact store
``storage``            storage URLs; SQLite settings; the heartbeat; URL redaction
``study``              create or resume a study (spec check), its stored record, ``load_study``
``sampling``           the default sampler, seeded per trial number; the sampler's view of trials
``seeding``            trial seeds (torch, numpy, random) and why they differ from sampler seeds
``trial``              one trial: suggest, seed, train, measure, store
``context``            ``TrialContext`` and ``ctx.report`` (pruning decisions); ``report_step`` and
                       ``record_values``, the public calls integrations store a trial's values with
``artifacts``          kept models and attached files in Optuna's artifact store, hash-checked
``callbacks``          the callback protocol (plain records) beside Optuna's callbacks
``progress``           progress output, the first motune callback
``interrupt``          SIGINT / SIGTERM / ``sys.exit`` in ``train``: no trial left RUNNING
``optimize``           a run in this process: arguments, the loop, the stale-trial watch, the result
``supervisor``         one supervisor for many workers: tickets, stop, deaths, retries, progress
``pool``               its launcher for worker processes on this machine (CPU or one per GPU)
``cluster``            its launcher for Ray actors on a cluster
``_optuna_compat``     the one place that touches Optuna's private parts
=====================  ======================================================================

The line between public and private: code outside ``motune.run`` (the CLI,
the integrations, export, the live view) imports only the names below, from
``motune.run`` itself, never a module inside it (``tests/test_structure.py``
holds this); the modules are this room's own business.
"""

from motune.run.artifacts import attach_files, download_archive
from motune.run.callbacks import Callback, ReportRecord, StudyStart, TrialStart
from motune.run.cluster import run_on_ray
from motune.run.context import TrialContext, record_values, report_step
from motune.run.optimize import check_run_arguments, optimize
from motune.run.pool import apply_threads, plan_workers, run_pool, worker_loop
from motune.run.sampling import SamplerView
from motune.run.storage import DEFAULT_STORAGE, open_storage, redact_text, redact_url, storage_location, storage_name
from motune.run.study import load_study, open_study

__all__ = [
    "DEFAULT_STORAGE",
    "Callback",
    "ReportRecord",
    "SamplerView",
    "StudyStart",
    "TrialContext",
    "TrialStart",
    "apply_threads",
    "attach_files",
    "check_run_arguments",
    "download_archive",
    "load_study",
    "open_storage",
    "open_study",
    "optimize",
    "plan_workers",
    "record_values",
    "redact_text",
    "redact_url",
    "report_step",
    "run_on_ray",
    "run_pool",
    "storage_location",
    "storage_name",
    "worker_loop",
]
