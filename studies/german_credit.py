"""German Credit: accuracy vs equalized odds, with a balanced-accuracy floor.

Run:  motune run studies/german_credit.py --trials 20
      motune front german-credit

A smaller study (1,000 applicants): logistic regression or a random forest,
with reweighing strength as the fairness-mitigation knob. The sensitive
feature is sex (derived from attribute 9, personal status and sex).

Data: Statlog (German Credit Data), Hofmann (1994), https://doi.org/10.24432/C5NC77, CC BY 4.0.
"""

from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import motune as mt
from motune.models.mitigation import reweighing_weights

task = mt.data.german_credit(sensitive="sex")


def space(trial):
    model = trial.suggest_categorical("model", ["logistic_regression", "random_forest"])
    if model == "logistic_regression":
        trial.suggest_float("C", 1e-3, 10.0, log=True)
    else:
        trial.suggest_int("n_estimators", 20, 200, log=True)
        trial.suggest_int("max_depth", 2, 12)
    trial.suggest_float("reweighing", 0.0, 1.0)


def train(params, task, ctx):
    if params["model"] == "logistic_regression":
        estimator = LogisticRegression(C=params["C"], max_iter=2000, class_weight="balanced")
    else:
        estimator = RandomForestClassifier(
            n_estimators=params["n_estimators"], max_depth=params["max_depth"],
            class_weight="balanced", random_state=ctx.seed, n_jobs=1,
        )
    pipeline = make_pipeline(task.preprocessor(), estimator)
    weights = reweighing_weights(task.y_train, task.sensitive_train, strength=params["reweighing"])
    return pipeline.fit(task.X_train, task.y_train, **{f"{pipeline.steps[-1][0]}__sample_weight": weights})


study = mt.Study(
    name="german-credit",
    description="Statlog German Credit, good credit risk: accuracy and equalized odds by sex, "
    "with a balanced-accuracy floor.",
    task=task,
    space=space,
    train=train,
    objectives=[mt.maximize("accuracy"), mt.minimize("equalized_odds_difference")],
    constraints=[mt.at_least("balanced_accuracy", 0.65)],
    metrics=["roc_auc", "robust_accuracy", "latency_p95_ms"],
    seed=0,
)

if __name__ == "__main__":
    study.optimize(n_trials=20)
