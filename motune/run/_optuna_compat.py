"""The one place that touches Optuna's private parts.

Each helper has a public fallback that runs when the private path fails in
any way (an Optuna release that moved a name, changed a table, renamed an
attribute), not only on ``ImportError``; ``tests/test_run_optuna_compat.py`` runs
both paths. What is private, and why:

- :func:`trial_id`: the storage id of a ``Trial`` (``_trial_id``), so that
  motune can write system attributes (reports, a retry's own constraint
  values) that ``Trial`` has no public setter for. Fallback: look the id up
  by study name and trial number through the storage's public methods.
- :func:`storage_of` / :func:`backend`: a study's storage (``_storage``) and
  the RDB storage behind Optuna's ``_CachedStorage`` wrapper (``_backend``).
- :func:`insert_trial_attrs`: one transaction for all of a trial's new
  attributes through the RDB storage's own tables (Optuna writes one
  attribute per transaction, about a millisecond each). Fallback: the public
  one-by-one setters.
- :func:`frozen_system_attrs`: the system attributes a running trial was
  created with, from ``Trial``'s cached frozen trial. Fallback: the storage.
- :func:`request_stop`: ``Study.stop`` from a signal handler or a thread
  outside the optimize loop (``_stop_flag``). Fallback: ``Study.stop()``.
- :func:`artifact_folder`: the folder of a ``FileSystemArtifactStore``
  (``_base_path``), so that a study's record can say where its models are.
  Fallback: the store is recorded by its class only.
- :class:`HeartbeatRDBStorage`: an ``RDBStorage`` whose stale-trial lookup
  (``_get_stale_trial_ids``, called by Optuna's public ``fail_stale_trials``)
  first records why the trial failed (``fail_reason``), and leaves out the
  trials this process is running (:func:`live_trial`). If a release renames
  the method, stale trials are still failed and retried, only without the
  reason (``tests/test_faults.py`` would then fail). Its storage calls retry
  a lost database connection (``engine`` disposed, new connections) for
  :func:`reconnect_s` seconds.
- :class:`StudyView`: a study whose trial lists (``get_trials`` and the
  private ``_get_trials`` Optuna's samplers call) pass through a function
  that may replace a trial, everything else delegated; the sampler wrapper
  of :mod:`motune.run.sampling` shows pruned trials through it. If a release
  stops calling ``_get_trials``, the samplers see the trials as stored (no
  error; ``tests/test_pruning.py`` checks that TPE reads the view).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from typing import Any

import optuna

from motune import _schema


def trial_id(trial: Any) -> int:
    """The storage id of a ``Trial``."""
    try:
        return int(trial._trial_id)
    except Exception:  # noqa: BLE001
        storage = trial.storage
        return storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(trial.study.study_name), trial.number)


def storage_of(study: optuna.Study) -> Any:
    """The storage a ``Study`` reads and writes (``None`` if it cannot be found)."""
    try:
        return study._storage
    except Exception:  # noqa: BLE001
        return None


def backend(storage: Any) -> Any:
    """The storage behind Optuna's cache wrapper (the RDBStorage), or the storage itself."""
    return getattr(storage, "_backend", storage)


def frozen_system_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """The system attributes a running trial carries (a retry inherits its predecessor's)."""
    try:
        return dict(trial._cached_frozen_trial.system_attrs)
    except Exception:  # noqa: BLE001
        return dict(trial.storage.get_trial_system_attrs(trial_id(trial)))


def request_stop(study: optuna.Study) -> None:
    """Ask ``study.optimize`` to start no further trial (safe from a signal handler and from threads
    outside the optimize loop, where ``Study.stop`` refuses)."""
    if hasattr(study, "_stop_flag"):
        study._stop_flag = True
        return
    try:
        study.stop()
    except RuntimeError:  # outside the optimize loop: nothing to stop
        pass


def set_system_attr(trial: Any, key: str, value: Any) -> None:
    """Set a system attribute of a running trial (Optuna's ``Trial`` has no public setter)."""
    trial.storage.set_trial_system_attr(trial_id(trial), key, value)


