"""The only bridge to Optuna: open storage, create or resume a study, run trials.

One trial: ``space(trial) -> params``; ``train(params, task, ctx) -> model``;
the study's metrics are measured on the model; constraint values are stored
with ``Trial.set_constraint`` (and, for optuna-dashboard 0.21, in the legacy
``constraints`` system attribute); metrics, the per-group table, latency and
robustness details and provenance are stored as user attributes; the
objective values are returned to Optuna. A trial that raises (or whose
objective or constraint metric is NaN) fails with its reason stored under the
``error`` user attribute, and the study goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from motune import provenance
from motune.frontier import STUDY_ATTR, Result
from motune.metrics.registry import MetricError, measure, non_finite
from motune.spec import SpecError, Study

DEFAULT_STORAGE = "sqlite:///motune.db"
LEGACY_CONSTRAINTS_ATTR = "constraints"  # what optuna-dashboard 0.21 reads


class StorageError(ValueError):
    """A storage that cannot be opened."""


REPORT_ATTR = "motune:report:{number}:{step}"  # trial system attr: one intermediate report


@dataclass
class TrialContext:
    """What ``train(params, task, ctx)`` gets besides params and task."""

    trial_number: int
    seed: int
    params: dict[str, Any]
    study_name: str
    _trial: optuna.Trial = field(repr=False)
    _study: Any = field(repr=False, default=None)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    pruned: str | None = None  # why a report pruned this trial (the trial ends pruned even if that was caught)

    def set_attr(self, key: str, value: Any) -> None:
        """Record a JSON-able value on the trial (stored as user attribute ``user:<key>``)."""
        self._trial.set_user_attr(f"user:{key}", _jsonable(value))

    def report(self, step: int, model: Any = None, *, metrics: dict[str, float] | None = None) -> dict[str, float]:
        """Report progress at ``step`` (an epoch, a boosting stage, a fidelity step; 0 = before training).

        With ``model``, motune measures the study's metrics on it: at step 0 the static ones
        (latency ...), later the objective and constraint metrics that need training (a later
        report also carries the step-0 static values, which training does not change). ``metrics``
        adds (or overrides) values you computed. The report is stored in the study's storage;
        the study's pruning policy may then end the trial by raising ``optuna.TrialPruned``
        (let it propagate; if it is caught, as a Trainer callback must, the trial still ends
        pruned when ``train`` returns). Returns the reported values.
        """
        return _report(self, step, model, metrics)


def storage_location(storage: Any = None) -> Any:
    """The storage a study uses: the argument, else ``$MOTUNE_STORAGE``, else ``sqlite:///motune.db``."""
    if storage is not None:
        return storage
    return os.environ.get("MOTUNE_STORAGE") or DEFAULT_STORAGE


