"""Every key motune stores in an Optuna storage, each writer beside its reader.

Writers return plain ``{key: JSON value}`` dicts that ``run/`` hands to the
storage; readers take the attribute dicts of a stored study or trial (an
Optuna ``FrozenTrial``'s ``user_attrs`` / ``system_attrs``) and return plain
values. Nothing here talks to Optuna objects, so a key's format lives in one
place and the two sides cannot drift.

Study (user attribute)
    ``motune``: the study record (spec, task summary, measured and extra
    metrics, options, split, seed, version) -- :func:`study_record_attrs` /
    :func:`read_study_record`.

Trial (system attributes)
    ``constraints:<metric> <op> <bound>``: ``value - bound`` for ``<=``,
    ``bound - value`` for ``>=`` (positive = violated), Optuna's own
    ``Trial.set_constraint`` format -- :func:`constraint_key` /
    :func:`read_violations`.
    ``constraints``: the same values as a list in constraint order, the only
    form optuna-dashboard 0.21 reads -- :func:`legacy_constraint_attrs`.
    ``motune:report:<trial number>:<step>``: one intermediate report
    ``{metric: value}`` -- :func:`report_key` / :func:`read_reports`.
    ``motune:forecast:<trial number>:<step>``: the pruning policy's forecast
    of the final values at that report (per metric: point, interval,
    widening; the interval's level, the peers it came from) --
    :func:`forecast_key` / :func:`read_forecasts`.
    ``fail_reason``: why a trial failed without raising (a dead worker) --
    :func:`stale_reason_attrs` / :func:`read_error`.

Trial (system attributes, continued)
    ``motune:model``: the trial's model in the artifact store (artifact id,
    sha256, bytes, kind, file name) -- :func:`model_attrs` / :func:`read_model`.

Study (user attributes, one key per trial or decision, so workers never overwrite each other)
    ``motune:model_removed:<trial>``: the keep policy removed that model
    (when, why) -- :func:`model_removed_attrs` / :func:`read_removed_models`.
    ``motune:confirmation:<trial>``: the trial re-measured on the test split
    with intervals and re-timed quietly -- :func:`confirmation_attrs` /
    :func:`read_confirmations`.
    ``motune:decision:<UTC time>:<random id>``: one decision; read back in
    time order and numbered 1, 2, ... -- :func:`decision_attrs`
    / :func:`read_decisions`. A unique key per decision, so two people deciding at
    once both keep theirs.
    ``motune:current:<UTC time>:<random id>``: a statement that one decision
    is current (its id and number, who, why, when): the latest decision is
    current unless a later statement names another --
    :func:`current_attrs` / :func:`read_current` / :func:`current_decision`.

Trial (user attributes)
    ``metrics`` (every measured value), one entry per metric function key
    with its details (``fairness``, ``latency``, ``robustness`` ...),
    ``timing``, ``provenance``, ``params`` (what ``train`` received, derived
    values included), ``worker`` (host and pid of the process that ran it),
    ``pruned`` (rule, step, reason), ``pruning_warning``, ``gpu_memory`` (on a
    GPU: reserved memory at the trial's start and its peaks), and on failure
    ``error`` and ``traceback`` -- :func:`worker_attrs`, :func:`params_attrs`,
    :func:`outcome_attrs`, :func:`pruned_attrs`, :func:`failure_attrs`,
    :func:`read_metrics`, :func:`read_params`.
    ``user:<key>``: a value a train function recorded with ``ctx.set_attr``.

Feasibility has one rule (:func:`is_feasible`): a completed trial is
feasible when every constraint of its study has a stored value and none is
positive; a missing value is not feasible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# ---------------------------------------------------------------- the study record

STUDY_ATTR = "motune"


def study_record_attrs(record: Mapping[str, Any]) -> dict[str, Any]:
    """The study's user attributes holding its record."""
    return {STUDY_ATTR: jsonable(dict(record))}


