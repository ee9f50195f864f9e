"""Creating, resuming and reopening a stored study.

:func:`open_study` creates the Optuna study for a :class:`motune.Study`, or
resumes the stored one of the same name when its spec (objectives,
constraints, data, split, metric options) matches; anything else would mix
incomparable trials and is refused. The study's record (``motune`` user
attribute, :mod:`motune._schema`) lets :func:`load_study`, the figures and
the CLI reopen it from storage alone.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from motune import _schema, dashboard, provenance
from motune.errors import SpecError, StudyNotFoundError
from motune.results import Result
from motune.run import artifacts
from motune.run.location import Location, locate
from motune.run.sampling import SamplerView, make_sampler
from motune.run.storage import open_storage, storage_name
from motune.spec import Study


def open_study(study: Study, location: Location | None = None) -> optuna.Study:
    """Create the Optuna study, or resume it when its stored spec matches this one, where ``location`` (default:
    :func:`~motune.run.location.locate` of the study) says; its artifact store is recorded with the study, so
    it can be found from storage alone."""
    location = location if location is not None else locate(study)
    storage, artifact_store = location.storage, location.artifact_store
    try:
        study_id = storage.get_study_id_from_name(study.name)
    except KeyError:
        study_id = None
    if study_id is not None:
        _check_resumable(study, storage, study_id)
        _check_store(study, storage, study_id, artifact_store)
    sampler = SamplerView(make_sampler(study.sampler, study.seed), objectives=[o.metric for o in study.objectives],
                          constraints=[(c.key, c) for c in study.constraints], as_completed=study.sampler_sees_pruned)
    ostudy = optuna.create_study(
        study_name=study.name, storage=storage, directions=study.directions, sampler=sampler, load_if_exists=True
    )
    if _schema.read_study_record(ostudy.user_attrs) is None:
        record = study_record(study)
        record |= lineage(study, storage)
        if artifact_store is not None:
            record["artifact_store"] = artifacts.describe_store(artifact_store)
        for key, value in _schema.study_record_attrs(record).items():
            ostudy.set_user_attr(key, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ostudy.set_metric_names([o.metric for o in study.objectives])
    dashboard.save_study_note(ostudy)  # optuna-dashboard's note: objectives, constraints, the decision
    return ostudy


def study_record(study: Study) -> dict[str, Any]:
    """What is stored about a study, so that it can be reopened and reported on from storage alone."""
    return {
        **study.spec_record(),
        "description": study.description,
        "task": study.task.summary(),
        "measured_metrics": study.measured_metrics,
        "extra_metrics": list(study.metrics),
        "metric_options": {k: dict(v) for k, v in study.metric_options.items()},
        "split": study.split,
        "seed": study.seed,
        "source_file": study.source_file,
        "motune_version": provenance.environment()["versions"].get("motune"),
    }


def lineage(study: Study, storage: Any) -> dict[str, Any]:
    """For version n > 1 of a study: the latest earlier version stored in ``storage`` and what changed since."""
    out: dict[str, Any] = {"family": study.family}
    for version in range(study.version - 1, 0, -1):
        name = _schema.versioned_name(study.family, version)
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            continue
        before = _schema.read_study_record(storage.get_study_user_attrs(study_id)) or {}
        out["previous"] = {"study": name, "version": version, "changes": spec_changes(before, study.spec_record())}
        break
    return out


def _keyed_changes(kind: str, old: dict, new: dict, show: Any, changed: Any) -> list[str]:
    """Lines for what was removed, added or changed between two ``{key: value}`` maps."""
    lines = []
    for key in dict.fromkeys([*old, *new]):
        if key not in new:
            lines.append(f"{kind} removed: {show(key, old[key])}")
        elif key not in old:
            lines.append(f"{kind} added: {show(key, new[key])}")
        elif old[key] != new[key]:
            lines.append(changed(key, old[key], new[key]))
    return lines


def spec_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two spec records, one line each ("equalized_odds_difference <= 0.1 -> <= 0.05")."""
    def objectives(record: dict[str, Any]) -> dict[str, str]:
        return {o["metric"]: o["direction"] for o in record.get("objectives", [])}

    def constraints(record: dict[str, Any]) -> dict[tuple[str, str], float]:  # two bounds on a metric stay apart
        return {(c["metric"], c["op"]): c["bound"] for c in record.get("constraints", [])}

    changes = _keyed_changes("objective", objectives(before), objectives(after),
                             lambda metric, direction: f"{direction} {metric}",
                             lambda metric, old, new: f"objective {metric}: {old} -> {new}")
    changes += _keyed_changes("constraint", constraints(before), constraints(after),
                              lambda key, bound: f"{key[0]} {key[1]} {bound:g}",
                              lambda key, old, new: f"{key[0]} {key[1]} {old:g} -> {key[1]} {new:g}")
    if before.get("data_fingerprint") != after.get("data_fingerprint"):
        changes.append("data changed (another fingerprint)")
    for key in ("split", "metric_options", "keep_models"):
        if key in before and before.get(key) != after.get(key):
            changes.append(f"{key}: {before.get(key)} -> {after.get(key)}")
    return changes or ["no change of objectives, constraints or data"]