def open_storage(storage: Any = None, *, must_exist: bool = False) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL (or a storage object, returned as it is).

    RDB storages get a heartbeat, so a trial whose process died is marked
    failed by the next worker instead of staying RUNNING forever. With
    ``must_exist``, a SQLite URL whose file is missing is an error instead of
    a new, empty database (for commands that only read).
    """
    storage = storage_location(storage)
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise TypeError(f"storage must be an Optuna storage URL or object, got {type(storage).__name__}")
    shown = redact_url(storage)
    if "://" not in storage:
        raise StorageError(f"cannot open storage {shown!r}: expected a URL such as sqlite:///motune.db "
                           "or postgresql://user@host/db")
    if must_exist and storage.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(storage).database
        if database and database != ":memory:" and not os.path.exists(database):
            raise StorageError(f"no SQLite database at {os.path.abspath(database)!r} (from {shown!r}); "
                               "run a study there first, or pass --storage / set MOTUNE_STORAGE")
    engine_kwargs = {"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else {"pool_pre_ping": True}
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                opened = optuna.storages.RDBStorage(
                    storage, engine_kwargs=engine_kwargs, heartbeat_interval=30, grace_period=120
                )
            if opened.engine.name == "sqlite":
                _use_wal(opened.engine)
            return opened
        except (IntegrityError, ProgrammingError) as err:
            # Workers starting together on an empty database race to create Optuna's tables;
            # the loser sees a duplicate-key error and finds the tables there on a retry.
            if attempt == 4:
                raise StorageError(f"cannot open storage {shown!r}: {_reason(err)}") from err
            time.sleep(0.2 * (attempt + 1))
        except Exception as err:  # sqlalchemy / driver errors: say which storage, and why
            raise StorageError(f"cannot open storage {shown!r}: {_reason(err)}") from err
    raise AssertionError("unreachable")


def _use_wal(engine: Any) -> None:
    """SQLite in write-ahead-log mode with ``synchronous=NORMAL``: commits without an fsync each,
    readers that do not block the writer (parallel trials, a dashboard). Committed trials survive
    a crash of the process; only a power loss can take the last few commits."""
    from sqlalchemy import event

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener reconnect with the pragmas


def _reason(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_study(study: Study) -> optuna.Study:
    """Create the Optuna study, or resume it when its stored spec matches this one."""
    storage = open_storage(study.storage)
    try:
        study_id = storage.get_study_id_from_name(study.name)
    except KeyError:
        study_id = None
    n_stored = 0
    if study_id is not None:
        _check_resumable(study, storage, study_id)
        n_stored = storage.get_n_trials(study_id)
    sampler = study.sampler
    if sampler is None:
        sampler = optuna.samplers.TPESampler(seed=sampler_seed(study.seed, storage, n_stored))
    ostudy = optuna.create_study(
        study_name=study.name, storage=storage, directions=study.directions, sampler=sampler, load_if_exists=True
    )
    if STUDY_ATTR not in ostudy.user_attrs:
        ostudy.set_user_attr(STUDY_ATTR, _jsonable(study_record(study)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names([o.metric for o in study.objectives])
    return ostudy


def sampler_seed(seed: int, storage: optuna.storages.BaseStorage, n_stored: int) -> int:
    """The default sampler's seed: ``seed`` itself for a new study on a one-machine storage
    (in memory, SQLite), so that a fresh run is reproducible. Otherwise ``seed`` mixed with the
    number of stored trials, the host and the process id, so that a resumed run, or workers
    sharing a study, do not re-suggest the configurations another run already tried."""
    backend = getattr(storage, "_backend", storage)
    one_machine = isinstance(backend, optuna.storages.InMemoryStorage) or (
        isinstance(backend, optuna.storages.RDBStorage) and backend.engine.name == "sqlite"
    )
    if one_machine and n_stored == 0:
        return seed
    mixed = hashlib.sha256(f"{seed}:{n_stored}:{platform.node()}:{os.getpid()}".encode()).hexdigest()
    return int(mixed[:8], 16)


def study_record(study: Study) -> dict[str, Any]:
    """What is stored about a study, so that it can be reopened and reported on from storage alone."""
    return {
        **study.spec_record(),
        "description": study.description,
        "task": study.task.summary(),
        "measured_metrics": study.measured_metrics,
        "metric_options": {k: dict(v) for k, v in study.metric_options.items()},
        "split": study.split,
        "seed": study.seed,
        "motune_version": provenance.environment()["versions"].get("motune"),
    }


def _check_resumable(study: Study, storage: optuna.storages.BaseStorage, study_id: int) -> None:
    stored = storage.get_study_user_attrs(study_id).get(STUDY_ATTR)
    where = redact_url(storage.url) if isinstance(getattr(storage, "url", None), str) else "storage"
    if stored is None:
        if storage.get_n_trials(study_id) > 0:
            raise SpecError(
                f"study {study.name!r} in {where} exists but was not created by motune; choose another name"
            )
        return
    ours = study.spec_record()
    theirs = {key: stored.get(key) for key in ours}
    if theirs != ours:
        if (theirs["objectives"], theirs["constraints"]) != (ours["objectives"], ours["constraints"]):
            what = f"was created with {_describe(theirs)}, but this definition has {_describe(ours)}"
        else:
            what = "was created with other " + " and ".join(
                {"data_fingerprint": "data (the task's rows, label, sensitive feature or splits)",
                 "split": f"a split to measure on ({theirs['split']!r}, now {ours['split']!r})",
                 "metric_options": f"metric options ({theirs['metric_options']}, now {ours['metric_options']})"}[k]
                for k in ("data_fingerprint", "split", "metric_options") if theirs[k] != ours[k]
            )
        raise SpecError(
            f"study {study.name!r} in {where} {what}. Resuming would mix incomparable trials: "
            "use a new study name, or delete the stored study "
            f"(optuna delete-study --study-name {study.name!r} --storage URL) to start over."
        )


def _describe(record: dict[str, Any]) -> str:
    objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in record["objectives"] or [])
    constraints = ", ".join(f"{c['metric']} {c['op']} {c['bound']:g}" for c in record["constraints"] or []) or "none"
    return f"objectives [{objectives}] and constraints [{constraints}]"


def optimize(
    study: Study,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    n_jobs: int = 1,
    show_progress: bool | None = None,
) -> Result:
    """Run trials of ``study``; see :meth:`motune.Study.optimize`."""
    from motune.progress import TrialProgress

    if n_trials is None and timeout is None:
        raise ValueError("give n_trials or timeout (or both); otherwise the study would run forever")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    progress = TrialProgress(study, total=n_trials, enabled=True if show_progress is None else show_progress)
    with _quiet_optuna(progress.enabled):
        ostudy = open_study(study)
    with _quiet_optuna(progress.enabled), progress:
        ostudy.optimize(
            lambda trial: run_trial(study, trial),
            n_trials=n_trials,
            timeout=timeout,
            n_jobs=n_jobs,
            catch=(Exception,),
            callbacks=[progress.on_trial_end],
        )
    return Result(ostudy)


@contextlib.contextmanager
def _quiet_optuna(quiet: bool):
    """While motune shows its own progress, Optuna's per-trial log lines are hushed."""
    if not quiet:
        yield
        return
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def run_trial(study: Study, trial: optuna.Trial) -> tuple[float, ...]:
    """One trial of ``study``: train, measure, record; returns the objective values."""
    try:
        params = study.space(trial)
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"space(trial) must return a dict of params or None (to use trial.params), "
                            f"got {type(params).__name__}")
        params = dict(trial.params) if params is None else dict(params)
        seed = study.seed + trial.number
        ctx = TrialContext(trial.number, seed, params, study.name, trial, study)
        began = time.perf_counter()
        model = study.train(params, study.task, ctx)
        trained = time.perf_counter()
        if ctx.pruned is not None:  # a report pruned the trial and its TrialPruned was caught (a Trainer callback)
            raise optuna.TrialPruned(ctx.pruned)
        if model is None:
            raise TypeError("train() returned None; it must return the fitted model")
        measured = measure(model, study.task, study.measured_metrics, options=study.metric_options, split=study.split)
        done = time.perf_counter()
        values = measured.values
        needed = [o.metric for o in study.objectives] + [c.metric for c in study.constraints]
        bad = non_finite(values, needed)
        if bad:
            raise MetricError("not a finite number: " + ", ".join(f"{n}={values[n]}" for n in bad))
        violations = [c.violation(values[c.metric]) for c in study.constraints]
        inherited = _inherited_system_attrs(trial)
        for constraint, violation in zip(study.constraints, violations):
            key = f"constraints:{constraint.key}"
            if key in inherited:  # a retry carries the crashed trial's value; set_constraint would keep it
                trial.storage.set_trial_system_attr(trial._trial_id, key, violation)
            else:
                trial.set_constraint(constraint.key, violation)
        user_attrs = {
            "metrics": values,
            **measured.details,
            "timing": {"train_s": trained - began, "measure_s": done - trained},
            "provenance": provenance.collect(task=study.task, seed=seed),
        }
        # optuna-dashboard 0.21 reads only the legacy `constraints` list (see Study.dashboard_constraints).
        system_attrs = {LEGACY_CONSTRAINTS_ATTR: violations} if violations and _legacy_constraints(study) else {}
        store_trial_attrs(trial, _jsonable(user_attrs), system_attrs)
        return tuple(values[o.metric] for o in study.objectives)
    except optuna.TrialPruned:
        raise
    except Exception as err:
        trial.set_user_attr("error", f"{type(err).__name__}: {err}")
        trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
        raise


