"""A transformers ``TrainerCallback`` that reports to motune, so multi-objective studies prune.

transformers' own ``hyperparameter_search`` reports to Optuna only for a single
objective (Optuna's ``trial.report`` does not exist for several). With
:class:`MotuneCallback` each evaluation of a ``Trainer`` becomes a motune report:
the Trainer's eval metrics (``eval_loss``, ``eval_accuracy``, ...) plus the
study's objective and constraint metrics (fairness on the probe, ...) that
motune measures on the model at that moment. When the study's pruning policy
ends the trial, the callback asks the Trainer to stop (no more steps, no
checkpoint), lets it finish its loop and the other callbacks' ``on_train_end``,
then raises ``optuna.TrialPruned`` from its own ``on_train_end`` so the trial
ends as pruned::

    callback = MotuneCallback(ctx, lambda model: TextClassifier(model, tokenizer, max_length=64))
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid, callbacks=[callback])
    trainer.train()        # raises optuna.TrialPruned if motune pruned the trial

The report's step is the number of evaluations so far (with
``eval_strategy="epoch"``, the epoch), so successive-halving rungs are epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from transformers import TrainerCallback


class MotuneCallback(TrainerCallback):
    """Report each evaluation to motune's trial context ``ctx``.

    ``wrap(model)`` turns the Trainer's model into what motune measures (e.g. a
    :class:`motune.models.transformers.TextClassifier`); ``None`` reports only the eval
    metrics. ``prefix`` keeps eval metrics apart from the study's metric names.
    """

    def __init__(self, ctx: Any, wrap: Callable[[Any], Any] | None = None, *, prefix: str = "trainer_") -> None:
        self.ctx = ctx
        self.wrap = wrap
        self.prefix = prefix
        self.evaluations = 0
        self.pruned: optuna.TrialPruned | None = None
        self.reports: list[dict[str, float]] = []

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    model: Any = None, **kwargs: Any) -> Any:
        if self.pruned is not None:
            return control
        self.evaluations += 1
        reported = {f"{self.prefix}{k}": float(v) for k, v in (metrics or {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        target = None if self.wrap is None or model is None else self.wrap(model)
        try:
            self.reports.append(self.ctx.report(self.evaluations, target, metrics=reported))
        except optuna.TrialPruned as pruned:
            self.pruned = pruned
            control.should_training_stop = True
            control.should_save = False
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.pruned is not None:
            raise self.pruned
        return control
