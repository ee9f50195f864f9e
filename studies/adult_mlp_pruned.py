"""Adult with a neural network trained epoch by epoch, and motune's pruning.

Run:  motune run studies/adult_mlp_pruned.py --trials 30
      motune front adult-mlp-pruned

A scikit-learn MLP trained with ``partial_fit`` reports after every epoch
(up to 27); motune measures accuracy and the fairness metrics on the
validation split at each report. motune's default pruning policy forecasts
each trial's final values from its curve and the study's completed curves,
and stops it when the forecast says, with probability at least 1 - risk,
that it will break a fairness or accuracy constraint or end dominated by
the feasible front. A trial that reaches epoch 27 completes.
``benchmarks/pruning.py`` runs this study with and without pruning.

Data: UCI Adult, Becker & Kohavi (1996), https://doi.org/10.24432/C5XW20, CC BY 4.0.
"""

from sklearn.neural_network import MLPClassifier

import motune as mt
from motune.models.mitigation import reweighing_weights
from motune.pruning import default_policy

MAX_EPOCHS = 27


def space(trial):
    trial.suggest_int("hidden", 8, 128, log=True)
    trial.suggest_float("alpha", 1e-6, 1e-1, log=True)
    trial.suggest_float("learning_rate_init", 1e-4, 3e-2, log=True)
    trial.suggest_categorical("batch_size", [64, 256])
    trial.suggest_float("reweighing", 0.0, 1.0)


class EncodedModel:
    """An MLP on the task's float32 matrices, with predict(X) on the raw frame."""

    def __init__(self, mlp, numeric):
        self.mlp, self.numeric = mlp, numeric

    def predict(self, X):
        return self.mlp.predict(self.numeric.transform(X))

    def predict_proba(self, X):
        return self.mlp.predict_proba(self.numeric.transform(X))


def epochs(params, task, seed):
    """The model after each epoch: ``(epoch, model)`` for epochs 1..MAX_EPOCHS (one training loop for
    this study and for the benchmark's other schedulers)."""
    data = task.numeric()
    mlp = MLPClassifier(hidden_layer_sizes=(int(params["hidden"]),), alpha=params["alpha"],
                        learning_rate_init=params["learning_rate_init"], batch_size=int(params["batch_size"]),
                        random_state=seed)
    weights = reweighing_weights(data.y_train, task.sensitive_train, strength=params["reweighing"])
    model = EncodedModel(mlp, data)
    for epoch in range(1, MAX_EPOCHS + 1):
        mlp.partial_fit(data.X_train, data.y_train, sample_weight=weights, classes=[0, 1])
        yield epoch, model


def train(params, task, ctx):
    model = None
    for epoch, model in epochs(params, task, ctx.seed):
        ctx.report(epoch, model)
    return model


def make_study(task, *, name="adult-mlp-pruned", pruning="default", constraints=None, storage=None, sampler=None,
               seed=0):
    """This study's definition for another task, pruning policy or storage (used by the benchmark)."""
    return mt.Study(
        name=name,
        description="An MLP trained epoch by epoch; accuracy vs demographic parity under fairness and "
        "balanced-accuracy constraints; pruned by forecasts of each trial's final values.",
        task=task, space=space, train=train,
        objectives=[mt.maximize("accuracy"), mt.minimize("demographic_parity_difference")],
        constraints=constraints if constraints is not None else [
            mt.at_most("equalized_odds_difference", 0.10), mt.at_least("balanced_accuracy", 0.70)],
        pruning=default_policy() if pruning == "default" else pruning,
        max_step=MAX_EPOCHS, storage=storage, sampler=sampler, seed=seed,
    )


study = make_study(mt.data.adult(sensitive="sex", max_rows=10000))

if __name__ == "__main__":
    study.optimize(n_trials=30)
