"""What a study is: objectives, constraints, search space, train function, task.

Everything here is checked when a :class:`Study` is built, before any trial
runs; a mistake raises :class:`~motune.errors.SpecError` (a ``ValueError``)
or :class:`~motune.errors.SpecTypeError` (a ``TypeError``) saying what was
wrong and what would be right. Running a study lives in :mod:`motune.run`,
reached through a lazy import behind :meth:`Study.optimize` (the one place
a lower room calls a higher one).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from motune import _schema
from motune import metrics as _metrics  # noqa: F401  (registers the built-in metrics)
from motune.errors import SpecError, SpecTypeError, UnknownMetricError
from motune.locks import TIMING_MODES
from motune.metrics.registry import group_for, groups_for
from motune.pruning import PruningPolicy, default_policy
from motune.task import SPLITS, Task, TextTask

# Measured on every trial whatever the objectives: quality and the per-group table.
KEEP_POLICIES = ("front", "feasible", "all", "none")  # which trained models are kept as artifacts
ALWAYS_MEASURED = ("accuracy", "balanced_accuracy", "worst_group_accuracy",
                   "demographic_parity_difference", "equalized_odds_difference")


@dataclass(frozen=True)
class Objective:
    """A metric with a direction."""

    metric: str
    direction: Literal["maximize", "minimize"]

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise SpecTypeError(f"an objective's metric must be a metric name, got {self.metric!r}")
        if self.direction not in ("maximize", "minimize"):
            raise SpecError(f"direction must be 'maximize' or 'minimize', got {self.direction!r}")

    def to_record(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction}

    def __str__(self) -> str:
        return f"{self.direction} {self.metric}"


@dataclass(frozen=True)
class Constraint:
    """A metric with a bound. Its value follows Optuna's convention:
    ``value - bound`` for ``<=`` and ``bound - value`` for ``>=``; positive means violated."""

    metric: str
    op: Literal["<=", ">="]
    bound: float

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise SpecTypeError(f"a constraint's metric must be a metric name, got {self.metric!r}")
        if self.op not in ("<=", ">="):
            raise SpecError(f"op must be '<=' or '>=', got {self.op!r}")
        if isinstance(self.bound, bool) or not isinstance(self.bound, (int, float)) or not math.isfinite(self.bound):
            raise SpecError(f"the bound of a constraint on {self.metric!r} must be a finite number, got {self.bound!r}")
        object.__setattr__(self, "bound", float(self.bound))

    @property
    def key(self) -> str:
        """The name the constraint is stored under (``constraints:<key>`` in Optuna)."""
        return f"{self.metric} {self.op} {self.bound:g}"

    def violation(self, value: float) -> float:
        return value - self.bound if self.op == "<=" else self.bound - value

    def kept(self, value: Any) -> Any:
        """Whether ``value`` keeps the constraint (element-wise on arrays; :func:`motune._schema.kept`)."""
        return _schema.kept(None if value is None else self.violation(value))

    def broken(self, value: Any) -> Any:
        """Whether ``value`` breaks the constraint (element-wise on arrays); ``None`` is not a verdict."""
        return ~self.kept(value) if hasattr(value, "shape") else value is not None and not self.kept(value)

    def kept_with_margin(self, value: float, margin: float) -> bool:
        """Whether ``value`` keeps the constraint with ``margin`` (in the metric's units) to spare."""
        return bool(self.kept(value + margin if self.op == "<=" else value - margin))

    def worst_end(self, low: float | None, high: float | None) -> float | None:
        """The end of an interval ``[low, high]`` closer to breaking the constraint (``high`` for ``<=``)."""
        return high if self.op == "<=" else low

    def best_end(self, low: float | None, high: float | None) -> float | None:
        """The end of an interval farther from breaking the constraint (``low`` for ``<=``)."""
        return low if self.op == "<=" else high

    def kept_at_interval_end(self, low: float | None, high: float | None) -> bool | None:
        """Whether the interval's worst end keeps the constraint (``None`` without that end)."""
        worst = self.worst_end(low, high)
        return None if worst is None else bool(self.kept(worst))

    def to_record(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "bound": self.bound}

    def __str__(self) -> str:
        return self.key


def maximize(metric: str) -> Objective:
    return Objective(metric, "maximize")


def minimize(metric: str) -> Objective:
    return Objective(metric, "minimize")


def at_most(metric: str, bound: float) -> Constraint:
    """``metric <= bound``."""
    return Constraint(metric, "<=", bound)


def at_least(metric: str, bound: float) -> Constraint:
    """``metric >= bound``."""
    return Constraint(metric, ">=", bound)


@dataclass(eq=False, kw_only=True)
class Study:
    """A multi-objective study: run it with :meth:`optimize`.

    Parameters
    ----------
    name: the study's name in storage.
    task: the :class:`~motune.Task` to learn from.
    space: ``space(trial) -> dict`` suggesting hyperparameters with ``trial.suggest_*``
        (returning ``None`` means "use ``trial.params``").
    train: ``train(params, task, ctx) -> model``; the model needs ``predict(X)``.
        ``ctx`` is a :class:`~motune.run.TrialContext` (``ctx.seed``, ``ctx.trial_number``,
        ``ctx.report``). Python's, numpy's and torch's global random generators are seeded
        with ``ctx.seed`` before each trial.
    objectives: one or more :func:`maximize` / :func:`minimize`.
    constraints: :func:`at_most` / :func:`at_least`; infeasible trials never reach the front.
    metrics: more metric names to measure and record on every trial.
    metric_options: keyword options per metric function, e.g. ``{"latency": {"batch_size": 512}}``.
    storage: an Optuna storage URL or object; default ``sqlite:///motune.db``
        (or the ``MOTUNE_STORAGE`` environment variable).
    sampler: default Optuna's multi-objective TPE sampler (which reads the constraints Optuna
        stores) seeded per trial from ``seed`` and the trial number (:mod:`motune.run.sampling`): a
        fresh run is reproducible, and workers sharing a study never share a random stream. A
        function ``seed -> sampler`` (``lambda seed: optuna.samplers.GPSampler(seed=seed)``) runs
        another sampler with the same per-trial seeding; an Optuna sampler object runs as it is (one
        random stream per process: workers given ``GPSampler(seed=0)`` all draw the same one).
    seed: the sampler's seed; trial ``n`` gets ``ctx.seed = seed + n``.
    split: the split metrics are measured on (``"valid"``; the test split stays held out).
    measure_by_group: measure accuracy and the fairness metrics with their per-group table on
        every trial (default). Turn it off only when the objectives are not about a model's
        predictions on the task (e.g. a benchmark of motune itself).
    dashboard_constraints: also store the constraint values as the legacy ``constraints`` list,
        the only form optuna-dashboard 0.21 reads (default ``None``: on). Samplers never see that
        list (:mod:`motune.run.sampling` shows them every trial without it), so each constraint
        reaches them once, as ``constraints:<key>``.
    pruning: a :mod:`motune.pruning` policy deciding from ``ctx.report(step, ...)`` calls in
        ``train``; ``None`` never prunes; the default is :class:`motune.pruning.ForecastAware`: each
        report's final values are forecast from the study's completed curves, and a trial is stopped when,
        with probability at least ``1 - risk``, it would break a constraint or end off the feasible front.
        A train function that never reports is never pruned.
    max_step: the last step ``train`` reports (its last epoch): a report there is never pruned (the trial
        has paid for its training; it completes, feasible or not). Default: the largest step a
        completed trial of the study reported.
    sampler_sees_pruned: the sampler sees each pruned trial as if it had completed with the values of
        its last report (constraints included; :mod:`motune.run.sampling`), so it learns from them;
        ``"forecast"``: with the values the pruning policy forecast for its last step; ``False`` shows
        them as Optuna's plain PRUNED trials (without intermediate values either way).
    keep_models: which trained models are kept as artifacts: ``"front"`` (default: the front's, the
        others removed at the end of each run), ``"feasible"``, ``"all"`` or ``"none"``.
    timing: ``"per-device"`` (default: a latency run holds its device's lock; other workers may train
        meanwhile, and who did is recorded) or ``"exclusive"`` (no trial of any study on the host
        trains while one times; see :mod:`motune.locks`).
    version: the study's spec version (1, 2, ...): change an objective, a constraint's bound or the data and
        give the study a new version instead of a new name. Version 1 is stored under ``name``, version
        ``n`` under ``name@vn``; a new version records the previous one it follows and what changed
        ("equalized_odds_difference <= 0.1 -> <= 0.05"), shown by ``motune studies`` and the report;
        decisions keep the version they were made under, and ``motune check --constraints-of`` judges an
        old decision against a newer version's constraints.
    source_file: the Python file that defines the study (default: the file this ``Study(...)`` call is
        in), recorded so that ``motune confirm NAME`` can rebuild the task from storage alone.
    artifact_store: where models are kept: an Optuna artifact store (``FileSystemArtifactStore``,
        ``Boto3ArtifactStore`` ...) or a folder; default a folder beside a SQLite database (see
        :mod:`motune.run.artifacts`).
    heartbeat_s, heartbeat_grace_s: on an RDB storage, how often a running trial records that its
        process is alive, and after how long without one it is failed ("worker died") and retried
        (default 10 s and 30 s, or ``$MOTUNE_HEARTBEAT_S`` with a grace of 3 intervals; see
        :mod:`motune.run.storage`).
    """

    name: str
    task: Task | TextTask
    space: Callable[[Any], Mapping[str, Any] | None]
    train: Callable[..., Any]
    objectives: Sequence[Objective]
    constraints: Sequence[Constraint] = ()
    metrics: Sequence[str] = ()
    metric_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    storage: Any = None
    sampler: Any = None
    seed: int = 0
    split: str = "valid"
    description: str = ""
    measure_by_group: bool = True
    dashboard_constraints: bool | None = None
    pruning: Any = "default"
    max_step: int | None = None
    sampler_sees_pruned: bool | str = True
    heartbeat_s: float | None = None
    heartbeat_grace_s: float | None = None
    keep_models: str = "front"
    artifact_store: Any = None
    timing: str = "per-device"
    source_file: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        if self.source_file is None:
            self.source_file = _caller_file()
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise SpecError(f"version must be a positive int (1, 2, ...), got {self.version!r}")
        if not isinstance(self.name, str) or not self.name:
            raise SpecTypeError(f"name must be a non-empty string, got {self.name!r}")
        suffix = re.fullmatch(r"(.+)@v(\d+)", self.name)  # "name@v2": the stored name of a version
        if suffix:
            if self.version != 1 and int(suffix.group(2)) != self.version:
                raise SpecError(f"name {self.name!r} says version {suffix.group(2)} but version={self.version}; "
                                "give the plain name and version=N")
            self.version = int(suffix.group(2))
            if self.version < 1:
                raise SpecError(f"version must be a positive int (1, 2, ...), got {self.name!r}")
        self.family = suffix.group(1) if suffix else self.name
        self.name = _schema.versioned_name(self.family, self.version)  # the name it is stored under
        self.objectives = _as_tuple(self.objectives, (Objective, str))
        self.constraints = _as_tuple(self.constraints, (Constraint, str))
        self.metrics = _as_tuple(self.metrics, (str,))
        validate(self)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def measured_metrics(self) -> list[str]:
        """Every metric name measured on a trial, objectives first."""
        names = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        names += list(self.metrics) + (list(ALWAYS_MEASURED) if self.measure_by_group else [])
        return list(dict.fromkeys(names))

    @property
    def legacy_constraints(self) -> bool:
        """Whether constraint values are also stored as the legacy list optuna-dashboard 0.21 reads."""
        return self.dashboard_constraints is not False

    @property
    def static_metrics(self) -> list[str]:
        """Measured metrics that need no training (e.g. latency): pruning checks them at step 0."""
        return [n for n in self.measured_metrics if group_for(n).static]

    @property
    def pruning_policy(self):
        """The pruning policy in force (``None``: never prune); the default one is made once per study, so
        that what it caches between reports (a forecast's parsed peers) is kept."""
        if not isinstance(self.pruning, str):
            return self.pruning
        if getattr(self, "_default_policy", None) is None:
            self._default_policy = default_policy()
        return self._default_policy

    def spec_record(self) -> dict[str, Any]:
        """What must match when a stored study is resumed: objectives, constraints, the data, the split
        measured on and the metric options (anything else would mix incomparable trials), and the keep
        policy (a "front" worker would remove the models an "all" worker keeps)."""
        return {
            "objectives": [o.to_record() for o in self.objectives],
            "constraints": [c.to_record() for c in self.constraints],
            "data_fingerprint": self.task.fingerprint,
            "split": self.split,
            "metric_options": json.loads(json.dumps({k: dict(v) for k, v in self.metric_options.items()},
                                                    sort_keys=True, default=str)),
            "keep_models": self.keep_models,
            "version": self.version,
        }

    def optimize(
        self,
        n_trials: int | None = None,
        *,
        timeout: float | None = None,
        n_jobs: int = 1,
        show_progress: bool | None = None,
        callbacks: Sequence[Any] | None = None,
    ):
        """Run ``n_trials`` trials (and/or until ``timeout`` seconds); returns a :class:`~motune.Result`.

        Resumes the stored study of the same name when it exists (its objectives and constraints
        must match). ``show_progress`` defaults to on. ``callbacks``: :class:`motune.Callback`
        objects (plain-record hooks) and Optuna callbacks ``(study, frozen_trial)``, see
        :mod:`motune.run.callbacks`. Ctrl-C stops the run with no trial left RUNNING and returns
        what is stored (``result.interrupted`` says why); SIGTERM does the same, then exits with
        status 143.
        """
        from motune.run import (
            optimize,  # the documented lazy import: spec sits below run/
        )

        return optimize(self, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs, show_progress=show_progress,
                        callbacks=callbacks)

    def result(self):
        """This study's :class:`~motune.Result` read back from its storage."""
        from motune.run import load_study

        result = load_study(self.name, storage=self.storage, artifact_store=self.artifact_store)
        result.spec = self
        return result


def _caller_file() -> str | None:
    """The file of the first frame outside motune and dataclasses' generated code (where ``Study(...)`` is)."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        module = frame.f_globals.get("__name__", "")
        if not name.startswith("<") and not module.startswith(("motune.", "dataclasses")) and module != "motune":
            return str(Path(name).resolve()) if Path(name).is_file() else None
        frame = frame.f_back
    return None


def _as_tuple(value: Any, single: tuple[type, ...]) -> tuple:
    """One objective / constraint / metric name, or a sequence of them, as a tuple."""
    return (value,) if isinstance(value, single) else tuple(value)


def _check_arity(fn: Callable[..., Any], what: str, args: int, shape: str) -> None:
    try:
        inspect.signature(fn).bind(*([None] * args))
    except TypeError:
        raise SpecTypeError(f"{what} must take {args} positional argument(s): {shape}") from None
    except ValueError:  # a builtin without a signature: let it run
        pass


def validate(study: Study) -> None:
    """Check a study definition; raise before any trial runs."""
    if not isinstance(study.name, str) or not study.name.strip():
        raise SpecError(f"a study needs a non-empty name, got {study.name!r}")
    if not isinstance(study.task, (Task, TextTask)):
        raise SpecTypeError(
            "task must be a motune.Task or motune.TextTask (see Task.from_frame or motune.data), "
            f"got {type(study.task).__name__}"
        )
    for what in ("space", "train"):
        if not callable(getattr(study, what)):
            raise SpecTypeError(f"{what} must be a function, got {type(getattr(study, what)).__name__}")
    _check_arity(study.space, "space", 1, "space(trial) -> dict of params")
    _check_arity(study.train, "train", 3, "train(params, task, ctx) -> fitted model")
    if not study.objectives:
        raise SpecError("a study needs at least one objective, e.g. mt.maximize('accuracy')")
    for kind, items, cls, hint in (
        ("objectives", study.objectives, Objective, "mt.maximize('accuracy') or mt.minimize('latency_p95_ms')"),
        ("constraints", study.constraints, Constraint, "mt.at_most('equalized_odds_difference', 0.1)"),
    ):
        for item in items:
            if not isinstance(item, cls):
                raise SpecTypeError(f"{kind} must hold {cls.__name__} values such as {hint}; got {item!r}")
    seen: set[str] = set()
    for o in study.objectives:
        if o.metric in seen:
            raise SpecError(f"duplicate objective on {o.metric!r}: each metric can be an objective once")
        seen.add(o.metric)
    keys = [c.key for c in study.constraints]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise SpecError(f"duplicate constraint {dupes[0]!r}")
    for role, names in (
        ("objective", [o.metric for o in study.objectives]),
        ("constraint", [c.metric for c in study.constraints]),
        ("metric", list(study.metrics)),
    ):
        for name in names:
            try:
                group_for(name)
            except UnknownMetricError as err:
                raise UnknownMetricError(f"{role} on {name!r}: {err}") from None
    if not study.task.is_binary:
        explicit = [o.metric for o in study.objectives] + [c.metric for c in study.constraints] + list(study.metrics)
        for group in groups_for(explicit):
            asked = [n for n in explicit if n in group.binary_only]
            if asked:
                raise SpecError(
                    f"metric {asked[0]!r} needs a binary label, but task {study.task.name!r} has "
                    f"{study.task.n_classes} classes"
                )
    if study.split not in SPLITS:
        raise SpecError(f"split must be one of {list(SPLITS)}, got {study.split!r}")
    _validate_metric_options(study)
    if not (study.pruning is None or study.pruning == "default" or isinstance(study.pruning, PruningPolicy)):
        raise SpecTypeError(f"pruning must be a motune.pruning policy, None or 'default'; got {study.pruning!r}")
    if isinstance(study.seed, bool) or not isinstance(study.seed, int):
        raise SpecTypeError(f"seed must be an int, got {study.seed!r}")
    if study.max_step is not None and (isinstance(study.max_step, bool) or not isinstance(study.max_step, int)
                                       or study.max_step < 1):
        raise SpecError(f"max_step must be a positive int (the last step train reports) or None, "
                        f"got {study.max_step!r}")
    if study.sampler_sees_pruned not in (True, False, "forecast") or study.sampler_sees_pruned in (0, 1) \
            and not isinstance(study.sampler_sees_pruned, bool):
        raise SpecTypeError(f"sampler_sees_pruned must be True, False or 'forecast', got {study.sampler_sees_pruned!r}")
    import optuna

    if study.sampler is not None and not isinstance(study.sampler, optuna.samplers.BaseSampler) \
            and not callable(study.sampler):
        raise SpecTypeError(f"sampler must be an Optuna sampler or a function seed -> sampler, got {study.sampler!r}")
    if study.dashboard_constraints not in (None, True, False):
        raise SpecTypeError(f"dashboard_constraints must be True, False or None, got {study.dashboard_constraints!r}")
    check_heartbeat(study.heartbeat_s, study.heartbeat_grace_s)
    if study.timing not in TIMING_MODES:
        raise SpecError(f"timing must be one of {list(TIMING_MODES)}, got {study.timing!r}")
    if study.keep_models not in KEEP_POLICIES:
        raise SpecError(f"keep_models must be one of {list(KEEP_POLICIES)}, got {study.keep_models!r}")


def check_heartbeat(heartbeat_s: Any, grace_s: Any) -> None:
    """Raise :class:`SpecError` unless each heartbeat setting is ``None`` or a number of seconds >= 1."""
    for what, value in (("heartbeat_s", heartbeat_s), ("heartbeat_grace_s", grace_s)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1):
            raise SpecError(f"{what} must be a number of seconds >= 1, got {value!r}")


def _validate_metric_options(study: Study) -> None:
    groups = {g.key: g for g in groups_for(study.measured_metrics)}
    for key, options in study.metric_options.items():
        if key not in groups:
            raise SpecError(
                f"metric_options has {key!r}, but no measured metric function has that key; "
                f"measured ones are {sorted(groups)}"
            )
        if not isinstance(options, Mapping):
            raise SpecTypeError(f"metric_options[{key!r}] must be a dict of keyword options, got {options!r}")
        if "split" in options:
            raise SpecError(f"metric_options[{key!r}] sets 'split'; set Study(split=...) so every metric "
                            "is measured on the same split")
        parameters = inspect.signature(groups[key].fn).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            allowed = [n for n, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
            unknown = sorted(set(options) - set(allowed))
            if unknown:
                raise SpecError(f"metric_options[{key!r}] has unknown option(s) {unknown}; it takes {allowed}")
        if groups[key].validate is not None:
            try:
                groups[key].validate(**options)
            except (TypeError, ValueError) as err:
                raise SpecError(f"metric_options[{key!r}]: {err}") from None
