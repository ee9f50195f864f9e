"""Where a study lives, resolved once per run and passed down.

:func:`locate` reads a :class:`motune.Study`'s storage (``Study(storage=...)``,
else ``$MOTUNE_STORAGE``, else ``sqlite:///motune.db``), its heartbeat
(``Study(heartbeat_s=...)``, else ``$MOTUNE_HEARTBEAT_S``, else the defaults)
and its artifact store (``Study(artifact_store=...)``, else
``$MOTUNE_ARTIFACTS``, else the folder beside a SQLite file;
:mod:`motune.run.artifacts`), opens the storage, and returns a
:class:`Location` that the run, its worker pool or Ray driver and
:func:`motune.run.study.open_study` use as it is: nothing below re-reads the
environment or re-opens the storage.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from motune.errors import SpecError
from motune.run import artifacts
from motune.run.storage import Heartbeat, heartbeat_settings, open_storage, storage_location, storage_name


class Location(NamedTuple):
    """A study's storage (as named, and opened), heartbeat and artifact store."""

    named: Any  # the storage as the study names it, resolved: a URL, or an Optuna storage object
    storage: Any  # the opened Optuna storage (an RDB one with the heartbeat)
    heartbeat: Heartbeat
    artifact_store: Any  # where models go (None: the study keeps none)

    @property
    def name(self) -> str:
        """The storage as it may be shown (no password)."""
        return storage_name(self.named)

    def shared_url(self, what: str) -> str:
        """The storage as a URL that other processes and machines open the same way (a SQLite file by its
        absolute path); a :class:`~motune.errors.SpecError` saying ``what`` needs one otherwise."""
        named = self.named
        if not isinstance(named, str) or named.endswith(":memory:"):
            raise SpecError(f"{what} need(s) a storage they can all open (a SQLite file or a PostgreSQL URL), not "
                            "an in-memory one")
        if named.startswith("sqlite"):
            from sqlalchemy.engine import make_url

            return f"sqlite:///{os.path.abspath(make_url(named).database)}"
        return named


def locate(study: Any) -> Location:
    """Resolve and open where ``study`` lives (see the module docstring)."""
    named = storage_location(study.storage)
    heartbeat = heartbeat_settings(study.heartbeat_s, study.heartbeat_grace_s)
    storage = open_storage(named, heartbeat=heartbeat)
    store = None if study.keep_models == "none" else artifacts.store_for(study.artifact_store, named)
    return Location(named, storage, heartbeat, store)


__all__ = ["Location", "locate"]
