"""Shared fixtures: a small synthetic binary task with a group bias, and a
study factory using real scikit-learn models and real Optuna storage."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import optuna
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import motune as mt


def make_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], size=n, p=[0.6, 0.4])
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n) + (group == "b") * 0.8
    color = rng.choice(["red", "green", "blue"], size=n)
    logit = 1.5 * x1 + 0.8 * x2 + (color == "red") * 0.5 - 0.3
    y = (logit + rng.normal(scale=0.7, size=n) > 0).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "color": color, "group": group, "y": y})


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture
def task(frame) -> mt.Task:
    return mt.Task.from_frame(frame, label="y", sensitive="group", seed=0, name="synthetic")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'motune.db'}"


def space(trial):
    trial.suggest_float("C", 1e-3, 10.0, log=True)
    trial.suggest_categorical("fit_intercept", [True, False])


def train(params, task, ctx):
    model = make_pipeline(task.preprocessor(), LogisticRegression(C=params["C"], fit_intercept=params["fit_intercept"]))
    return model.fit(task.X_train, task.y_train)


FAST_LATENCY = {"latency": {"warmup": 1, "min_count": 5, "min_time_s": 0.0, "batch_size": 32}}


def make_study(task_, storage, **overrides) -> mt.Study:
    kwargs = dict(
        name="synthetic",
        task=task_,
        space=space,
        train=train,
        objectives=[mt.maximize("accuracy"), mt.minimize("demographic_parity_difference")],
        constraints=[mt.at_most("equalized_odds_difference", 0.5), mt.at_least("balanced_accuracy", 0.6)],
        storage=storage,
        seed=0,
    )
    kwargs.update(overrides)
    return mt.Study(**kwargs)


# ---------------------------------------------------------------- a study with every record the figures read

from motune.pruning import Decision, PruningPolicy  # noqa: E402

EVIL = "<img src=x onerror=alert(1)>"


class OddAtStep2(PruningPolicy):
    name = "odd_trials"

    def decide(self, ctx):
        return Decision(self.name, "odd peers") if ctx.step == 2 and len(ctx.peers) % 2 == 1 else None


def _reported_space(trial):
    trial.suggest_float("C", 1e-3, 10.0, log=True)
    trial.suggest_categorical("solver", ["lbfgs", "liblinear"])
    trial.suggest_categorical(EVIL, ["a", "b"])


def _reported_train(params, task, ctx):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(task.preprocessor(), LogisticRegression(C=params["C"], solver=params["solver"]))
    model.fit(task.X_train, task.y_train)
    for step in (1, 2, 3):
        ctx.report(step, model)
    return model


@pytest.fixture(scope="session")
def reported_result():
    """A finished study whose trials report (half pruned), measure latency and store per-group tables;
    a parameter name is hostile HTML."""
    task = mt.Task.from_frame(make_frame(), label="y", sensitive="group", seed=0, name="synthetic")
    study = make_study(task, optuna.storages.InMemoryStorage(), space=_reported_space, train=_reported_train, pruning=OddAtStep2(),
                       metrics=["latency_p95_ms"], metric_options=FAST_LATENCY,
                       constraints=[mt.at_most("equalized_odds_difference", 0.2)])
    return study.optimize(n_trials=8, show_progress=False)




# ---------------------------------------------------------------- shared helpers

def postgres_url() -> str:
    """The PostgreSQL server for the storage tests (MOTUNE_TEST_POSTGRES_URL; scripts/test starts one).
    Without one the calling test module is skipped, or fails with MOTUNE_REQUIRE_POSTGRES=1 (as in CI)."""
    url = os.environ.get("MOTUNE_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("MOTUNE_REQUIRE_POSTGRES") == "1":
            raise RuntimeError("MOTUNE_REQUIRE_POSTGRES=1 but MOTUNE_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server (set MOTUNE_TEST_POSTGRES_URL)", allow_module_level=True)
    return url


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` every 0.1 s until it returns something true (returned), or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
