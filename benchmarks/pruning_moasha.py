"""Syne Tune 0.16's MOASHA on a pruning-benchmark problem, driven trial by trial like motune's arms.

``pip install -e ".[bench]"`` installs ``syne-tune==0.16.0``. MOASHA samples
configurations at random from the same space, trains with the same loop,
measures the same metrics after each epoch and stops a trial when its
bracket says so (rungs at 1, 3, 9 with ``reduction_factor=3``, ``max_t=27``);
it ranks on the two objectives (it has no notion of constraints).

In 0.16.0 the default ranking, ``NonDominatedPriority``, returns an
*ordering* (the indices of the items, best first; ``nondominated_sort``),
while ``Bracket.on_result`` reads what it gets as one priority per item
(lower is better) and takes the last entry as the new trial's: so the new
trial is judged by the index of whichever trial was ranked last.
:func:`ranking_check` shows it on three points; ``corrected=True`` runs the
same scheduler with the ordering turned into per-item positions.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import numpy as np


def _priority(corrected: bool) -> Any:
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority

    if not corrected:
        return NonDominatedPriority()

    class PositionPriority(NonDominatedPriority):
        """The same non-dominated sort, returned as each item's position (what Bracket expects)."""

        def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
            order = np.asarray(super().priority_unsafe(objectives))
            positions = np.empty(len(order), dtype=float)
            positions[order] = np.arange(len(order))
            return positions

    return PositionPriority()


def ranking_check() -> dict[str, Any]:
    """Three recorded trials and a new one that dominates them all (objectives minimised):
    what each reading of the ranking decides for the new trial at a rung with ``reduction_factor=3``."""
    from syne_tune.optimizer.schedulers.asha import Bracket

    out = {}
    for corrected in (False, True):
        bracket = Bracket(1, 27, 3, 0, _priority(corrected))
        for trial_id, (a, b) in enumerate([(0.3, 0.3), (0.5, 0.5), (0.9, 0.9)]):
            bracket.on_result(trial_id, 1, {"a": a, "b": b})
        out["corrected" if corrected else "published"] = bracket.on_result(99, 1, {"a": 0.1, "b": 0.1})
    out["what"] = ("a new trial that dominates all three recorded ones at rung 1: the published ranking "
                   f"says {out['published']}, the corrected one {out['corrected']}")
    return out


def run_moasha(problem: Any, task: Any, *, seed: int, budget_epochs: int, corrected: bool, max_epochs: int,
               measure_metrics: Any) -> list[dict[str, Any]]:
    """Trials in order until ``budget_epochs`` are spent; each ``{"trial", "state", "epochs", "seconds",
    "metrics", "reports"}`` (``metrics``: the final ones of a trial that trained all epochs)."""
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer.scheduler import SchedulerDecision
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    np.random.seed(seed)  # MOASHA samples configurations and brackets from numpy's global generator
    scheduler = MOASHA(config_space=problem.syne_space(), metrics=["error", "demographic_parity_difference"],
                       do_minimize=True, time_attr="epoch", max_t=max_epochs, grace_period=1, reduction_factor=3,
                       multiobjective_priority=_priority(corrected), random_seed=seed)
    trials, used = [], 0
    while used < budget_epochs:
        began = time.perf_counter()
        config = scheduler.suggest().config
        trial = Trial(trial_id=len(trials), config=config, creation_time=datetime.now())
        scheduler.on_trial_add(trial)
        reports, state = {}, "COMPLETE"
        for epoch, model in problem.epochs(config, task, seed + trial.trial_id):
            values = measure_metrics(model, task)
            reports[epoch] = values
            used += 1
            result = {"epoch": epoch, "error": 1.0 - values["accuracy"],
                      "demographic_parity_difference": values["demographic_parity_difference"]}
            if epoch >= max_epochs:
                scheduler.on_trial_result(trial, result)
                scheduler.on_trial_complete(trial, result)
                break
            if scheduler.on_trial_result(trial, result) == SchedulerDecision.STOP:
                state = "PRUNED"
                scheduler.on_trial_remove(trial)
                break
        trials.append({"trial": trial.trial_id, "state": state, "epochs": len(reports),
                       "seconds": time.perf_counter() - began,
                       "metrics": reports[max(reports)] if state == "COMPLETE" else None,
                       "params": {k: (v.item() if hasattr(v, "item") else v) for k, v in config.items()},
                       "reports": reports})
    return trials