def _inherited_system_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """System attributes a retried trial was created with (Optuna's retry callbacks copy the
    failed trial's, ``constraints:*`` included); empty for a trial that is not a retry."""
    cached = getattr(trial, "_cached_frozen_trial", None)
    attrs = cached.system_attrs if cached is not None else trial.storage.get_trial_system_attrs(trial._trial_id)
    return dict(attrs) if "failed_trial" in attrs else {}


def _report(ctx: TrialContext, step: int, model: Any, metrics: dict[str, float] | None) -> dict[str, float]:
    from motune.pruning import PeerReport, ReportContext

    study: Study = ctx._study
    trial = ctx._trial
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    step = int(step)
    if ctx.history and step <= ctx.history[-1][0]:
        raise ValueError(f"steps must increase within a trial: got {step} after {ctx.history[-1][0]}")
    if ctx.pruned is not None:
        raise ValueError(f"this trial was pruned ({ctx.pruned}); it cannot report again")
    values: dict[str, float] = {}
    if model is not None:
        static = set(study.static_metrics)
        needed = [o.metric for o in study.objectives] + [c.metric for c in study.constraints]
        names = [n for n in dict.fromkeys(needed) if (n in static) == (step == 0)]
        if names:
            measured = measure(model, study.task, names, options=study.metric_options, split=study.split).values
            values.update({n: measured[n] for n in names})
    for name, value in (metrics or {}).items():
        values[str(name)] = float(value)
    if not values:
        raise ValueError("ctx.report needs a model to measure or metrics={...} (at step 0 with a model, "
                         "only static metrics such as latency are measured, and this study has none)")
    if step > 0 and ctx.history and ctx.history[0][0] == 0:
        # static metrics (latency ...) do not change with training: later reports carry the step-0
        # values, so rules that rank on every objective (successive halving) can use them
        static = set(study.static_metrics)
        values = {**{n: v for n, v in ctx.history[0][1].items() if n in static}, **values}
    bad = non_finite(values, values)
    if bad:
        raise MetricError("reported values are not finite numbers: " + ", ".join(f"{n}={values[n]}" for n in bad))
    trial.storage.set_trial_system_attr(trial._trial_id, REPORT_ATTR.format(number=trial.number, step=step), values)
    policy = study.pruning_policy
    decision = None
    if policy is not None:
        peers = []
        for t in trial.study.get_trials(deepcopy=False):
            if t.number == trial.number:
                continue
            report = t.system_attrs.get(REPORT_ATTR.format(number=t.number, step=step))
            if report is not None:
                final = t.user_attrs.get("metrics") if t.state == optuna.trial.TrialState.COMPLETE else None
                peers.append(PeerReport(t.number, t.state.name, report, final))
        decision = policy.decide(ReportContext(step, values, list(ctx.history), peers, study.objectives,
                                               study.constraints, frozenset(study.static_metrics)))
    ctx.history.append((step, values))
    if decision is not None:
        trial.set_user_attr("pruned", {"rule": decision.rule, "reason": decision.reason, "step": step,
                                       "reports": len(ctx.history)})
        ctx.pruned = f"{decision.rule}: {decision.reason}"
        raise optuna.TrialPruned(ctx.pruned)
    return values


