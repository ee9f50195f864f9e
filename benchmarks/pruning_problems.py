"""The tuning problems of the pruning benchmark, each trained epoch by epoch (the fidelity).

- ``adult``: studies/adult_mlp_pruned.py as shipped (a scikit-learn MLP
  trained with ``partial_fit``, 27 epochs, a space where most configurations
  are good: the task saturates after a few full trainings; about half of
  them end infeasible on equalized odds);
- ``adult_wide``: a PyTorch MLP on the same data trained on cross-entropy
  plus a weighted demographic-parity gap (:class:`motune.training.FairnessPenalizedLoss`),
  27 epochs, in a wide space where most configurations are poor: learning
  rate over five decades, width, depth, batch size, weight decay and the
  fairness weight over five decades;
- ``adult_tight``: the shipped study's space and training with a binding
  fairness bound, equalized-odds difference <= 0.07 (about three quarters
  of the configurations end infeasible);
- ``german_mlp``: a PyTorch MLP on Statlog German Credit (1,000 applicants,
  sensitive feature sex; another data set, small and noisy: 200 validation
  rows), 27 epochs, learning rate, width, dropout, batch size, weight decay
  and the reweighing strength.

Each problem states its objectives, constraints and the hypervolume's
reference point (adult, adult_wide: maximize accuracy, minimize
demographic-parity difference, under equalized-odds difference <= 0.10 and
balanced accuracy >= 0.70), measured on the validation split after every
epoch, and gives the Optuna search space (for motune's arms), the same
space for Syne Tune, and ``epochs(params, task, seed)``: the models after
epochs 1..27, the one training loop every arm runs.
"""

from __future__ import annotations

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
METRICS = ["accuracy", "demographic_parity_difference", "equalized_odds_difference", "balanced_accuracy"]


@dataclass(frozen=True)
class Problem:
    name: str
    space: Callable[[Any], Any]  # Optuna: suggest on the trial
    syne_space: Callable[[], dict[str, Any]]  # the same space for Syne Tune
    epochs: Callable[[dict, Any, int], Iterator[tuple[int, Any]]]  # (epoch, model) after each epoch
    task: Callable[[], Any]
    objectives: tuple = tuple(OBJECTIVES)
    constraints: tuple = tuple(CONSTRAINTS)
    reference: tuple = tuple(REFERENCE.items())  # (metric, value) per objective

    def feasible(self, metrics: dict[str, float]) -> bool:
        return all(c.violation(metrics[c.metric]) <= 0 for c in self.constraints)


# ---------------------------------------------------------------- adult: the shipped study

_SHIPPED = ROOT / "studies" / "adult_mlp_pruned.py"


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    from motune.studyfile import load

    return vars(load(_SHIPPED))


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


# ---------------------------------------------------------------- german_mlp: another data set, small and noisy

def _german_space(trial: Any) -> None:
    trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    trial.suggest_int("width", 4, 128, log=True)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_categorical("batch_size", [16, 32, 64, 128])
    trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
    trial.suggest_float("reweighing", 0.0, 1.0)


def _german_syne_space() -> dict[str, Any]:
    from syne_tune.config_space import choice, lograndint, loguniform, uniform

    return {"learning_rate": loguniform(1e-4, 1e-1), "width": lograndint(4, 128), "dropout": uniform(0.0, 0.5),
            "batch_size": choice([16, 32, 64, 128]), "weight_decay": loguniform(1e-6, 1e-1),
            "reweighing": uniform(0.0, 1.0)}