def _check_resumable(study: Study, storage: optuna.storages.BaseStorage, study_id: int) -> None:
    stored = _schema.read_study_record(storage.get_study_user_attrs(study_id))
    where = storage_name(storage)
    if stored is None:
        if storage.get_n_trials(study_id) > 0:
            raise SpecError(
                f"study {study.name!r} in {where} exists but was not created by motune; choose another name"
            )
        return
    ours = study.spec_record()
    defaults = {"keep_models": ours["keep_models"], "version": 1}  # records written before these existed
    theirs = {key: stored.get(key, defaults.get(key)) for key in ours}
    if theirs != ours:
        if (theirs["objectives"], theirs["constraints"]) != (ours["objectives"], ours["constraints"]):
            what = f"was created with {_describe(theirs)}, but this definition has {_describe(ours)}"
        else:
            what = "was created with other " + " and ".join(
                {"data_fingerprint": "data (the task's rows, label, sensitive feature or splits)",
                 "split": f"a split to measure on ({theirs['split']!r}, now {ours['split']!r})",
                 "metric_options": f"metric options ({theirs['metric_options']}, now {ours['metric_options']})",
                 "keep_models": f"a keep policy ({theirs['keep_models']!r}, now {ours['keep_models']!r})"}[k]
                for k in ("data_fingerprint", "split", "metric_options", "keep_models") if theirs[k] != ours[k]
            )
        raise SpecError(
            f"study {study.name!r} in {where} {what}. Resuming would mix incomparable trials: "
            f"give the study a new version (Study(..., version={study.version + 1}): stored as "
            f"{_schema.versioned_name(study.family, study.version + 1)!r}, linked to this one), or delete the "
            f"stored study (optuna delete-study --study-name {study.name!r} --storage URL) to start over."
        )


def _check_store(study: Study, storage: Any, study_id: int, artifact_store: Any) -> None:
    """Every worker of a study keeps its models in the same store (else load_study could not find some)."""
    stored = (_schema.read_study_record(storage.get_study_user_attrs(study_id)) or {}).get("artifact_store")
    if not stored or artifact_store is None:
        return
    ours = artifacts.describe_store(artifact_store)
    if stored.get("kind") == ours.get("kind") == "filesystem" and stored.get("path") != ours.get("path"):
        raise SpecError(f"study {study.name!r} keeps its models in {stored['path']!r}, but this run would keep them "
                        f"in {ours['path']!r}: pass artifact_store={stored['path']!r} (or set MOTUNE_ARTIFACTS) "
                        "so every worker uses one store")


def _describe(record: dict[str, Any]) -> str:
    objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in record["objectives"] or [])
    constraints = ", ".join(f"{c['metric']} {c['op']} {c['bound']:g}" for c in record["constraints"] or []) or "none"
    return f"objectives [{objectives}] and constraints [{constraints}]"


def load_study(name: str, *, storage: Any = None, artifact_store: Any = None) -> Result:
    """Reopen a finished or running study from its storage alone (a snapshot: ``refresh()`` re-reads).

    Its models are read from ``artifact_store`` if given, else ``$MOTUNE_ARTIFACTS``, else the folder
    its record names (see :mod:`motune.run.artifacts`)."""
    opened = open_storage(storage, must_exist=True)
    try:
        opened.get_study_id_from_name(name)
    except KeyError:
        names = [s.study_name for s in opened.get_all_studies()]
        raise StudyNotFoundError(
            f"no study named {name!r} in {storage_name(opened)}; studies there: {names or 'none'}"
        ) from None
    return attach_store(Result(optuna.load_study(study_name=name, storage=opened)), storage, artifact_store)


def attach_store(result: Result, storage: Any, artifact_store: Any = None) -> Result:
    """Give ``result`` its artifact store and the loader that reads models from it."""
    result.artifact_store = artifacts.store_from_record(result.info, storage, artifact_store)
    result._model_loader = artifacts.load_model
    return result