def set_intermediate_value(trial: Any, step: int, value: float) -> None:
    """An Optuna intermediate value of a running trial, through the storage (``Trial.report`` refuses
    multi-objective studies; the storage does not)."""
    trial.storage.set_trial_intermediate_value(trial_id(trial), step, float(value))


def write_trial_attrs(trial: optuna.Trial, user_attrs: dict[str, Any], system_attrs: dict[str, Any]) -> None:
    """Store a trial's attributes, new ones in one transaction on an RDB storage.

    An attribute the trial already has (a retried trial inherits its predecessor's), any other
    storage, and any failure of the private path go through the public one-by-one setters.
    """
    rdb = backend(trial.storage)
    if isinstance(rdb, optuna.storages.RDBStorage) and _PRIVATE_INSERT[0]:
        try:
            existing = insert_trial_attrs(rdb, trial_id(trial), user_attrs, system_attrs)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise
        except Exception:  # noqa: BLE001  (a moved table or name: the public path still works)
            existing = (set(user_attrs), set(system_attrs))
        user_attrs = {k: v for k, v in user_attrs.items() if k in existing[0]}
        system_attrs = {k: v for k, v in system_attrs.items() if k in existing[1]}
    for key, value in system_attrs.items():
        set_system_attr(trial, key, value)
    for key, value in user_attrs.items():
        trial.set_user_attr(key, value)


_PRIVATE_INSERT = [True]  # tests switch this off to run the public path


