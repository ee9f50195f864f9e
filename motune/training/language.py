"""A MODPO-style multi-objective preference loss for causal language models.

MODPO (Zhou et al., 2023, arXiv 2310.03708) fine-tunes a policy ``pi`` against a
frozen reference ``pi_ref`` on preference pairs ``(x, y_w, y_l)`` labelled for
objective ``k``, with the other objectives entering as a margin from their reward
models ``r_-k``. For a preference vector ``w`` (sum 1) and ``beta > 0``:

    loss = -log sigmoid( beta / w_k * [ (log pi(y_w|x) - log pi_ref(y_w|x))
                                        - (log pi(y_l|x) - log pi_ref(y_l|x)) ]
                         - 1 / w_k * w_-k . (r_-k(x, y_w) - r_-k(x, y_l)) )

With one objective (``w = [1]``, no margin) it is DPO. Every ``w`` trains one point
of the front; a study searches ``w`` and ``beta``.

- :func:`sequence_logps`: ``log pi(y|x)``, the sum of the response tokens' log
  probabilities (prompt and padding masked out);
- :func:`modpo_loss`: the loss above, with the implicit rewards
  ``beta * (log pi - log pi_ref)`` of chosen and rejected responses;
- :class:`PreferencePairs`: tokenised ``(prompt, chosen, rejected)`` rows with
  response masks and margins, padded to one length (what
  :class:`motune.training.trainers.ModpoTrainer` reads).

A recipe for a GPU box is in the README ("Multi-objective training").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from motune.errors import SpecError


def sequence_logps(model: Any, input_ids: Any, attention_mask: Any, response_mask: Any) -> Any:
    """Per row, the summed log probability of the tokens ``response_mask`` marks, each predicted
    from the tokens before it."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = input_ids[:, 1:]
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * response_mask[:, 1:].to(token_logps.dtype)).sum(-1)


def modpo_loss(policy_chosen: Any, policy_rejected: Any, reference_chosen: Any, reference_rejected: Any, *,
               weights: Sequence[float], beta: float = 0.1, objective: int = 0,
               margin_chosen: Any = None, margin_rejected: Any = None) -> tuple[Any, Any, Any]:
    """``(mean loss, chosen rewards, rejected rewards)`` for per-row log probabilities.

    ``weights``: the preference vector over the objectives (normalised to sum 1); ``objective``: the
    index ``k`` the pairs were labelled for; ``margin_chosen`` / ``margin_rejected``: the other
    objectives' rewards of each response, shape ``(rows, len(weights) - 1)`` (required when there is
    more than one objective).
    """
    import torch

    w = [float(v) for v in weights]
    if not w or any(not v >= 0 for v in w) or not sum(w) > 0:
        raise SpecError(f"weights need values >= 0, not all 0; got {weights!r}")
    if not beta > 0:
        raise SpecError(f"beta must be > 0, got {beta!r}")
    if not 0 <= objective < len(w) or w[objective] == 0:
        raise SpecError(f"objective {objective} needs a positive weight among {w}")
    total = sum(w)
    w = [v / total for v in w]
    w_k = w[objective]
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    logits = (chosen_rewards - rejected_rewards) / w_k
    if len(w) > 1:
        if margin_chosen is None or margin_rejected is None:
            raise SpecError("with more than one objective, pass margin_chosen and margin_rejected: the other "
                            "objectives' rewards of each response")
        rest = torch.tensor([v for i, v in enumerate(w) if i != objective], dtype=logits.dtype,
                            device=logits.device)
        margin = torch.as_tensor(margin_chosen, dtype=logits.dtype, device=logits.device) - torch.as_tensor(
            margin_rejected, dtype=logits.dtype, device=logits.device)
        if margin.ndim == 1:
            margin = margin.unsqueeze(-1)
        if margin.shape[-1] != len(rest):
            raise SpecError(f"margins need {len(rest)} columns (one per other objective), got {margin.shape[-1]}")
        logits = logits - (margin * rest).sum(-1) / w_k
    return -torch.nn.functional.logsigmoid(logits).mean(), chosen_rewards.detach(), rejected_rewards.detach()


class PreferencePairs:
    """Tokenised preference pairs: ``prompts``, ``chosen`` and ``rejected`` responses (texts), and for
    more than one objective the other objectives' rewards of each response (``margins_chosen``,
    ``margins_rejected``: one row of floats per pair). Every sequence is padded or cut to
    ``max_length`` tokens on the right; the response mask marks the response's tokens. Prompt and
    response are tokenised apart and joined (no separator is added: end a prompt with the space or
    template your model was trained with), so the mask follows token boundaries exactly."""

    def __init__(self, tokenizer: Any, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], *,
                 max_length: int = 64, margins_chosen: Any = None, margins_rejected: Any = None) -> None:
        import torch

        if not len(prompts) == len(chosen) == len(rejected) or not prompts:
            raise SpecError(f"need as many prompts, chosen and rejected responses (at least one); got "
                            f"{len(prompts)}, {len(chosen)}, {len(rejected)}")
        if (margins_chosen is None) != (margins_rejected is None):
            raise SpecError("pass margins_chosen and margins_rejected together")
        if tokenizer.pad_token_id is None:
            raise SpecError("the tokenizer has no pad token: set tokenizer.pad_token = tokenizer.eos_token")
        self.rows: list[dict[str, Any]] = []
        for i, (prompt, good, bad) in enumerate(zip(prompts, chosen, rejected)):
            row: dict[str, Any] = {}
            for side, response in (("chosen", good), ("rejected", bad)):
                ids, mask, response_mask = self._encode(tokenizer, prompt, response, max_length)
                row.update({f"{side}_input_ids": ids, f"{side}_attention_mask": mask,
                            f"{side}_response_mask": response_mask})
            if margins_chosen is not None:
                row["margin_chosen"] = torch.as_tensor(margins_chosen[i], dtype=torch.float32).reshape(-1)
                row["margin_rejected"] = torch.as_tensor(margins_rejected[i], dtype=torch.float32).reshape(-1)
            self.rows.append(row)

    @staticmethod
    def _encode(tokenizer: Any, prompt: str, response: str, max_length: int) -> tuple[Any, Any, Any]:
        import torch

        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids)[:max_length]
        response_mask = ([0] * len(prompt_ids) + [1] * len(response_ids))[:max_length]
        if sum(response_mask[1:]) == 0:  # the first token is never scored (nothing comes before it)
            raise SpecError(f"a prompt of {len(prompt_ids)} tokens leaves no response token within max_length "
                            f"{max_length}")
        pad = max_length - len(ids)
        return (torch.tensor(ids + [tokenizer.pad_token_id] * pad), torch.tensor([1] * len(ids) + [0] * pad),
                torch.tensor(response_mask + [0] * pad))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]
