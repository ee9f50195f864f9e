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
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from transformers import TrainerCallback

from motune.errors import SpecError, SpecTypeError
from motune.pruning import PruningPolicy, default_policy
from motune.run import SamplerView, record_values, report_step
from motune.spec import Constraint, Objective

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


class MultiObjectiveSearch:
    """motune's pruning and constraints for ``Trainer.hyperparameter_search(backend="optuna")`` with several
    directions, from an existing Trainer script::

        search = MultiObjectiveSearch(trainer, objectives=[mt.maximize("eval_accuracy"), mt.minimize("eval_loss")],
                                      constraints=[mt.at_most("eval_loss", 0.7)])
        best = trainer.hyperparameter_search(
            backend="optuna", n_trials=16, hp_space=search.space(my_hp_space), direction=search.directions,
            compute_objective=search.compute_objective, **search.study_kwargs(storage="sqlite:///hp.db",
                                                                              study_name="my-search"))

    transformers reports to Optuna only for one objective, so a multi-objective search never prunes.
    Here each evaluation of the Trainer is stored as a motune report of its eval metrics (the objectives
    and constraints name them), with the first objective as the Optuna intermediate value (learning
    curves in optuna-dashboard), and the pruning policy (``"default"``, ``None`` or a
    :mod:`motune.pruning` policy) decides on it, against the other trials' reports at that step; a pruned
    trial runs every callback's ``on_train_end`` and raises ``optuna.TrialPruned`` from the evaluation,
    as transformers does for one objective, and Optuna records it PRUNED. ``compute_objective`` returns
    the objectives' values and sets each constraint's value on the trial (``Trial.set_constraint``), so
    Optuna's samplers, ``best_trials``, ``motune front`` and ``motune report`` see feasibility.
    ``study_kwargs`` gives the study motune's sampler view (pruned trials carry intermediate values,
    which would make TPE raise in a multi-objective study). Steps are epochs (``step="epoch"``) or
    optimiser steps (``"global_step"``); ``max_step`` is the last one (default: learned from completed
    trials).
    """

    def __init__(self, trainer: Any, *, objectives: list[Any], constraints: list[Any] = (), pruning: Any = "default",
                 step: str = "epoch", max_step: int | None = None) -> None:
        if step not in STEPS:
            raise SpecError(f"step must be one of {list(STEPS)}, got {step!r}")
        if not objectives or not all(isinstance(o, Objective) for o in objectives):
            raise SpecTypeError("objectives must be mt.maximize(...) / mt.minimize(...) of the Trainer's eval "
                                "metrics (eval_loss, eval_accuracy, ...)")
        if not all(isinstance(c, Constraint) for c in constraints):
            raise SpecTypeError("constraints must be mt.at_most(...) / mt.at_least(...)")
        if not (pruning is None or pruning == "default" or isinstance(pruning, PruningPolicy)):
            raise SpecTypeError(f"pruning must be a motune.pruning policy, None or 'default'; got {pruning!r}")
        self.objectives = list(objectives)
        self.constraints = list(constraints)
        self.policy = default_policy() if pruning == "default" else pruning
        self.step = step
        self.max_step = max_step
        self.trainer = trainer
        self._trial: Any = None
        self._history: list[tuple[int, dict[str, float]]] = []
        trainer.add_callback(_SearchCallback(self))

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def space(self, hp_space: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        """``hp_space`` (trial -> TrainingArguments overrides), remembering each trial as it starts."""
        def suggest(trial: Any) -> dict[str, Any]:
            self._trial, self._history = trial, []
            study = getattr(trial, "study", None)
            if study is not None and not study.metric_names:  # so that motune and the dashboard show the names
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([o.metric for o in self.objectives])
            return hp_space(trial)

        return suggest

    def study_kwargs(self, *, sampler: Any = None, seed: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """Keyword arguments for ``hyperparameter_search`` (passed to ``optuna.create_study``): ``sampler``
        (default TPE) behind motune's sampler view, and any others (``storage``, ``study_name`` ...)."""
        inner = sampler if sampler is not None else optuna.samplers.TPESampler(seed=seed)
        view = SamplerView(inner, objectives=[o.metric for o in self.objectives],
                           constraints=[(c.key, c) for c in self.constraints])
        return {"sampler": view, **kwargs}

    def _values(self, metrics: dict[str, float]) -> dict[str, float]:
        names = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        missing = [n for n in names if n not in metrics]
        if missing:
            raise SpecError(f"the Trainer's evaluation has no {missing} (it has {sorted(metrics)}): name the eval "
                            "metrics (eval_loss, eval_<your compute_metrics keys>) in the objectives and constraints")
        return {n: float(metrics[n]) for n in names}

    def compute_objective(self, metrics: dict[str, float]) -> list[float]:
        """The objectives' values from the Trainer's eval metrics; sets the constraints on the trial."""
        values = self._values(metrics)
        trial = self._trial
        if trial is not None and hasattr(trial, "set_constraint"):
            record_values(trial, values, self.constraints)  # every evaluation: the last one's values stand
        return [values[o.metric] for o in self.objectives]

    def _on_evaluate(self, state: Any, control: Any, metrics: dict[str, float]) -> None:
        trial = self._trial
        if trial is None or not hasattr(trial, "study"):
            return
        step = int(state.global_step) if self.step == "global_step" else int(round(state.epoch or 0))
        if self._history and step <= self._history[-1][0]:
            return  # one report per step
        values = self._values(metrics)
        last = self.max_step  # else this trial's own end: its Trainer knows it (batch size may be searched)
        if last is None:
            last = int(state.max_steps) if self.step == "global_step" else math.ceil(self.trainer.args.num_train_epochs)
        decision = report_step(trial, step, values, self._history, policy=self.policy,
                                    objectives=self.objectives, constraints=self.constraints, max_step=last)
        self._history.append((step, values))
        if decision is not None:
            self.trainer.callback_handler.on_train_end(self.trainer.args, state, control)
            raise optuna.TrialPruned(f"{decision.rule}: {decision.reason}")


class _SearchCallback(TrainerCallback):
    def __init__(self, search: MultiObjectiveSearch) -> None:
        self.search = search

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> Any:
        self.search._on_evaluate(state, control, dict(metrics or {}))
        return control
