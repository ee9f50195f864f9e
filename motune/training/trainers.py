"""The combiners and the MODPO loss in the transformers ``Trainer`` path.

- :class:`MultiObjectiveTrainer`: ``compute_loss`` is a combiner of
  :mod:`motune.training.combiners` over the classifier's logits; rows carry
  ``labels`` and, for group surrogates, ``groups``
  (:meth:`motune.models.transformers.TextClassifier.dataset` with ``groups=``)
  and any ``extra_*`` tensors, handed to the surrogates as ``batch.inputs``
  (a dict; e.g. a perturbed copy of each text for a robustness surrogate,
  ``studies/text_mo_training.py``); each epoch ends with the combiner's
  ``end_epoch`` (its history in ``trainer.mo_loss.history``, and with
  ``ctx=`` stored with the trial as the ``training`` attribute, as ``fit``
  does). An evaluation's loss is the first objective's surrogate alone, so
  evaluation rows need only what that one reads (cross-entropy: labels).
- :class:`ModpoTrainer`: a causal LM fine-tuned on
  :class:`~motune.training.language.PreferencePairs` with the MODPO loss
  against a frozen ``ref_model``; its evaluation loss is the same loss.

Both keep every column of their rows (``remove_unused_columns`` is set to
False: the rows carry columns the model's ``forward`` does not take) and
return a per-minibatch mean loss (``model_accepts_loss_kwargs`` is False, so
the Trainer scales it for gradient accumulation). With gradient accumulation a
constrained combiner moves its multipliers once per minibatch, not per
optimizer step: its ``dual_lr`` acts that many times per step.
This module imports transformers; :mod:`motune.training` loads it on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import transformers

from motune.training.language import modpo_loss, sequence_logps
from motune.training.surrogates import Batch


class _EndEpoch(transformers.TrainerCallback):
    def __init__(self, loss: Any, ctx: Any) -> None:
        self.loss, self.ctx = loss, ctx

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.loss.end_epoch()
        if self.ctx is not None:
            self.ctx.set_attr("training", self.loss.history)
        return control


def _own_loss(trainer: Any) -> None:
    trainer.args.remove_unused_columns = False  # read when the dataloaders are built, after __init__
    trainer.model_accepts_loss_kwargs = False  # compute_loss returns a mean: the Trainer divides for accumulation


class MultiObjectiveTrainer(transformers.Trainer):
    """A ``Trainer`` whose loss is ``mo_loss(logits, labels, groups)`` (a motune.training combiner)."""

    def __init__(self, *args: Any, mo_loss: Any, ctx: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _own_loss(self)
        self.mo_loss = mo_loss.attach(self.model)
        self.add_callback(_EndEpoch(mo_loss, ctx))

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        groups = inputs.pop("groups", None)
        extra = {k: inputs.pop(k) for k in [k for k in inputs if k.startswith("extra_")]}
        outputs = model(**inputs)
        if not model.training:  # an evaluation: the first objective only
            batch = Batch(logits=outputs.logits, y=labels, groups=groups, inputs=extra or None, module=model)
            loss = self.mo_loss.objectives[0](batch)
        else:
            loss = self.mo_loss(outputs.logits, labels, groups, inputs=extra or None)
        return (loss, outputs) if return_outputs else loss


class ModpoTrainer(transformers.Trainer):
    """A causal LM trained with the MODPO loss (``weights``, ``beta``, ``objective``) against ``ref_model``.
    ``rewards`` keeps each training step's mean implicit rewards of chosen and rejected responses."""

    def __init__(self, *args: Any, ref_model: Any, weights: Sequence[float], beta: float = 0.1,
                 objective: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _own_loss(self)
        self.ref_model = ref_model.to(self.args.device).eval().requires_grad_(False)
        self.weights, self.beta, self.objective = list(weights), float(beta), int(objective)
        self.rewards: list[dict[str, float]] = []

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        import torch

        def logps(m: Any, side: str) -> Any:
            return sequence_logps(m, inputs[f"{side}_input_ids"], inputs[f"{side}_attention_mask"],
                                  inputs[f"{side}_response_mask"])

        policy_chosen, policy_rejected = logps(model, "chosen"), logps(model, "rejected")
        with torch.no_grad():
            reference_chosen, reference_rejected = logps(self.ref_model, "chosen"), logps(self.ref_model, "rejected")
        loss, chosen, rejected = modpo_loss(
            policy_chosen, policy_rejected, reference_chosen, reference_rejected, weights=self.weights,
            beta=self.beta, objective=self.objective, margin_chosen=inputs.get("margin_chosen"),
            margin_rejected=inputs.get("margin_rejected"))
        if model.training:
            self.rewards.append({"chosen": float(chosen.mean()), "rejected": float(rejected.mean())})
        return (loss, {"chosen_rewards": chosen, "rejected_rewards": rejected}) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: Any = None) -> tuple[Any, Any, Any]:
        """Evaluation: the MODPO loss on the pairs (the rows have no ``labels`` for the default step)."""
        import torch

        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None
