"""Adult: accuracy vs demographic parity vs latency, under fairness constraints.

Run, then confirm the front on the held-out test split, choose, record and export:

      motune run studies/adult_fairness.py --trials 30
      motune confirm adult-fairness
      motune decide adult-fairness --rule knee --why "the balance the policy asks for" --by "you"
      motune report adult-fairness -o report.html
      motune export adult-fairness -o chosen/

and later, on new rows, check that the decision still holds:

      motune check adult-fairness --data studies/adult_fairness.py:later_rows
      motune checks adult-fairness

or ``python studies/adult_fairness.py``, which does the same in Python.

The search space mixes model hyperparameters (logistic regression or
histogram gradient boosting) with two fairness-mitigation knobs: reweighing
strength (pre-processing) and a fairlearn ThresholdOptimizer (post-processing,
for demographic parity or equalized odds, or none). Models differ in
prediction latency too, so the front spans accuracy, fairness and speed.

Data: UCI Adult, Becker & Kohavi (1996), https://doi.org/10.24432/C5XW20, CC BY 4.0.
"""

from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import motune as mt
from motune.models.mitigation import SensitivePostprocessed, reweighing_weights

task = mt.data.adult(sensitive="sex")


def space(trial):
    model = trial.suggest_categorical("model", ["logistic_regression", "hist_gradient_boosting"])
    if model == "logistic_regression":
        trial.suggest_float("C", 1e-3, 10.0, log=True)
    else:
        trial.suggest_int("max_iter", 20, 200, log=True)
        trial.suggest_float("learning_rate", 0.02, 0.3, log=True)
        trial.suggest_int("max_leaf_nodes", 4, 63, log=True)
    trial.suggest_float("reweighing", 0.0, 1.0)
    trial.suggest_categorical("postprocess", ["none", "demographic_parity", "equalized_odds"])


def train(params, task, ctx):
    if params["model"] == "logistic_regression":
        estimator = LogisticRegression(C=params["C"], max_iter=2000)
    else:
        estimator = HistGradientBoostingClassifier(
            max_iter=params["max_iter"], learning_rate=params["learning_rate"],
            max_leaf_nodes=params["max_leaf_nodes"], random_state=ctx.seed,
        )
    pipeline = make_pipeline(task.preprocessor(), estimator)
    weights = reweighing_weights(task.y_train, task.sensitive_train, strength=params["reweighing"])
    pipeline.fit(task.X_train, task.y_train, **{f"{pipeline.steps[-1][0]}__sample_weight": weights})
    if params["postprocess"] == "none":
        return pipeline
    post = ThresholdOptimizer(
        estimator=pipeline, constraints=params["postprocess"], objective="accuracy_score",
        prefit=True, predict_method="predict_proba",
    )
    post.fit(task.X_train, task.y_train, sensitive_features=task.sensitive_train)
    return SensitivePostprocessed(post, sensitive=task.sensitive, seed=ctx.seed)


study = mt.Study(
    name="adult-fairness",
    description="UCI Adult income > 50K: accuracy, demographic parity and p95 latency, "
    "with an equalized-odds and a balanced-accuracy constraint.",
    task=task,
    space=space,
    train=train,
    objectives=[
        mt.maximize("accuracy"),
        mt.minimize("demographic_parity_difference"),
        mt.minimize("latency_p95_ms"),
    ],
    constraints=[
        mt.at_most("equalized_odds_difference", 0.10),
        mt.at_least("balanced_accuracy", 0.70),
    ],
    metrics=["robust_accuracy", "roc_auc"],
    seed=0,
)



def later_rows():
    """Rows for ``motune check``: the last 4,281 rows of adult.test (the pooled frame's rows 44,561 on)
    less the ones the study trained on: 1,711 rows, which the study saw only as validation or test rows
    (the task pools adult.data and adult.test before splitting, so no Adult row is unseen; pass truly new
    rows, e.g. a CSV, in real use)."""
    frame = mt.data.adult_frame()
    later = frame.iloc[44_561:]
    return later[~later.index.isin(task.X_train.index)]


def later_rows_without_womens_high_incomes():
    """:func:`later_rows` with the positives (income > 50K) of women removed: a shifted sample on which
    the decision's fairness constraint should break."""
    rows = later_rows()
    return rows[~((rows["sex"] == "Female") & (rows["income"] == ">50K"))]


if __name__ == "__main__":
    result = study.optimize(n_trials=30)
    confirmed = mt.confirm(result)  # the front on the test split, with intervals; latency re-timed quietly
    choice = mt.select(confirmed, mt.rules.knee())
    print(choice)
    decision = mt.decide(choice, rationale="the knee of the confirmed front: no objective given up cheaply",
                         decided_by="studies/adult_fairness.py")
    model = decision.load_model()
    print(f"decision {decision.number}: trial {decision.trial}; predicts {model.predict(task.X_test[:5])}")
