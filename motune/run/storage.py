"""Opening a study's storage: where it is, SQLite settings, the heartbeat, URL redaction.

An Optuna RDB storage (SQLite by default, PostgreSQL for many workers) gets
a heartbeat: each running trial's process records one every
``heartbeat_s`` seconds, and a trial whose process stopped recording for
``grace_s`` seconds (a worker killed with ``kill -9``, a lost machine) is
failed by whichever worker looks next, with the reason stored
(``fail_reason``: "worker died (heartbeat stale ...)"), and retried up to
:data:`MAX_RETRY` times with the same params. Defaults: a heartbeat every
:data:`DEFAULT_HEARTBEAT_S` seconds, stale after :data:`DEFAULT_GRACE_S`;
``Study(heartbeat_s=..., heartbeat_grace_s=...)``, ``motune run --heartbeat
S`` or ``$MOTUNE_HEARTBEAT_S`` change them. A heartbeat must arrive from a
live trial's process within the grace period: a train function that holds
Python's GIL for longer than that (a long C call that does not release it)
needs a longer grace.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from typing import Any, NamedTuple

import optuna

from motune.errors import SpecError, StorageError
from motune.run._optuna_compat import HeartbeatRDBStorage, RetryStaleTrial
from motune.spec import check_heartbeat

DEFAULT_STORAGE = "sqlite:///motune.db"
DEFAULT_HEARTBEAT_S = 10
DEFAULT_GRACE_S = 30
MAX_RETRY = 3  # retries of a trial whose worker died (each a new trial with the same params)


class Heartbeat(NamedTuple):
    """How often a running trial records that its process is alive, and after how long without one it
    is failed as stale (whole seconds, as Optuna's RDB storage takes them)."""

    interval_s: int
    grace_s: int


def heartbeat_settings(heartbeat_s: float | None = None, grace_s: float | None = None) -> Heartbeat:
    """The heartbeat in force: the arguments, else ``$MOTUNE_HEARTBEAT_S`` (grace: 3 intervals),
    else the defaults. Raises :class:`~motune.errors.SpecError` for values that are not positive."""
    if heartbeat_s is None and os.environ.get("MOTUNE_HEARTBEAT_S"):
        try:
            heartbeat_s = float(os.environ["MOTUNE_HEARTBEAT_S"])
        except ValueError:
            raise SpecError(f"MOTUNE_HEARTBEAT_S must be a number of seconds, got "
                            f"{os.environ['MOTUNE_HEARTBEAT_S']!r}") from None
    check_heartbeat(heartbeat_s, grace_s)
    interval = DEFAULT_HEARTBEAT_S if heartbeat_s is None else max(1, round(heartbeat_s))
    if grace_s is None:
        grace = DEFAULT_GRACE_S if heartbeat_s is None else 3 * interval
    else:
        grace = max(1, round(grace_s))
    if grace <= interval:
        raise SpecError(f"the heartbeat grace period ({grace} s) must be longer than its interval ({interval} s), "
                        "or every live trial would look stale")
    return Heartbeat(interval, grace)


def storage_location(storage: Any = None) -> Any:
    """The storage a study uses: the argument, else ``$MOTUNE_STORAGE``, else ``sqlite:///motune.db``."""
    if storage is not None:
        return storage
    return os.environ.get("MOTUNE_STORAGE") or DEFAULT_STORAGE


def open_storage(storage: Any = None, *, must_exist: bool = False,
                 heartbeat: Heartbeat | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL (or a storage object, returned as it is).

    With ``heartbeat``, an RDB storage records heartbeats and fails and retries trials whose
    process died (see the module docstring). With ``must_exist``, a SQLite URL whose file is
    missing is an error instead of a new, empty database (for commands that only read).
    Workers that start together on a new database race to create Optuna's tables; the losers
    retry (a duplicate table, a locked SQLite file) instead of failing.
    """
    storage = storage_location(storage)
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise StorageError(f"storage must be an Optuna storage URL or object, got {type(storage).__name__}")
    shown = redact_url(storage)
    if "://" not in storage:
        raise StorageError(f"cannot open storage {shown!r}: expected a URL such as sqlite:///motune.db "
                           "or postgresql://user@host/db")
    sqlite = storage.startswith("sqlite")
    if must_exist and sqlite:
        database = _sqlite_path(storage)
        if database and database != ":memory:" and not os.path.exists(database):
            raise StorageError(f"no SQLite database at {os.path.abspath(database)!r} (from {shown!r}); "
                               "run a study there first, or pass --storage / set MOTUNE_STORAGE")
    engine_kwargs = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    beat = {} if heartbeat is None else {
        "heartbeat_interval": heartbeat.interval_s, "grace_period": heartbeat.grace_s,
        "heartbeat_stale_trial_callback": RetryStaleTrial(max_retry=MAX_RETRY)}
    attempts = 8
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                opened = HeartbeatRDBStorage(storage, engine_kwargs=engine_kwargs, **beat)
            if opened.engine.name == "sqlite":
                _use_wal(opened.engine)
            return opened
        except Exception as err:  # sqlalchemy / driver errors: say which storage, and why
            if attempt < attempts - 1 and _is_creation_race(err):
                time.sleep(0.1 * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {shown!r}: {_reason(err)}") from err
    raise AssertionError("unreachable")


def _is_creation_race(err: Exception) -> bool:
    """An error a worker sees when another worker is creating Optuna's tables at the same moment:
    a duplicate key or table, or a locked SQLite file. Anything else (a wrong host, a bad password,
    a missing permission) is not retried."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    text = str(err).lower()
    return isinstance(err, (IntegrityError, OperationalError, ProgrammingError)) and any(
        sign in text for sign in ("already exists", "duplicate", "unique constraint", "database is locked"))


def _sqlite_path(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).database
    except Exception as err:  # noqa: BLE001
        raise StorageError(f"cannot open storage {redact_url(url)!r}: {_reason(err)}") from None


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
    text = redact_text(str(err).strip())
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


# scheme://user:PASSWORD@host...: the password runs to the last "@" of the URL (a password may hold "@")
_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/:@\s]*:)(?P<password>\S*)(?P<at>@)")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs (also a URL that
    sqlalchemy cannot parse, such as one with a port that is not a number)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return redact_text(url)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", text)


def storage_name(storage: Any) -> str:
    """A storage as it may be shown: a URL without its password, or the object's class name."""
    location = storage_location(storage)
    if isinstance(location, str):
        return redact_url(location)
    url = getattr(location, "url", None)
    return redact_url(url) if isinstance(url, str) else type(location).__name__
