"""Adult with a PyTorch MLP trained on a fairness-penalised loss (in-processing mitigation).

Run:  pip install torch==2.13.0 -e .       (on a GPU box: your CUDA torch first)
      motune run studies/adult_fair_loss.py --trials 30
      motune front adult-fair-loss

Each trial trains an MLP on ``cross_entropy + weight * gap``, where ``gap`` is
a differentiable surrogate of the demographic-parity (or equalized-odds)
difference between the sexes on each minibatch
(:class:`motune.training.FairnessPenalizedLoss`; issue 16's combiners are in studies/adult_mo_training.py); the weight is a
hyperparameter, so the study explores the accuracy / fairness front by
training, after the multi-objective training-loss line of work (MOPO, PAMA).
A third objective is robustness: accuracy under an FGSM attack of radius 0.1
(in standard deviations) on the numeric features. :func:`motune.models.torch.fit`
reports every epoch, so constraint-aware pruning and successive halving (rungs
at epochs 1, 3, 9) stop trials early.

Data: UCI Adult, Becker & Kohavi (1996), https://doi.org/10.24432/C5XW20, CC BY 4.0.
"""

import torch

import motune as mt
from motune.models.torch import TorchClassifier, fit
from motune.training import FairnessPenalizedLoss, group_codes

EPOCHS = 9


def space(trial):
    trial.suggest_int("hidden", 16, 128, log=True)
    trial.suggest_float("learning_rate", 1e-3, 3e-2, log=True)
    trial.suggest_float("fairness_weight", 0.0, 5.0)
    trial.suggest_categorical("penalty", ["demographic_parity", "equalized_odds"])


def train(params, task, ctx):
    torch.manual_seed(ctx.seed)
    data = task.numeric()
    module = torch.nn.Sequential(torch.nn.Linear(data.X_train.shape[1], params["hidden"]), torch.nn.ReLU(),
                                 torch.nn.Linear(params["hidden"], 2)).to(ctx.device)  # a worker's GPU, or the CPU
    model = TorchClassifier.for_task(module, task)
    groups, _ = group_codes(task.sensitive_train)
    loss = FairnessPenalizedLoss(params["fairness_weight"], penalty=params["penalty"])
    fit(module, torch.from_numpy(data.X_train), torch.from_numpy(data.y_train), epochs=EPOCHS,
        lr=params["learning_rate"], batch_size=256, loss=loss, groups=groups, seed=ctx.seed, ctx=ctx, model=model)
    return model


study = mt.Study(
    name="adult-fair-loss",
    description="An MLP trained on cross-entropy plus a weighted fairness gap; accuracy vs demographic parity "
                "vs FGSM adversarial accuracy, under a balanced-accuracy constraint.",
    task=mt.data.adult(sensitive="sex", max_rows=10000),
    space=space, train=train,
    objectives=[mt.maximize("accuracy"), mt.minimize("demographic_parity_difference"),
                mt.maximize("adversarial_accuracy")],
    constraints=[mt.at_least("balanced_accuracy", 0.70)],
    metrics=["latency_p95_ms"],
    metric_options={"adversarial": {"eps": 0.1}},
)
