"""A transformers ``TrainerCallback`` that reports to motune, so multi-objective studies prune.

transformers' own ``hyperparameter_search`` reports to Optuna only for a single
objective (Optuna's ``trial.report`` does not exist for several). With
:class:`MotuneCallback` each evaluation of a ``Trainer`` becomes a motune report:
the Trainer's eval metrics (``eval_loss``, ``eval_accuracy``, ...) plus the
study's objective and constraint metrics (fairness on the probe, ...) that
motune measures on the model at that moment. When the study's pruning policy
ends the trial, the callback asks the Trainer to stop (no further training step,
no checkpoint at that evaluation) and ``trainer.train()`` returns normally, with
every callback's ``on_train_end`` run; when ``train`` returns, motune ends the
trial as pruned (the trial context remembers the decision)::

    callback = MotuneCallback(ctx, lambda model: TextClassifier(model, tokenizer, max_length=64))
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid, callbacks=[callback])
    trainer.train()        # stops early when motune prunes; callback.pruned says why
    return TextClassifier(model, tokenizer, max_length=64)

Steps: with ``step="epoch"`` (default) a report's step is the epoch
(``round(state.epoch)``), so successive-halving rungs are epochs; with
``step="global_step"`` it is the optimiser step. One report per step: a second
evaluation at the same step (another eval dataset, ``eval_on_start`` at epoch 0)
is not reported. A ``save_strategy="best"`` Trainer may still save a checkpoint
at the pruned evaluation (transformers decides that after the callback).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from transformers import TrainerCallback

from motune.errors import SpecError, SpecTypeError

STEPS = ("epoch", "global_step")


class MotuneCallback(TrainerCallback):
    """Report each evaluation to motune's trial context ``ctx``.

    ``wrap(model)`` turns the Trainer's model into what motune measures (e.g. a
    :class:`motune.models.transformers.TextClassifier`); ``None`` reports only the eval
    metrics. ``prefix`` keeps eval metrics apart from the study's metric names.
    """

    def __init__(self, ctx: Any, wrap: Callable[[Any], Any] | None = None, *, step: str = "epoch",
                 prefix: str = "trainer_") -> None:
        if step not in STEPS:
            raise SpecError(f"step must be one of {list(STEPS)}, got {step!r}")
        if wrap is not None and not callable(wrap):
            raise SpecTypeError(f"wrap must be a function model -> motune model, got {type(wrap).__name__}")
        self.ctx = ctx
        self.wrap = wrap
        self.step = step
        self.prefix = prefix
        self.last_step = 0
        self.pruned: optuna.TrialPruned | None = None
        self.reports: list[dict[str, float]] = []

    def _step(self, state: Any) -> int:
        if self.step == "global_step":
            return int(state.global_step)
        return int(round(state.epoch or 0))

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    model: Any = None, **kwargs: Any) -> Any:
        step = self._step(state)
        if self.pruned is not None or step <= self.last_step:
            return control
        self.last_step = step
        reported = {f"{self.prefix}{k}": float(v) for k, v in (metrics or {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        target = None if self.wrap is None or model is None else self.wrap(model)
        try:
            self.reports.append(self.ctx.report(step, target, metrics=reported))
        except optuna.TrialPruned as pruned:
            self.pruned = pruned
            control.should_training_stop = True
            control.should_save = False
        return control
