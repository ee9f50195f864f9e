"""Multi-objective training losses: a task loss plus a differentiable fairness penalty.

In-processing mitigation (after the MOPO / PAMA line of work on
multi-objective training): the model is trained on
``task_loss + weight * penalty`` where the penalty is a smooth surrogate of a
group-fairness gap computed on the minibatch from predicted probabilities;
``weight`` is a hyperparameter, so a study explores the accuracy / fairness
front by training, not only by post-processing.

- :func:`demographic_parity_gap`: the largest difference between groups of
  the mean predicted positive probability (fairlearn's demographic parity
  difference with probabilities in place of hard predictions);
- :func:`equalized_odds_gap`: the same gap among rows with label 1 and among
  rows with label 0, whichever is larger;
- :class:`FairnessPenalizedLoss`: ``loss(logits, y, groups)``.

``groups`` is an integer tensor of group codes per row (see
:func:`group_codes`). Groups absent from a minibatch are left out of that
minibatch's gap.
"""

from __future__ import annotations

from typing import Any

from motune.errors import SpecError

PENALTIES = ("demographic_parity", "equalized_odds")


def _gap(p: Any, groups: Any) -> Any:
    import torch

    means = [p[groups == g].mean() for g in torch.unique(groups)]
    if len(means) < 2:
        return p.sum() * 0.0  # keeps the graph (and the device) with a zero gap
    stacked = torch.stack(means)
    return stacked.max() - stacked.min()


def demographic_parity_gap(logits: Any, groups: Any, *, positive: int = 1) -> Any:
    """Max minus min over groups of the mean softmax probability of class ``positive``."""
    import torch

    return _gap(torch.softmax(logits, dim=-1)[:, positive], groups)


def equalized_odds_gap(logits: Any, y: Any, groups: Any, *, positive: int = 1) -> Any:
    """The larger of the demographic parity gaps among label-1 rows and among label-0 rows."""
    import torch

    p = torch.softmax(logits, dim=-1)[:, positive]
    gaps = [_gap(p[y == label], groups[y == label]) for label in (0, 1) if bool((y == label).any())]
    return torch.stack(gaps).max() if gaps else p.sum() * 0.0


class FairnessPenalizedLoss:
    """``cross_entropy(logits, y) + weight * gap(logits, y, groups)``.

    ``penalty`` is ``"demographic_parity"`` or ``"equalized_odds"``; ``weight >= 0`` (0 is plain
    cross-entropy). Pass it as ``loss=`` to :func:`motune.models.torch.fit` with ``groups=``.
    The last call's parts are kept in ``last`` (task loss and gap, as floats) for logging.
    """

    def __init__(self, weight: float, *, penalty: str = "demographic_parity", task_loss: Any = None) -> None:
        if not weight >= 0:
            raise SpecError(f"weight must be >= 0, got {weight!r}")
        if penalty not in PENALTIES:
            raise SpecError(f"penalty must be one of {list(PENALTIES)}, got {penalty!r}")
        self.weight = float(weight)
        self.penalty = penalty
        self.task_loss = task_loss
        self.last: dict[str, float] = {}

    def __call__(self, logits: Any, y: Any, groups: Any) -> Any:
        import torch

        task_loss = (self.task_loss or torch.nn.functional.cross_entropy)(logits, y)
        if self.penalty == "demographic_parity":
            gap = demographic_parity_gap(logits, groups)
        else:
            gap = equalized_odds_gap(logits, y, groups)
        self.last = {"task_loss": float(task_loss.detach()), "gap": float(gap.detach())}
        return task_loss + self.weight * gap


def group_codes(sensitive: Any) -> tuple[Any, list[str]]:
    """Integer codes (a torch LongTensor) for a sensitive-feature column, and the group names."""
    import numpy as np
    import torch

    names, codes = np.unique(np.asarray(sensitive).astype(str), return_inverse=True)
    return torch.as_tensor(codes, dtype=torch.long), [str(n) for n in names]