def _legacy_constraints(study: Study) -> bool:
    if study.dashboard_constraints is not None:
        return study.dashboard_constraints
    # GPSampler models each constraint value separately: the legacy copy would count each twice.
    return not isinstance(study.sampler, getattr(optuna.samplers, "GPSampler", ()))


def store_trial_attrs(trial: optuna.Trial, user_attrs: dict[str, Any], system_attrs: dict[str, Any]) -> None:
    """Store a trial's attributes in one transaction on an RDB storage, one by one elsewhere.

    Optuna has no public batch write, and its RDB storage spends about a
    millisecond per attribute (a lookup of the trial, a state check, an upsert,
    a commit). On an RDB storage motune checks the trial's state once and inserts
    all new attributes in one transaction through the storage's own tables; an
    attribute that already exists (a retried trial inherits its predecessor's)
    or any other storage goes through the public, one-by-one path.
    """
    backend = getattr(trial.storage, "_backend", trial.storage)  # _CachedStorage wraps the RDBStorage
    if isinstance(backend, optuna.storages.RDBStorage):
        try:
            existing = _insert_trial_attrs(backend, trial._trial_id, user_attrs, system_attrs)
        except ImportError:  # an Optuna whose private RDB layout moved: the public path still works
            existing = (set(user_attrs), set(system_attrs))
        user_attrs = {k: v for k, v in user_attrs.items() if k in existing[0]}
        system_attrs = {k: v for k, v in system_attrs.items() if k in existing[1]}
    for key, value in system_attrs.items():
        trial.storage.set_trial_system_attr(trial._trial_id, key, value)
    for key, value in user_attrs.items():
        trial.set_user_attr(key, value)


def _insert_trial_attrs(backend: Any, trial_id: int, user_attrs: dict[str, Any],
                        system_attrs: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Insert the attributes the trial does not have yet in one transaction; return the keys
    (user, system) that already existed, for the caller to update one by one."""
    import json

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy import insert, select

    existing: list[set[str]] = []
    with _create_scoped_session(backend.scoped_session) as session:
        state = session.execute(
            select(models.TrialModel.state).where(models.TrialModel.trial_id == trial_id)
        ).scalar_one()
        backend.check_trial_is_updatable(trial_id, state)
        for model, attrs in ((models.TrialUserAttributeModel, user_attrs),
                             (models.TrialSystemAttributeModel, system_attrs)):
            if not attrs:
                existing.append(set())
                continue
            there = set(session.execute(
                select(model.key).where(model.trial_id == trial_id, model.key.in_(list(attrs)))
            ).scalars())
            rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                    for k, v in attrs.items() if k not in there]
            if rows:
                session.execute(insert(model), rows)
            existing.append(there)
    return existing[0], existing[1]


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN / inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def load_study(name: str, *, storage: Any = None) -> Result:
    """Reopen a finished or running study from its storage alone."""
    opened = open_storage(storage, must_exist=True)
    try:
        opened.get_study_id_from_name(name)
    except KeyError:
        names = [s.study_name for s in opened.get_all_studies()]
        raise SpecError(
            f"no study named {name!r} in {redact_url(str(getattr(opened, 'url', 'storage')))}; "
            f"studies there: {names or 'none'}"
        ) from None
    return Result(optuna.load_study(study_name=name, storage=opened))