def insert_trial_attrs(rdb: Any, trial_id_: int, user_attrs: dict[str, Any],
                       system_attrs: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Insert the attributes the trial does not have yet in one transaction; return the keys
    (user, system) that already existed, for the caller to update one by one."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy import insert, select

    existing: list[set[str]] = []
    with _create_scoped_session(rdb.scoped_session) as session:
        state = session.execute(
            select(models.TrialModel.state).where(models.TrialModel.trial_id == trial_id_)
        ).scalar_one()
        rdb.check_trial_is_updatable(trial_id_, state)
        for model, attrs in ((models.TrialUserAttributeModel, user_attrs),
                             (models.TrialSystemAttributeModel, system_attrs)):
            if not attrs:
                existing.append(set())
                continue
            there = set(session.execute(
                select(model.key).where(model.trial_id == trial_id_, model.key.in_(list(attrs)))
            ).scalars())
            rows = [{"trial_id": trial_id_, "key": k, "value_json": json.dumps(v)}
                    for k, v in attrs.items() if k not in there]
            if rows:
                session.execute(insert(model), rows)
            existing.append(there)
    return existing[0], existing[1]


LIVE_TRIAL_IDS: set[int] = set()  # storage ids of the trials this process is running (never stale to it)


@contextlib.contextmanager
def live_trial(trial: Any) -> Iterator[None]:
    """This process runs ``trial`` in the block: its own stale-trial checks leave it alone (a trial whose
    process is alive is not a dead worker's, however late its heartbeat)."""
    tid = trial_id(trial)
    LIVE_TRIAL_IDS.add(tid)
    try:
        yield
    finally:
        LIVE_TRIAL_IDS.discard(tid)


RECONNECT_S = 60.0  # how long a storage call waits for a database server that went away to come back


def reconnect_s() -> float:
    """How long storage calls retry a lost database connection: ``$MOTUNE_RECONNECT_S`` or 60 s."""
    import os

    try:
        return float(os.environ.get("MOTUNE_RECONNECT_S") or RECONNECT_S)
    except ValueError:
        return RECONNECT_S


def _lost_connection(err: BaseException | None) -> bool:
    """A database connection that went away (a server restarted, a network blip), not a mistake in the call;
    also when Optuna wrapped it (``StorageInternalError`` from the driver's error)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if err is None:
        return False
    if isinstance(err, optuna.exceptions.StorageInternalError):
        return _lost_connection(err.__cause__)
    if getattr(err, "connection_invalidated", False) or isinstance(err, InterfaceError):
        return True
    if not isinstance(err, (OperationalError, DBAPIError)):
        return False
    text = str(err).lower()
    return any(sign in text for sign in ("connection refused", "server closed the connection", "terminating connection",
                                         "could not connect", "connection reset", "the database system is",
                                         "connection not open", "ssl syscall", "broken pipe", "connection timed out"))


def _retrying(method: Any) -> Any:
    import functools
    import time

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = None
        delay = 0.2
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as err:
                if not _lost_connection(err):
                    raise
                deadline = deadline if deadline is not None else time.monotonic() + reconnect_s()
                if time.monotonic() >= deadline:
                    raise
                self.engine.dispose()  # the pool's connections died with the server: open new ones
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    return call


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """An RDBStorage that records why a heartbeat-stale trial failed before Optuna fails it, never calls a
    trial this process is running stale, and waits for a database server that went away (its calls retry a
    lost connection for :func:`reconnect_s` seconds: a PostgreSQL restarted mid-sweep)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = [tid for tid in super()._get_stale_trial_ids(study_id) if tid not in LIVE_TRIAL_IDS]
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        for tid in stale:
            for key, value in _schema.stale_reason_attrs(grace).items():
                try:
                    self.set_trial_system_attr(tid, key, value)
                except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
                    pass
        return stale


for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
              "get_trial_id_from_study_id_trial_number", "set_trial_state_values", "set_trial_intermediate_value",
              "set_trial_user_attr", "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials",
              "record_heartbeat", "_get_stale_trial_ids", "check_trial_is_updatable", "get_best_trial",
              "set_study_metric_names"):
    if hasattr(HeartbeatRDBStorage, _name):  # a release without one of them: the others still retry
        setattr(HeartbeatRDBStorage, _name, _retrying(getattr(HeartbeatRDBStorage, _name)))


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a heartbeat-stale trial, without the failed trial's measurements.

    Optuna's callback copies every attribute of the failed trial to the retry; motune keeps the
    params and the user's own attributes and drops the constraint values, reports, failure
    reason and outcome records, which the retry writes for itself.
    """

    def __init__(self, max_retry: int | None = 3) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if self.max_retry is not None and self.max_retry < len(history):
            return  # retried often enough (Optuna's own rule)
        clean = optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=_schema.retry_user_attrs(trial.user_attrs),
            system_attrs=_schema.retry_system_attrs(trial.system_attrs),
        )
        clean.number = trial.number  # Optuna's callback records the number it retries
        super().__call__(study, clean)
        for hook in list(RETRY_CREATED):  # a worker pool gives the retry a ticket of its own
            hook(1)


RETRY_CREATED: list[Any] = []  # callables(n) told when a retry was queued (a worker pool's trial count)


def artifact_folder(store: Any) -> str | None:
    """The folder of a ``FileSystemArtifactStore`` (``_base_path``), or ``None``."""
    try:
        return str(store._base_path)
    except Exception:  # noqa: BLE001
        return None


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's public stale-trial check (fails dead workers' trials and runs the retry callback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def heartbeat_interval_s(storage: Any) -> int | None:
    """The storage's heartbeat interval in seconds, or ``None`` when it has none."""
    getter = getattr(storage, "get_heartbeat_interval", None)
    return getter() if callable(getter) else None


class StudyView:
    """``study`` with each trial its trial lists return replaced by ``show(trial)`` (a ``FrozenTrial``, the
    same one or another). A trial ``show`` turns COMPLETE is listed when COMPLETE trials are asked for."""

    def __init__(self, study: Any, show: Any) -> None:
        self._study = study
        self._show = show

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _shown(self, trials: list[Any], states: Any) -> list[Any]:
        shown = [self._show(t) for t in trials]
        return shown if states is None else [t for t in shown if t.state in states]

    @staticmethod
    def _widened(states: Any) -> Any:
        import optuna

        if states is None:
            return None
        states = tuple(states)
        return states + (optuna.trial.TrialState.PRUNED,) if optuna.trial.TrialState.COMPLETE in states else states

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[Any]:
        try:
            trials = self._study._get_trials(deepcopy=deepcopy, states=self._widened(states), use_cache=use_cache)
        except Exception:  # noqa: BLE001  (a release that changed the private signature: the public list)
            trials = self._study.get_trials(deepcopy=deepcopy, states=self._widened(states))
        return self._shown(trials, states)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[Any]:
        return self._shown(self._study.get_trials(deepcopy=deepcopy, states=self._widened(states)), states)

    @property
    def trials(self) -> list[Any]:
        return self.get_trials()
