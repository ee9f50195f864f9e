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
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import BaseSampler


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
