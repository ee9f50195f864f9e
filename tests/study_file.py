"""A small study file used by the CLI and PostgreSQL tests (synthetic data, real models)."""

import os

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import motune as mt
from conftest import make_frame

task = mt.Task.from_frame(make_frame(), label="y", sensitive="group", name="synthetic")


def space(trial):
    trial.suggest_float("C", 1e-3, 10.0, log=True)
    trial.suggest_categorical("label", [os.environ.get("MOTUNE_TEST_LABEL", "plain")])


def train(params, task, ctx):
    model = make_pipeline(task.preprocessor(), LogisticRegression(C=params["C"]))
    return model.fit(task.X_train, task.y_train)


study = mt.Study(
    name=os.environ.get("MOTUNE_TEST_STUDY", "cli-study"),
    description=os.environ.get("MOTUNE_TEST_DESCRIPTION", "a study for the CLI tests"),
    task=task,
    space=space,
    train=train,
    objectives=[mt.maximize("accuracy"), mt.minimize("latency_p95_ms")],
    constraints=[mt.at_most("equalized_odds_difference", 0.2)],
    metric_options={"latency": {"warmup": 1, "min_count": 5, "min_time_s": 0.0, "batch_size": 16}},
)
