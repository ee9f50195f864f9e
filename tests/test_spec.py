import pytest

import motune as mt
from conftest import FAST_LATENCY, make_study


def test_objectives_and_constraints():
    c = mt.at_most("equalized_odds_difference", 0.05)
    assert c.violation(0.08) == pytest.approx(0.03) and c.violation(0.01) < 0
    assert mt.at_least("balanced_accuracy", 0.7).violation(0.65) == pytest.approx(0.05)
    assert str(c) == "equalized_odds_difference <= 0.05"
    with pytest.raises(ValueError, match="direction"):
        mt.Objective("accuracy", "up")
    with pytest.raises(ValueError, match="finite number"):
        mt.at_most("accuracy", float("nan"))
    with pytest.raises(ValueError, match="finite number"):
        mt.at_most("accuracy", "0.1")


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(objectives=[mt.maximize("acuracy")]), mt.UnknownMetricError, "objective on 'acuracy'.*did you mean 'accuracy'"),
        (dict(objectives=[mt.maximize("accuracy"), mt.minimize("accuracy")]), mt.SpecError, "duplicate objective"),
        (dict(objectives=[]), mt.SpecError, "at least one objective"),
        (dict(objectives=["accuracy"]), TypeError, "mt.maximize"),
        (dict(constraints=[mt.at_most("energy_joules", 3.0)]), mt.UnknownMetricError, "constraint on 'energy_joules'"),
        (dict(constraints=[mt.at_most("roc_auc", 1), mt.at_most("roc_auc", 1)]), mt.SpecError, "duplicate constraint"),
        (dict(metrics=["f1"]), mt.UnknownMetricError, "metric on 'f1'"),
        (dict(metric_options={"latencyy": {}}), mt.SpecError, "no measured metric function has that key"),
        (dict(metrics=["robust_accuracy"], metric_options={"robustness": {"noize": 0.2}}), mt.SpecError, r"unknown option\(s\) \['noize'\]"),
        (dict(split="holdout"), mt.SpecError, "split must be one of"),
        (dict(name=" "), mt.SpecError, "non-empty name"),
        (dict(train="fit"), TypeError, "train must be a function"),
        (dict(task="adult"), TypeError, "motune.Task"),
        (dict(train=lambda params: None), TypeError, r"train must take 3 positional argument\(s\)"),
        (dict(space=lambda: None), TypeError, r"space must take 1 positional argument\(s\)"),
        (dict(metric_options={"accuracy": {"split": "test"}}), mt.SpecError, r"set Study\(split=...\)"),
        (dict(metrics=["latency_p50_ms"], metric_options={"latency": {"batch_size": 0}}), mt.SpecError,
         "need batch_size >= 1"),
        (dict(metrics=["robust_accuracy"], metric_options={"robustness": {"noise": -1}}), mt.SpecError,
         "need noise >= 0"),
    ],
)
def test_bad_study_definitions_fail_before_any_trial(task, sqlite_url, overrides, error, message):
    with pytest.raises(error, match=message):
        make_study(task, sqlite_url, **overrides)


def test_binary_metric_on_a_multiclass_task(frame, sqlite_url):
    import numpy as np

    three = frame.assign(y=np.where(frame["x1"] > 0.5, 2, np.where(frame["x1"] < -0.5, 0, 1)))
    task3 = mt.Task.from_frame(three, label="y", sensitive="group")
    with pytest.raises(mt.SpecError, match="'demographic_parity_difference' needs a binary label.*3 classes"):
        make_study(task3, sqlite_url)
    with pytest.raises(mt.SpecError, match="'roc_auc' needs a binary label"):
        make_study(task3, sqlite_url, objectives=[mt.maximize("roc_auc")], constraints=[])
    ok = make_study(task3, sqlite_url, objectives=[mt.maximize("accuracy")], constraints=[])
    assert "worst_group_accuracy" in ok.measured_metrics


def test_measured_metrics_and_options(task, sqlite_url):
    s = make_study(task, sqlite_url, metrics=["latency_p95_ms"], metric_options=FAST_LATENCY)
    assert s.measured_metrics[:4] == ["accuracy", "demographic_parity_difference",
                                      "equalized_odds_difference", "balanced_accuracy"]
    assert "latency_p95_ms" in s.measured_metrics and "robust_accuracy" not in s.measured_metrics
    assert s.spec_record()["constraints"][0] == {"metric": "equalized_odds_difference", "op": "<=", "bound": 0.5}


def test_a_single_objective_constraint_or_metric_needs_no_list(task, sqlite_url):
    s = make_study(task, sqlite_url, objectives=mt.maximize("accuracy"),
                   constraints=mt.at_most("equalized_odds_difference", 0.2), metrics="roc_auc")
    assert [str(o) for o in s.objectives] == ["maximize accuracy"]
    assert len(s.constraints) == 1 and s.metrics == ("roc_auc",)


def test_metric_keys_cannot_collide():
    mt.register_metric("collide_a", lambda model, task: {"collide_a": 0.0})
    try:
        with pytest.raises(ValueError, match="key '<lambda>' is already used"):
            mt.register_metric("collide_b", lambda model, task: {"collide_b": 0.0})
    finally:
        mt.metrics.unregister_metric("collide_a")
