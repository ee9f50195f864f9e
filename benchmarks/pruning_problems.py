"""The two tuning problems of the pruning benchmark, each trained epoch by epoch (the fidelity).

- ``adult``: studies/adult_mlp_pruned.py as shipped (a scikit-learn MLP
  trained with ``partial_fit``, 27 epochs, a space where most configurations
  are good: the task saturates after a few full trainings);
- ``adult_wide``: a PyTorch MLP on the same data trained on cross-entropy
  plus a weighted demographic-parity gap (:class:`motune.training.FairnessPenalizedLoss`),
  27 epochs, in a wide space where most configurations are poor: learning
  rate over five decades, width, depth, batch size, weight decay and the
  fairness weight over five decades.

Both: maximize accuracy, minimize demographic-parity difference, under
equalized-odds difference <= 0.10 and balanced accuracy >= 0.70, measured
on the validation split after every epoch. Each problem gives the Optuna
search space (for motune's arms), the same space for Syne Tune, and
``epochs(params, task, seed)``: the models after epochs 1..27, the one
training loop every arm runs.
"""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import motune as mt

ROOT = Path(__file__).resolve().parents[1]
MAX_EPOCHS = 27
OBJECTIVES = [mt.maximize("accuracy"), mt.minimize("demographic_parity_difference")]
CONSTRAINTS = [mt.at_most("equalized_odds_difference", 0.10), mt.at_least("balanced_accuracy", 0.70)]
REFERENCE = {"accuracy": 0.5, "demographic_parity_difference": 0.5}  # the hypervolume's reference point


@dataclass(frozen=True)
class Problem:
    name: str
    space: Callable[[Any], Any]  # Optuna: suggest on the trial
    syne_space: Callable[[], dict[str, Any]]  # the same space for Syne Tune
    epochs: Callable[[dict, Any, int], Iterator[tuple[int, Any]]]  # (epoch, model) after each epoch
    task: Callable[[], Any]


# ---------------------------------------------------------------- adult: the shipped study

_SHIPPED = ROOT / "studies" / "adult_mlp_pruned.py"


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    return runpy.run_path(str(_SHIPPED), run_name="motune_benchmark")


def _adult_syne_space() -> dict[str, Any]:
    from syne_tune.config_space import choice, lograndint, loguniform, uniform

    return {"hidden": lograndint(8, 128), "alpha": loguniform(1e-6, 1e-1),
            "learning_rate_init": loguniform(1e-4, 3e-2), "batch_size": choice([64, 256]),
            "reweighing": uniform(0.0, 1.0)}


def _adult_epochs(params: dict, task: Any, seed: int) -> Iterator[tuple[int, Any]]:
    return _shipped()["epochs"](params, task, seed)


def _adult_space(trial: Any) -> None:
    _shipped()["space"](trial)


# ---------------------------------------------------------------- adult_wide: most configurations are poor

def _wide_space(trial: Any) -> None:
    trial.suggest_float("learning_rate", 1e-5, 1.0, log=True)
    trial.suggest_int("width", 4, 256, log=True)
    trial.suggest_int("depth", 1, 3)
    trial.suggest_categorical("batch_size", [64, 128, 256, 512, 1024])
    trial.suggest_float("weight_decay", 1e-7, 1e-1, log=True)
    trial.suggest_float("fairness_weight", 1e-3, 1e2, log=True)


def _wide_syne_space() -> dict[str, Any]:
    from syne_tune.config_space import choice, lograndint, loguniform, randint

    return {"learning_rate": loguniform(1e-5, 1.0), "width": lograndint(4, 256), "depth": randint(1, 3),
            "batch_size": choice([64, 128, 256, 512, 1024]), "weight_decay": loguniform(1e-7, 1e-1),
            "fairness_weight": loguniform(1e-3, 1e2)}


def _wide_epochs(params: dict, task: Any, seed: int) -> Iterator[tuple[int, Any]]:
    import torch

    from motune.models.torch import TorchClassifier
    from motune.training import FairnessPenalizedLoss, group_codes

    torch.manual_seed(seed)
    data = task.numeric()
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    groups, _ = group_codes(task.sensitive_train)
    width, layers, inputs = int(params["width"]), [], X.shape[1]
    for _ in range(int(params["depth"])):
        layers += [torch.nn.Linear(inputs, width), torch.nn.ReLU()]
        inputs = width
    module = torch.nn.Sequential(*layers, torch.nn.Linear(inputs, 2))
    model = TorchClassifier.for_task(module, task)
    loss = FairnessPenalizedLoss(params["fairness_weight"], penalty="demographic_parity")
    optimizer = torch.optim.AdamW(module.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    batch = int(params["batch_size"])
    for epoch in range(1, MAX_EPOCHS + 1):
        module.train()
        order = torch.randperm(len(X), generator=generator)
        for start in range(0, len(X), batch):
            rows = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            value = loss(module(X[rows]), y[rows], groups[rows])
            if not torch.isfinite(value):  # a learning rate that diverged: the model stays where it is
                break
            value.backward()
            optimizer.step()
        module.eval()
        yield epoch, model


def _adult_task() -> Any:
    return mt.data.adult(sensitive="sex", max_rows=10000)


PROBLEMS = {
    "adult": Problem("adult", _adult_space, _adult_syne_space, _adult_epochs, _adult_task),
    "adult_wide": Problem("adult_wide", _wide_space, _wide_syne_space, _wide_epochs, _adult_task),
}
