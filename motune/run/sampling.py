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
nothing else changes.

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
infeasible. Completed trials are shown as they are.
"""

from __future__ import annotations

import copy
import hashlib
import math
import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler

from motune import _schema
from motune.run import _optuna_compat as compat


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s suggestions in a study seeded with ``seed``."""
    digest = hashlib.sha256(f"motune:{seed}:{number}".encode()).hexdigest()
    return int(digest[:8], 16)


class TrialSeededSampler(BaseSampler):
    """Delegates each trial to ``make(trial_seed(seed, trial.number))`` (default: Optuna's TPESampler)."""

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
                sampler = self._by_trial[trial.number] = self._make(trial_seed(self.seed, trial.number))
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


class SamplerView(BaseSampler):
    """Delegates to ``sampler``, which sees pruned trials without intermediate values and, with
    ``as_completed``, each one that reported every objective as completed with its last report's
    values and constraint values (see the module docstring)."""

    def __init__(self, sampler: BaseSampler, *, objectives: list[str], constraints: list[tuple[str, Any]],
                 legacy_constraints: bool, as_completed: bool = True) -> None:
        self.sampler = sampler
        self._objectives = objectives
        self._constraints = constraints  # (key, motune.Constraint)
        self._legacy = legacy_constraints
        self.as_completed = as_completed
        self._shown: dict[tuple[int, Any], Any] = {}  # a pruned trial never changes: shown once, reused

    def __str__(self) -> str:
        return f"SamplerView({self.sampler})"

    def shown(self, trial: Any) -> Any:
        """The trial as the sampler sees it."""
        if trial.state != optuna.trial.TrialState.PRUNED:
            return trial
        key = (trial.number, trial.datetime_start)  # samplers read every trial at each suggestion
        if key not in self._shown:
            self._shown[key] = self._shown_pruned(trial)
        return self._shown[key]

    def _shown_pruned(self, trial: Any) -> Any:
        reports = _schema.read_reports(trial.system_attrs, trial.number) if self.as_completed else {}
        last = reports[max(reports)] if reports else {}
        needed = [*self._objectives, *(c.metric for _, c in self._constraints)]
        if not all(name in last and math.isfinite(float(last[name])) for name in needed):
            # a report without every objective and constraint value (or with a non-finite one) cannot be
            # shown as completed: samplers need as many constraints as the completed trials carry
            if not trial.intermediate_values:
                return trial
            bare = copy.copy(trial)  # a pruned trial with intermediate values would make TPE raise
            bare.intermediate_values = {}
            return bare
        keys = [key for key, _ in self._constraints]
        violations = [c.violation(last[c.metric]) for _, c in self._constraints]
        system = dict(trial.system_attrs)  # only motune's constraint values replaced; a user's own stay
        system |= _schema.constraint_attrs(keys, violations, legacy=self._legacy)
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
