"""Multi-objective training: differentiable surrogates of the study's metrics and the combiners
that train on several of them at once (scalarised, constrained with dual updates, Pareto-gradient),
preference-conditioned models that cover a front in one training, and a MODPO-style loss for
language models. See :mod:`motune.training.combiners` for the maths.

```python
from motune import training as mtt
loss = mtt.constrained("cross_entropy", bounds={"demographic_parity_gap": params["dp_bound"]})
fit(module, X, y, epochs=9, loss=loss, groups=groups, ctx=ctx, model=model)
```

``ConditionedMLP``, ``ConditionedClassifier``, ``fit_conditioned`` and ``dirichlet`` load torch on
first use; ``MultiObjectiveTrainer`` and ``ModpoTrainer`` load transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from motune.training.combiners import (
    Constrained,
    FairnessPenalizedLoss,
    MultiObjectiveLoss,
    Pareto,
    Scalarized,
    constrained,
    pareto,
    scalarized,
)
from motune.training.language import PreferencePairs, modpo_loss, sequence_logps
from motune.training.surrogates import (
    SURROGATES,
    Batch,
    Surrogate,
    adversarial,
    demographic_parity_gap,
    equalized_odds_gap,
    group_codes,
    surrogate,
    worst_group_loss,
)

_LAZY = {"ConditionedMLP": "conditioned", "ConditionedClassifier": "conditioned", "fit_conditioned": "conditioned",
         "dirichlet": "conditioned", "MultiObjectiveTrainer": "trainers", "ModpoTrainer": "trainers"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"motune.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'motune.training' has no attribute {name!r}")


__all__ = ["SURROGATES", "Batch", "Constrained", "FairnessPenalizedLoss", "MultiObjectiveLoss", "Pareto",
           "PreferencePairs", "Scalarized", "Surrogate", "adversarial", "constrained", "demographic_parity_gap",
           "equalized_odds_gap", "group_codes", "modpo_loss", "pareto", "scalarized", "sequence_logps", "surrogate",
           "worst_group_loss", *_LAZY]