def read_study_record(user_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The stored study record, or ``None`` for a study motune did not create."""
    record = user_attrs.get(STUDY_ATTR)
    return dict(record) if isinstance(record, Mapping) else None


# ---------------------------------------------------------------- constraints

CONSTRAINT_PREFIX = "constraints:"  # Optuna's Trial.set_constraint key prefix
LEGACY_CONSTRAINTS_ATTR = "constraints"  # what optuna-dashboard 0.21 reads


def constraint_key(constraint_name: str) -> str:
    """The system attribute ``Trial.set_constraint(constraint_name, v)`` writes."""
    return f"{CONSTRAINT_PREFIX}{constraint_name}"


def legacy_constraint_attrs(violations: Sequence[float]) -> dict[str, Any]:
    """The legacy list of constraint values (empty when there are none)."""
    return {LEGACY_CONSTRAINTS_ATTR: [float(v) for v in violations]} if violations else {}


def is_constraint_attr(key: str) -> bool:
    """Whether a system attribute holds constraint values (either form)."""
    return key == LEGACY_CONSTRAINTS_ATTR or key.startswith(CONSTRAINT_PREFIX)


def constraint_attrs(keys: Sequence[str], violations: Sequence[float], *, legacy: bool) -> dict[str, Any]:
    """A trial's constraint values as Optuna's samplers read them: ``constraints:<key>`` each, and the
    legacy list when ``legacy`` (optuna-dashboard 0.21)."""
    attrs: dict[str, Any] = {constraint_key(k): float(v) for k, v in zip(keys, violations)}
    return attrs | (legacy_constraint_attrs(violations) if legacy else {})


def read_violations(system_attrs: Mapping[str, Any], names: Sequence[str] | None = None) -> dict[str, float]:
    """Constraint values by name: ``names`` (a study's constraint keys) or every ``constraints:*`` stored."""
    if names is None:
        names = [k[len(CONSTRAINT_PREFIX):] for k in system_attrs if k.startswith(CONSTRAINT_PREFIX)]
    out = {}
    for name in names:
        value = system_attrs.get(constraint_key(name))
        if value is not None:
            out[name] = float(value)
    return out


def kept(violation: Any) -> Any:
    """The one rule for a constraint verdict: a violation value (``value - bound`` for ``<=``, ``bound - value``
    for ``>=``) keeps the constraint when it is at most 0; ``None`` (no value) does not. Works element-wise on
    numpy arrays."""
    if violation is None:
        return False
    return violation <= 0


def is_feasible(violations: Mapping[str, float], names: Sequence[str]) -> bool:
    """The one feasibility rule: every constraint in ``names`` has a value, and each keeps it (:func:`kept`)."""
    return all(n in violations and kept(violations[n]) for n in names)


# ---------------------------------------------------------------- reports

REPORT_PREFIX = "motune:report:"


def report_key(number: int, step: int) -> str:
    """The system attribute holding trial ``number``'s report at ``step``."""
    return f"{REPORT_PREFIX}{int(number)}:{int(step)}"


def intermediate_value(values: Mapping[str, float], objective_metrics: Sequence[str]) -> float | None:
    """The one number per report Optuna keeps as the trial's intermediate value at that step (what
    optuna-dashboard and ``plot_intermediate_values`` draw as the learning curve): the study's first
    objective, in its own units and direction; ``None`` when the report lacks it. Read back by Optuna
    (``FrozenTrial.intermediate_values``); motune itself reads the full reports."""
    first = objective_metrics[0] if objective_metrics else None
    value = values.get(first) if first is not None else None
    return None if value is None else float(value)


FORECAST_PREFIX = "motune:forecast:"


def forecast_key(number: int, step: int) -> str:
    """The system attribute holding the forecast made at trial ``number``'s report at ``step``."""
    return f"{FORECAST_PREFIX}{int(number)}:{int(step)}"


def forecast_attrs(number: int, step: int, record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The forecast stored with a report (nothing when the policy made none)."""
    return {} if record is None else {forecast_key(number, step): jsonable(dict(record))}


def read_forecasts(system_attrs: Mapping[str, Any], number: int) -> dict[int, dict[str, Any]]:
    """Trial ``number``'s stored forecasts by step (a retry's inherited ones are its predecessor's)."""
    return _owned_by_step(system_attrs, FORECAST_PREFIX, number)


def _owned_by_step(system_attrs: Mapping[str, Any], prefix: str, number: int) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for key, value in system_attrs.items():
        if key.startswith(prefix):
            owner, _, step = key[len(prefix):].partition(":")
            if owner.isdigit() and int(owner) == number and step.isdigit():
                out[int(step)] = dict(value)
    return dict(sorted(out.items()))


def report_steps(system_attrs: Mapping[str, Any], number: int) -> list[int]:
    """The steps trial ``number`` reported (without reading the reports)."""
    prefix = f"{REPORT_PREFIX}{int(number)}:"
    return [int(k[len(prefix):]) for k in system_attrs if k.startswith(prefix) and k[len(prefix):].isdigit()]


def read_reports(system_attrs: Mapping[str, Any], number: int) -> dict[int, dict[str, float]]:
    """Trial ``number``'s reports by step. A retried trial inherits its predecessor's system
    attributes; those are keyed by the predecessor's number and so are not read as its own."""
    return _owned_by_step(system_attrs, REPORT_PREFIX, number)


# ---------------------------------------------------------------- outcome of a trial

METRICS_ATTR = "metrics"
PARAMS_ATTR = "params"
WORKER_ATTR = "worker"
PRUNED_ATTR = "pruned"
PRUNING_WARNING_ATTR = "pruning_warning"
MODEL_NOT_KEPT_ATTR = "model_not_kept"  # why the keep policy wanted the model but it could not be saved
GPU_MEMORY_ATTR = "gpu_memory"  # the trial's GPU memory: reserved at its start, its peaks (MB)
ERROR_ATTR = "error"
TRACEBACK_ATTR = "traceback"
FAIL_REASON_ATTR = "fail_reason"  # system attribute, written by motune's heartbeat storage
USER_PREFIX = "user:"

# user attribute names motune writes itself: a metric function's key (under which its details are
# stored on the trial) cannot be one of them
RESERVED_KEYS = (METRICS_ATTR, "provenance", "timing", ERROR_ATTR, TRACEBACK_ATTR, PRUNED_ATTR, PARAMS_ATTR,
                 WORKER_ATTR, PRUNING_WARNING_ATTR, GPU_MEMORY_ATTR)


def worker_attrs(*, host: str, pid: int) -> dict[str, Any]:
    """Which process runs the trial (written first thing when it starts)."""
    return {WORKER_ATTR: {"host": host, "pid": int(pid)}}


def params_attrs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params ``train`` receives (derived and fixed values included), written before it trains."""
    return {PARAMS_ATTR: jsonable(dict(params))}


FLAT_METRIC_PREFIX = "metric:"  # one plain number per metric, for tools that sort user attributes


def outcome_attrs(*, values: Mapping[str, float], details: Mapping[str, Any], timing: Mapping[str, float],
                  provenance: Mapping[str, Any]) -> dict[str, Any]:
    """A completed trial's user attributes: metrics (as one record, and each as a plain number under
    ``metric:<name>``, which optuna-dashboard and ``trials_dataframe`` show as sortable columns), each
    metric function's details under its key, timing and provenance."""
    flat = {f"{FLAT_METRIC_PREFIX}{name}": value for name, value in values.items()}
    return jsonable({METRICS_ATTR: dict(values), **flat, **dict(details), "timing": dict(timing),
                     "provenance": dict(provenance)})


def pruned_attrs(*, rule: str, reason: str, step: int, reports: int,
                 details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Why a report pruned the trial; ``details``: what decided it (a forecast rule's probability, risk,
    forecast and calibration)."""
    record = {"rule": rule, "reason": reason, "step": int(step), "reports": int(reports)}
    return {PRUNED_ATTR: jsonable(record | ({"details": dict(details)} if details else {}))}


def failure_attrs(error: str, traceback_text: str) -> dict[str, Any]:
    return {ERROR_ATTR: error, TRACEBACK_ATTR: traceback_text[-4000:]}


def stale_reason_attrs(grace_s: float) -> dict[str, Any]:
    """The system attribute a trial gets when its worker stopped sending heartbeats."""
    return {FAIL_REASON_ATTR: f"worker died (heartbeat stale: none for more than {grace_s:g} s)"}


def read_metrics(user_attrs: Mapping[str, Any]) -> dict[str, float | None]:
    """A trial's metrics: the record, else the plain ``metric:<name>`` numbers (either may be all a
    study written by another version holds)."""
    record = user_attrs.get(METRICS_ATTR)
    if record:
        return dict(record)
    return {k[len(FLAT_METRIC_PREFIX):]: v for k, v in user_attrs.items() if k.startswith(FLAT_METRIC_PREFIX)}


def read_params(user_attrs: Mapping[str, Any], trial_params: Mapping[str, Any]) -> dict[str, Any]:
    """What ``train`` received (derived and fixed values included), else Optuna's params."""
    received = user_attrs.get(PARAMS_ATTR)
    return {**dict(trial_params), **dict(received)} if isinstance(received, Mapping) else dict(trial_params)


def read_error(state: str, user_attrs: Mapping[str, Any], system_attrs: Mapping[str, Any]) -> str | None:
    """Why a failed trial failed (``None`` for any other state)."""
    if state != "FAIL":
        return None
    return user_attrs.get(ERROR_ATTR) or system_attrs.get(FAIL_REASON_ATTR) or "no reason recorded"


# attributes a retried trial must not inherit from the trial it retries
PER_TRIAL_USER_KEYS = (METRICS_ATTR, "timing", "provenance", ERROR_ATTR, TRACEBACK_ATTR, PRUNED_ATTR,
                       WORKER_ATTR, PRUNING_WARNING_ATTR)


def retry_user_attrs(user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What a retry keeps of the failed trial's user attributes: the user's own (``user:*``) and
    the params it received; measured outcomes and failure records are its own to write."""
    return {k: v for k, v in user_attrs.items() if k not in PER_TRIAL_USER_KEYS and not k.startswith(FLAT_METRIC_PREFIX)}


def retry_system_attrs(system_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What a retry keeps of the failed trial's system attributes: Optuna's retry bookkeeping and
    anything not motune's; constraint values, reports and the failure reason are dropped."""
    return {k: v for k, v in system_attrs.items()
            if k not in (FAIL_REASON_ATTR, LEGACY_CONSTRAINTS_ATTR, "motune:model")
            and not k.startswith((CONSTRAINT_PREFIX, REPORT_PREFIX, FORECAST_PREFIX, "artifacts:"))}


# ---------------------------------------------------------------- models, confirmations, decisions

MODEL_ATTR = "motune:model"
MODEL_REMOVED_PREFIX = "motune:model_removed:"
CONFIRMATION_PREFIX = "motune:confirmation:"
DECISION_PREFIX = "motune:decision:"


def model_attrs(*, artifact_id: str, sha256: str, size_bytes: int, kind: str, filename: str) -> dict[str, Any]:
    """The trial's system attribute naming its model in the artifact store."""
    return {MODEL_ATTR: {"artifact_id": artifact_id, "sha256": sha256, "size_bytes": int(size_bytes),
                         "kind": kind, "filename": filename}}


def read_model(system_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    model = system_attrs.get(MODEL_ATTR)
    return dict(model) if isinstance(model, Mapping) else None


def model_removed_attrs(number: int, *, reason: str, at: str) -> dict[str, Any]:
    return {f"{MODEL_REMOVED_PREFIX}{int(number)}": {"reason": reason, "at": at}}


def _by_number(user_attrs: Mapping[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    out = {}
    for key, value in user_attrs.items():
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            out[int(key[len(prefix):])] = dict(value)
    return dict(sorted(out.items()))


def read_removed_models(study_user_attrs: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Trial number -> why and when its model was removed."""
    return _by_number(study_user_attrs, MODEL_REMOVED_PREFIX)


def confirmation_attrs(number: int, record: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{CONFIRMATION_PREFIX}{int(number)}": jsonable(dict(record))}


def read_confirmations(study_user_attrs: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Trial number -> its latest confirmation."""
    return _by_number(study_user_attrs, CONFIRMATION_PREFIX)


def decision_attrs(record: Mapping[str, Any], *, key: str) -> dict[str, Any]:
    """A decision under its own key (``key``: a sortable UTC time and a random id, see :func:`decision_key`)."""
    return {f"{DECISION_PREFIX}{key}": jsonable({k: v for k, v in dict(record).items()
                                                if k not in ("number", "id", "current", "made_current")})}


def decision_key(now: Any, token: str) -> str:
    return f"{now.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z:{token}"


def read_decisions(study_user_attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every decision, oldest first (the last is current), each with its ``number`` (1, 2, ...) and ``id``."""
    keys = sorted(k for k in study_user_attrs if k.startswith(DECISION_PREFIX))
    return [{**dict(study_user_attrs[k]), "number": i, "id": k[len(DECISION_PREFIX):]}
            for i, k in enumerate(keys, start=1)]


CURRENT_PREFIX = "motune:current:"


def current_attrs(record: Mapping[str, Any], *, key: str) -> dict[str, Any]:
    """A statement that one decision is current (its id and number, who said so, why, when), under its own key."""
    return {f"{CURRENT_PREFIX}{key}": jsonable(dict(record))}


def read_current(study_user_attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every statement of which decision is current, oldest first, each with its ``id`` (time and random id)."""
    keys = sorted(k for k in study_user_attrs if k.startswith(CURRENT_PREFIX))
    return [{**dict(study_user_attrs[k]), "id": k[len(CURRENT_PREFIX):]} for k in keys]


def current_decision(study_user_attrs: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The one rule for which decision is current: the latest decision, unless a statement that names another
    was made after it (then that one). Returns ``(decision, the statement that made it current or None)``."""
    decisions = read_decisions(study_user_attrs)
    stated = read_current(study_user_attrs)
    latest = decisions[-1] if decisions else None
    if stated and (latest is None or stated[-1]["id"] > latest["id"]):  # keys sort by UTC time
        named = next((d for d in decisions if d["id"] == stated[-1].get("decision")), None)
        if named is not None:
            return named, stated[-1]
    return latest, None


CHECK_PREFIX = "motune:check:"


def check_attrs(record: Mapping[str, Any], *, key: str) -> dict[str, Any]:
    """A check of a decision on new data, under its own key (a sortable UTC time and a random id)."""
    return {f"{CHECK_PREFIX}{key}": jsonable({k: v for k, v in dict(record).items() if k not in ("number", "id")})}


def read_checks(study_user_attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every check, oldest first, each with its ``number`` (1, 2, ...) and ``id``."""
    keys = sorted(k for k in study_user_attrs if k.startswith(CHECK_PREFIX))
    return [{**dict(study_user_attrs[k]), "number": i, "id": k[len(CHECK_PREFIX):]}
            for i, k in enumerate(keys, start=1)]


def versioned_name(name: str, version: int) -> str:
    """The stored name of version ``version`` of study ``name`` (version 1 keeps the plain name)."""
    return name if version == 1 else f"{name}@v{int(version)}"


# ---------------------------------------------------------------- writing study-level records

def store_study_attrs(study: Any, attrs: Mapping[str, Any]) -> None:
    """Write study-level records (this module's ``*_attrs`` writers: confirmations, decisions, checks, removed
    models) to a study (anything with ``set_user_attr``, an ``optuna.Study``); read them back with a fresh
    snapshot (``Result.refresh``)."""
    for key, value in attrs.items():
        study.set_user_attr(key, value)


# ---------------------------------------------------------------- JSON

def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN / inf to None, tuples to lists, keys to str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if type(value).__module__ == "numpy" and callable(getattr(value, "tolist", None)):
        return jsonable(value.tolist())  # numpy scalars and arrays
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
