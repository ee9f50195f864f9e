"""Trained models as Optuna artifacts: where they are stored, keeping them, loading them back.

The store is any Optuna artifact store (``optuna.artifacts``): a
``FileSystemArtifactStore`` (a local or shared folder), a
``Boto3ArtifactStore`` (S3-compatible) or a ``GCSArtifactStore``; optuna-dashboard
lists a trial's artifacts. Default (``Study(artifact_store=None)``):

- a SQLite study (a URL, or an ``RDBStorage`` object with a SQLite URL): the folder
  ``<database>-artifacts/`` beside the database
  file (``motune.db`` -> ``motune-artifacts/``);
- an in-memory study: a temporary folder that lives as long as the process;
- any other storage (PostgreSQL): ``./motune-artifacts``. Workers on several
  machines need a store they all reach: pass a shared folder or an S3 store.

``$MOTUNE_ARTIFACTS`` (a folder) overrides the default in every case.

A folder given as a string is made a ``FileSystemArtifactStore``; a folder
store's path is written into the study record, so ``mt.load_study`` and the
CLI find it from storage alone (``--artifacts`` or ``$MOTUNE_ARTIFACTS``
override it; any other store must be passed when loading).

``Study(keep_models=...)``: ``"front"`` (default) saves the model of each
completed feasible trial that no stored trial dominates when it completes,
and at the end of each run removes the models of trials that are no longer
on the front (recorded per trial as ``motune:model_removed:<n>``);
``"feasible"`` keeps every feasible trial's model; ``"all"`` every completed
trial's; ``"none"`` none. Each model is one archive
(:mod:`motune.models.persist`) whose sha256 is stored with the trial
(``motune:model``) and checked before it is loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import optuna

from motune import _pareto, _schema
from motune.errors import ArtifactError
from motune.models import persist
from motune.results import FINISHED
from motune.run import _optuna_compat as compat
from motune.run.storage import storage_location
from motune.studyfile import ensure_importable


def store_for(artifact_store: Any, storage: Any) -> Any:
    """The artifact store a study uses (see the module docstring)."""
    if artifact_store is not None and not isinstance(artifact_store, (str, os.PathLike)):
        return artifact_store
    folder = artifact_store or default_folder(storage)
    return _folder_store(str(Path(folder).resolve()))


def default_folder(storage: Any) -> str:
    """The default artifact folder for a storage (see the module docstring)."""
    location = storage_location(storage)
    if os.environ.get("MOTUNE_ARTIFACTS"):
        return os.environ["MOTUNE_ARTIFACTS"]
    if isinstance(location, optuna.storages.RDBStorage):
        location = location.url  # a storage object follows its URL's rule (SQLite: beside the file)
    if isinstance(location, str) and location.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(location).database
        if database and database != ":memory:":
            path = Path(database)
            return str(path.with_name(f"{path.stem}-artifacts"))
    if isinstance(location, optuna.storages.InMemoryStorage) or location == "sqlite:///:memory:":
        return _process_temp_folder()
    return "motune-artifacts"


@lru_cache(maxsize=1)
def _process_temp_folder() -> str:
    folder = tempfile.mkdtemp(prefix="motune-artifacts-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # an in-memory study's models end with the process
    return folder


@lru_cache(maxsize=32)
def _folder_store(folder: str) -> Any:
    return optuna.artifacts.FileSystemArtifactStore(folder)  # the folder is made when the first model is saved


def describe_store(store: Any) -> dict[str, Any]:
    """What the study record says about its store (a folder's path, else the store's class)."""
    folder = compat.artifact_folder(store) if isinstance(store, optuna.artifacts.FileSystemArtifactStore) else None
    if folder is not None:
        return {"kind": "filesystem", "path": str(Path(folder).resolve())}
    return {"kind": type(store).__name__}


def store_from_record(record: dict[str, Any], storage: Any, override: Any = None) -> Any:
    """The store of a stored study: ``override`` (a store or folder), ``$MOTUNE_ARTIFACTS``, the folder in
    its record, else the default for its storage."""
    if override is not None:
        return store_for(override, storage)
    if os.environ.get("MOTUNE_ARTIFACTS"):
        return store_for(os.environ["MOTUNE_ARTIFACTS"], storage)
    described = record.get("artifact_store") or {}
    if described.get("kind") == "filesystem":
        return store_for(described["path"], storage)
    if described.get("kind"):
        return None  # an S3 / GCS store: the caller must pass it
    return store_for(None, storage)


# ---------------------------------------------------------------- saving (inside a trial)

def should_keep(policy: str, trial: optuna.Trial, values: list[float], directions: list[str], feasible: bool,
                constraint_keys: list[str]) -> bool:
    """Whether a completed trial's model is saved under ``policy`` (``"front"``: feasible and not dominated
    by a stored feasible completed trial)."""
    if policy == "none" or (policy in ("front", "feasible") and not feasible):
        return False
    if policy in ("all", "feasible"):
        return True
    others = [t for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.number != trial.number and t.values is not None]
    feasible_others = [_feasible(trial.study.study_name, t, tuple(constraint_keys)) for t in others]
    return _pareto.joins_front(values, directions, [t.values for t in others], feasible_others)


_FEASIBLE: dict[tuple, bool] = {}


def _feasible(study_name: str, t: Any, keys: tuple[str, ...]) -> bool:
    """A completed trial's feasibility (the one rule), read once per process: a finished trial never changes."""
    key = (study_name, t.number, t.datetime_start, keys)
    found = _FEASIBLE.get(key)
    if found is None:
        if len(_FEASIBLE) > 100_000:
            _FEASIBLE.clear()
        found = _FEASIBLE[key] = _schema.is_feasible(_schema.read_violations(t.system_attrs, list(keys)), list(keys))
    return found