def _german_epochs(params: dict, task: Any, seed: int) -> Iterator[tuple[int, Any]]:
    import torch

    from motune.models.mitigation import reweighing_weights
    from motune.models.torch import TorchClassifier

    torch.manual_seed(seed)
    data = task.numeric()
    X, y = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    weights = torch.as_tensor(reweighing_weights(data.y_train, task.sensitive_train, strength=params["reweighing"]),
                              dtype=torch.float32)
    width = int(params["width"])
    module = torch.nn.Sequential(torch.nn.Linear(X.shape[1], width), torch.nn.ReLU(),
                                 torch.nn.Dropout(params["dropout"]), torch.nn.Linear(width, 2))
    model = TorchClassifier.for_task(module, task)
    optimizer = torch.optim.AdamW(module.parameters(), lr=params["learning_rate"], weight_decay=params["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    batch = int(params["batch_size"])
    for epoch in range(1, MAX_EPOCHS + 1):
        module.train()
        order = torch.randperm(len(X), generator=generator)
        for start in range(0, len(X), batch):
            rows = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            losses = torch.nn.functional.cross_entropy(module(X[rows]), y[rows], reduction="none")
            (losses * weights[rows]).sum().div(weights[rows].sum()).backward()
            optimizer.step()
        module.eval()
        yield epoch, model


def _german_task() -> Any:
    return mt.data.german_credit(sensitive="sex")


# ---------------------------------------------------------------- per-epoch measurement

def valid_predictions(model: Any, task: Any) -> Any:
    """The model's predictions on the validation split, from the task's encoded matrix (encoded once)."""
    import numpy as np

    data = task.numeric()
    if hasattr(model, "mlp"):  # the shipped study's EncodedModel
        return model.mlp.predict(data.X_valid)
    import torch

    with torch.no_grad():
        return np.asarray(model.module(torch.from_numpy(data.X_valid)).argmax(dim=1))


def epoch_metrics(model: Any, task: Any) -> dict[str, float]:
    """The benchmark's four metrics on the validation split after an epoch, computed directly from the
    predictions (the numbers fairlearn's MetricFrame gives, which motune's ``ctx.report(step, model)``
    would compute with about 0.1 s of pandas overhead per report: ``check_epoch_metrics`` compares them)."""
    import numpy as np

    y = np.asarray(task.y_valid)
    predicted = np.asarray(valid_predictions(model, task))
    groups = np.asarray(task.sensitive_valid).astype(str)
    positive, negative = y == 1, y == 0
    rates = {"selection": [], "tpr": [], "fpr": []}
    for g in np.unique(groups):
        mine = groups == g
        rates["selection"].append(np.mean(predicted[mine] == 1))
        rates["tpr"].append(np.mean(predicted[mine & positive] == 1) if (mine & positive).any() else np.nan)
        rates["fpr"].append(np.mean(predicted[mine & negative] == 1) if (mine & negative).any() else np.nan)

    def gap(values: list[float]) -> float:
        return float(np.nanmax(values) - np.nanmin(values))

    recall = [np.mean(predicted[y == c] == c) for c in np.unique(y)]
    return {"accuracy": float(np.mean(predicted == y)), "balanced_accuracy": float(np.mean(recall)),
            "demographic_parity_difference": gap(rates["selection"]),
            "equalized_odds_difference": max(gap(rates["tpr"]), gap(rates["fpr"]))}


def check_epoch_metrics(model: Any, task: Any) -> None:
    """Raise unless :func:`epoch_metrics` equals motune's measurement (fairlearn) on ``model``."""
    from motune.metrics import measure

    mine = epoch_metrics(model, task)
    theirs = measure(model, task, METRICS, split="valid").values
    for name in METRICS:
        if abs(mine[name] - theirs[name]) > 1e-9:
            raise AssertionError(f"epoch_metrics {name} = {mine[name]} but motune measures {theirs[name]}")


PROBLEMS = {
    "adult": Problem("adult", _adult_space, _adult_syne_space, _adult_epochs, _adult_task),
    "adult_wide": Problem("adult_wide", _wide_space, _wide_syne_space, _wide_epochs, _adult_task),
    "adult_tight": Problem("adult_tight", _adult_space, _adult_syne_space, _adult_epochs, _adult_task,
                           constraints=(mt.at_most("equalized_odds_difference", 0.07),
                                        mt.at_least("balanced_accuracy", 0.70))),
    "german_mlp": Problem("german_mlp", _german_space, _german_syne_space, _german_epochs, _german_task,
                          constraints=(mt.at_most("equalized_odds_difference", 0.15),
                                       mt.at_least("balanced_accuracy", 0.65))),
}
