"""The combiners and the MODPO loss in the transformers ``Trainer`` path.

- :class:`MultiObjectiveTrainer`: ``compute_loss`` is a combiner of
  :mod:`motune.training.combiners` over the classifier's logits; rows carry
  ``labels`` and, for group surrogates, ``groups``
  (:meth:`motune.models.transformers.TextClassifier.dataset` with ``groups=``);
  each epoch ends with the combiner's ``end_epoch`` (its history in
  ``trainer.mo_loss.history``). An evaluation's loss is the first objective's
  surrogate alone (evaluation rows need no groups or extras).
- :class:`ModpoTrainer`: a causal LM fine-tuned on
  :class:`~motune.training.language.PreferencePairs` with the MODPO loss
  against a frozen ``ref_model``.

Both need ``TrainingArguments(remove_unused_columns=False)`` (their rows carry
columns the model's ``forward`` does not take) and set it when it is not set.
This module imports transformers; :mod:`motune.training` loads it on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import transformers

from motune.training.language import modpo_loss, sequence_logps
from motune.training.surrogates import Batch


class _EndEpoch(transformers.TrainerCallback):
    def __init__(self, loss: Any) -> None:
        self.loss = loss

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.loss.end_epoch()
        return control


def _keep_columns(kwargs: dict[str, Any]) -> None:
    args = kwargs.get("args")
    if args is not None and args.remove_unused_columns:
        args.remove_unused_columns = False


class MultiObjectiveTrainer(transformers.Trainer):
    """A ``Trainer`` whose loss is ``mo_loss(logits, labels, groups)`` (a motune.training combiner)."""

    def __init__(self, *args: Any, mo_loss: Any, **kwargs: Any) -> None:
        _keep_columns(kwargs)
        super().__init__(*args, **kwargs)
        self.mo_loss = mo_loss.attach(self.model)
        self.add_callback(_EndEpoch(mo_loss))

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        groups = inputs.pop("groups", None)
        extra = {k: inputs.pop(k) for k in [k for k in inputs if k.startswith("extra_")]}
        outputs = model(**inputs)
        if not model.training:  # an evaluation: the first objective (its rows need not carry groups or extras)
            batch = Batch(logits=outputs.logits, y=labels, groups=groups, inputs=extra or None, module=model)
            loss = self.mo_loss.objectives[0](batch)
        else:
            loss = self.mo_loss(outputs.logits, labels, groups, inputs=extra or None)
        return (loss, outputs) if return_outputs else loss


class ModpoTrainer(transformers.Trainer):
    """A causal LM trained with the MODPO loss (``weights``, ``beta``, ``objective``) against ``ref_model``."""

    def __init__(self, *args: Any, ref_model: Any, weights: Sequence[float], beta: float = 0.1,
                 objective: int = 0, **kwargs: Any) -> None:
        _keep_columns(kwargs)
        super().__init__(*args, **kwargs)
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
        self.rewards.append({"chosen": float(chosen.mean()), "rejected": float(rejected.mean())})
        return (loss, {"chosen_rewards": chosen, "rejected_rewards": rejected}) if return_outputs else loss