class _NoPartial:
    """An artifact store whose failed write leaves nothing behind (a full disk, a file-size limit: the part
    written is removed), so that no half archive sits in the store under an id nothing names."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def write(self, artifact_id: str, content_body: Any) -> None:
        try:
            self.store.write(artifact_id, content_body)
        except BaseException:
            with contextlib.suppress(Exception):
                self.store.remove(artifact_id)
            raise

    def open_reader(self, artifact_id: str) -> Any:
        return self.store.open_reader(artifact_id)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)


def save_model(trial: optuna.Trial, model: Any, store: Any) -> dict[str, Any]:
    """Archive ``model``, upload it as the trial's artifact; returns the ``motune:model`` system attribute. A
    save that fails (an error from the model, a full disk, a file-size limit) leaves no archive behind."""
    folder = compat.artifact_folder(store) if isinstance(store, optuna.artifacts.FileSystemArtifactStore) else None
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="motune-upload-") as tmp:
        filename = f"trial-{trial.number}-model.tar"
        path = Path(tmp) / filename
        manifest = persist.save_archive(model, path)
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=_NoPartial(store), file_path=str(path),
                                                       study_or_trial=trial, mimetype="application/x-tar")
    return _schema.model_attrs(artifact_id=artifact_id, sha256=manifest["sha256"], size_bytes=manifest["size_bytes"],
                               kind=manifest["kind"], filename=filename)


# ---------------------------------------------------------------- after a run

def apply_keep_policy(result: Any, store: Any, policy: str) -> list[int]:
    """With ``"front"``, remove the models of trials no longer on the front; returns their numbers."""
    if policy != "front" or store is None:
        return []
    removed_before = _schema.read_removed_models(result.study.user_attrs)
    removed = []
    for r in result.records():
        # only finished trials: a trial still running elsewhere may be storing a model it keeps
        if r.model is None or r.on_front or r.number in removed_before or r.state not in FINISHED:
            continue
        try:
            store.remove(r.model["artifact_id"])
        except Exception:  # noqa: BLE001  (already gone: removing again changes nothing)
            pass
        at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        _schema.store_study_attrs(result.study, _schema.model_removed_attrs(r.number, reason="no longer on the front",
                                                                            at=at))
        removed.append(r.number)
    return removed


def load_model(result: Any, number: int, *, store: Any = None, device: str | None = None) -> Any:
    """The model of trial ``number`` of a stored study, after its recorded hash was checked (the study's file
    imported first, so that classes it defines unpickle)."""
    ensure_importable(result)
    with tempfile.TemporaryDirectory(prefix="motune-download-") as tmp:
        path = Path(tmp) / "model.tar"
        model, what = _download(result, number, path, store)
        return persist.load_archive(path, sha256=model["sha256"], what=what, device=device)


def download_archive(result: Any, number: int, path: str | Path, *, store: Any = None) -> dict[str, Any]:
    """Copy trial ``number``'s model archive to ``path`` and check its hash; returns its ``motune:model``."""
    model, what = _download(result, number, Path(path), store)
    if persist.sha256_of(path) != model["sha256"]:
        Path(path).unlink(missing_ok=True)
        raise ArtifactError(f"{what} is corrupt or was changed (its sha256 differs from the recorded one)")
    return model


def _download(result: Any, number: int, path: Path, store: Any) -> tuple[dict[str, Any], str]:
    """Fetch trial ``number``'s archive to ``path``; a clear error naming the trial when it cannot be had."""
    what = f"the model of trial {number} of study {result.name!r}"
    try:
        record = result.record(number)
    except KeyError:
        raise ArtifactError(f"study {result.name!r} has no trial {number}") from None
    if record.model is None:
        raise ArtifactError(f"{what} was not kept (keep_models policy, or the trial did not complete)")
    if record.model_removed is not None:
        raise ArtifactError(f"{what} was removed: {record.model_removed.get('reason')} "
                            f"({record.model_removed.get('at')})")
    store = store if store is not None else result.artifact_store
    if store is None:
        raise ArtifactError(f"{what} is in a {(result.info.get('artifact_store') or {}).get('kind')} store: pass it "
                            "(mt.load_study(..., artifact_store=store), --artifacts)")
    try:
        optuna.artifacts.download_artifact(artifact_store=store, artifact_id=record.model["artifact_id"],
                                           file_path=str(path))
    except Exception as err:  # noqa: BLE001  (a missing file, an unreachable bucket)
        raise ArtifactError(f"{what} (artifact {record.model['artifact_id']}) cannot be read from the store: "
                            f"{type(err).__name__}: {err}") from None
    return record.model, what


# ---------------------------------------------------------------- study files (the report, its figures)

def attach_files(result: Any, paths: list[Any]) -> list[str]:
    """Upload ``paths`` (the HTML report, PNG figures) as artifacts of the study itself, which
    optuna-dashboard lists on the study's page; returns their artifact ids (none without a store).
    Each call adds new artifacts: Optuna has no public way to remove a study artifact's record."""
    store = result.artifact_store
    if store is None or result.foreign:  # (a study motune did not create has no store motune chose)
        return []
    folder = compat.artifact_folder(store)
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    ids = []
    for path in paths:
        mimetype = "text/html" if str(path).endswith(".html") else "image/png" if str(path).endswith(".png") else None
        ids.append(optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                                    study_or_trial=result.study, mimetype=mimetype))
    return ids

