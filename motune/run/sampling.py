"""The default sampler, seeded per trial.

Trial numbers are unique within a study, whichever worker, process or machine
runs the trial. :class:`TrialSeededSampler` draws trial ``n``'s suggestions
with a sampler seeded from ``(seed, n)``: a fresh run is reproducible from
its seed (trial ``n`` of two runs with the same history gets the same
suggestion), and two workers never share a random stream, because they never
run the same trial number. (Seeding each worker with the same seed, as motune
did before, made workers starting together on one study suggest the same
configurations.) A retried trial keeps its predecessor's params.

The sampler behind it is Optuna's multi-objective TPE (which reads the
constraint values motune stores), made anew for each trial with that
trial's seed; it keeps no state between trials but its random stream, so
nothing else changes. ``Study(sampler=factory)`` with a function ``seed ->
sampler`` (e.g. ``lambda seed: optuna.samplers.GPSampler(seed=seed)``)
puts any sampler behind the same per-trial seeding; a sampler *object*
passed as ``Study(sampler=...)`` keeps one random stream per process, which
workers started alike share.

:class:`SamplerView` wraps every sampler of a study that prunes. Optuna's
TPE ranks a PRUNED trial only by its Optuna intermediate values, and in a
multi-objective study a pruned trial with intermediate values makes TPE's
next suggestion raise (it reads ``study.direction``; Optuna 5.0.0); motune
writes one value per report for optuna-dashboard's learning curves
(:mod:`motune.run.context`), so the sampler never sees them on a pruned
trial. Without them every pruned trial looks alike to TPE and its "good"
set fills with arbitrary early ones; so with ``as_completed`` (the study's
``sampler_sees_pruned``, default) the sampler sees a pruned trial as
completed with the values of its last report, and with that report's
constraint values: the objectives there are partly trained (usually worse
than a completed trial's), and a constraint broken there marks the trial
infeasible. With ``as_completed="forecast"`` a pruned trial is shown at the
values its pruning policy forecast for its last step instead (where it
forecast one). Every trial is shown without the legacy ``constraints`` list
optuna-dashboard reads: Optuna merges it into ``FrozenTrial.constraints``
beside the ``constraints:<key>`` values, so a sampler would otherwise see
each constraint twice.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from motune import _schema
from motune.run import _optuna_compat as compat
from motune.run.seeding import sampler_seed


class TrialSeededSampler(BaseSampler):
    """Delegates each trial to ``make(sampler_seed(seed, trial.number))`` (default: Optuna's TPESampler;
    :mod:`motune.run.seeding` says why this seed is not ``ctx.seed``)."""

    def __init__(self, seed: int = 0, make: Callable[[int], BaseSampler] | None = None) -> None:
        self.seed = seed
        self._make = make or (lambda s: optuna.samplers.TPESampler(seed=s))
        self._by_trial: dict[int, BaseSampler] = {}
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return f"TrialSeededSampler(seed={self.seed})"

    def _for(self, trial: Any) -> BaseSampler:
        with self._lock:  # Optuna's n_jobs threads share the sampler
            sampler = self._by_trial.get(trial.number)
            if sampler is None:
                sampler = self._by_trial[trial.number] = self._make(sampler_seed(self.seed, trial.number))
            return sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        sampler = self._for(trial)
        try:
            sampler.after_trial(study, trial, state, values)
        finally:
            with self._lock:
                self._by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:  # the stream is the trial's; nothing to reseed
        pass


AS_COMPLETED = (True, False, "forecast")  # how pruned trials are shown: last report, plain PRUNED, forecast


def make_sampler(sampler: Any, seed: int) -> BaseSampler:
    """The sampler a study runs with: ``None`` -> Optuna's TPE seeded per trial; a factory ``seed -> sampler``
    -> that, seeded per trial; a sampler object -> as it is."""
    if sampler is None:
        return TrialSeededSampler(seed)
    if isinstance(sampler, BaseSampler):
        return sampler
    return TrialSeededSampler(seed, make=sampler)


class SamplerView(BaseSampler):
    """Delegates to ``sampler``, which sees every trial without the legacy constraint list, pruned trials
    without intermediate values and, with ``as_completed``, each one that reported every objective as
    completed with its last report's values and constraint values (``"forecast"``: its forecast final
    values; see the module docstring)."""

    def __init__(self, sampler: BaseSampler, *, objectives: list[str], constraints: list[tuple[str, Any]],
                 as_completed: bool | str = True) -> None:
        self.sampler = sampler
        self._objectives = objectives
        self._constraints = constraints  # (key, motune.Constraint)
        self.as_completed = as_completed
        self._shown: dict[tuple[int, Any], Any] = {}  # a finished trial never changes: shown once, reused

    def __str__(self) -> str:
        return f"SamplerView({self.sampler})"

    def shown(self, trial: Any) -> Any:
        """The trial as the sampler sees it."""
        if not trial.state.is_finished():
            return _without_legacy(trial)
        key = (trial.number, trial.datetime_start)  # samplers read every trial at each suggestion
        if key not in self._shown:
            self._shown[key] = self._shown_pruned(trial) if trial.state == optuna.trial.TrialState.PRUNED \
                else _without_legacy(trial)
        return self._shown[key]

    def _last_values(self, trial: Any) -> dict[str, float]:
        """The values a pruned trial is shown completed with: its last report's, or its forecast's."""
        if not self.as_completed:
            return {}
        reports = _schema.read_reports(trial.system_attrs, trial.number)
        last = dict(reports[max(reports)]) if reports else {}
        if self.as_completed == "forecast":
            forecasts = _schema.read_forecasts(trial.system_attrs, trial.number)
            if forecasts:
                points = forecasts[max(forecasts)].get("metrics", {})
                last |= {m: f["point"] for m, f in points.items() if f.get("point") is not None}
        return last

    def _shown_pruned(self, trial: Any) -> Any:
        last = self._last_values(trial)
        needed = [*self._objectives, *(c.metric for _, c in self._constraints)]
        if not all(name in last and math.isfinite(float(last[name])) for name in needed):
            # a report without every objective and constraint value (or with a non-finite one) cannot be
            # shown as completed: samplers need as many constraints as the completed trials carry
            bare = _without_legacy(trial)
            if not bare.intermediate_values:
                return bare
            bare = copy.copy(bare)  # a pruned trial with intermediate values would make TPE raise
            bare.intermediate_values = {}
            return bare
        keys = [key for key, _ in self._constraints]
        violations = [c.violation(last[c.metric]) for _, c in self._constraints]
        system = {k: v for k, v in trial.system_attrs.items() if k != _schema.LEGACY_CONSTRAINTS_ATTR}
        system |= _schema.constraint_attrs(keys, violations, legacy=False)  # a user's own constraint values stay
        shown = copy.copy(trial)  # through FrozenTrial's public setters
        shown.state = optuna.trial.TrialState.COMPLETE
        shown.values = [float(last[name]) for name in self._objectives]
        shown.system_attrs = system
        shown.intermediate_values = {}
        return shown

    def _view(self, study: optuna.Study) -> Any:
        return compat.StudyView(study, self.shown)

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self.sampler.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.sampler.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.sampler.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def _without_legacy(trial: Any) -> Any:
    """``trial`` without the legacy ``constraints`` list (a copy only when it has one)."""
    if _schema.LEGACY_CONSTRAINTS_ATTR not in trial.system_attrs:
        return trial
    bare = copy.copy(trial)
    bare.system_attrs = {k: v for k, v in trial.system_attrs.items() if k != _schema.LEGACY_CONSTRAINTS_ATTR}
    return bare
