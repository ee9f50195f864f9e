"""A study file for the fault tests, steered by environment variables (synthetic data, real models):

- ``MOTUNE_TEST_STUDY``: the study's name;
- ``MOTUNE_TEST_LABEL``: the one value of a categorical parameter;
- ``MOTUNE_TEST_SLEEP_S``: seconds ``train`` sleeps (in steps of 0.1 s) before fitting;
- ``MOTUNE_TEST_SLEEP_ONCE``: only the first trial this process runs sleeps;
- ``MOTUNE_TEST_REPORT``: ``train`` reports (hand-made metrics) every 0.1 s while it sleeps;
- ``MOTUNE_TEST_HOLD_GIL``: the first trial this process runs holds Python's GIL for seconds (one C call);
- ``MOTUNE_TEST_EXIT``: ``train`` calls ``sys.exit`` with this code;
- ``MOTUNE_TEST_FAIL``: ``train`` of trial 1 raises ``RuntimeError`` with this message;
- ``MOTUNE_TEST_OBJECTIVE``: the second objective (default ``latency_p95_ms``).
"""

import os
import re
import sys
import time

from conftest import FAST_LATENCY, make_frame
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import motune as mt

task = mt.Task.from_frame(make_frame(), label="y", sensitive="group", name="synthetic")


def space(trial):
    trial.suggest_float("C", 1e-3, 10.0, log=True)
    trial.suggest_float("tol", 1e-5, 1e-2, log=True)
    trial.suggest_categorical("label", [os.environ.get("MOTUNE_TEST_LABEL", "plain")])


SLEPT = []


def train(params, task, ctx):
    sleep_s = 0.0 if SLEPT and os.environ.get("MOTUNE_TEST_SLEEP_ONCE") else float(os.environ.get("MOTUNE_TEST_SLEEP_S", "0"))
    if os.environ.get("MOTUNE_TEST_HOLD_GIL") and not SLEPT:
        re.match(r"(a+)+$", "a" * 28 + "b")  # catastrophic backtracking: no heartbeat from this process meanwhile
    SLEPT.append(sleep_s)
    deadline, step = time.monotonic() + sleep_s, 0
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if os.environ.get("MOTUNE_TEST_REPORT"):
            step += 1
            ctx.report(step, metrics={"progress": float(step)})
    if os.environ.get("MOTUNE_TEST_EXIT"):
        sys.exit(int(os.environ["MOTUNE_TEST_EXIT"]))
    if os.environ.get("MOTUNE_TEST_FAIL") and ctx.trial_number == 1:
        raise RuntimeError(os.environ["MOTUNE_TEST_FAIL"])
    model = make_pipeline(task.preprocessor(), LogisticRegression(C=params["C"], tol=params["tol"]))
    return model.fit(task.X_train, task.y_train)


SECOND = os.environ.get("MOTUNE_TEST_OBJECTIVE", "latency_p95_ms")

study = mt.Study(
    name=os.environ.get("MOTUNE_TEST_STUDY", "fault-study"),
    task=task,
    space=space,
    train=train,
    objectives=[mt.maximize("accuracy"), mt.minimize(SECOND)],
    constraints=[mt.at_most("equalized_odds_difference", 0.3)],
    metric_options=FAST_LATENCY if SECOND.startswith("latency") else {},
)
