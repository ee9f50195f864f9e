"""Result: one snapshot of the study (one get_trials), the one feasibility rule everywhere."""

import io

import optuna
from rich.console import Console

import motune as mt
from conftest import make_study
from motune.results import record_of
from motune.run.progress import TrialProgress


def test_a_result_reads_the_study_once_and_refresh_reads_again(task, sqlite_url):
    make_study(task, sqlite_url, metrics=["latency_p95_ms"],
               metric_options={"latency": {"warmup": 1, "min_count": 5, "min_time_s": 0.0, "batch_size": 8}}
               ).optimize(n_trials=4, show_progress=False)
    result = mt.load_study("synthetic", storage=sqlite_url)
    calls = []
    real = result.study.get_trials
    result.study.get_trials = lambda *a, **k: calls.append(1) or real(*a, **k)
    result.records(), result.front(), result.trials(), result.summary()
    result.hypervolume({"accuracy": 0.5, "demographic_parity_difference": 0.5})
    mt.viz.report_figures(result)
    mt.viz.render_report(result)
    assert calls == []  # everything above read the snapshot
    make_study(task, sqlite_url, metrics=["latency_p95_ms"],
               metric_options={"latency": {"warmup": 1, "min_count": 5, "min_time_s": 0.0, "batch_size": 8}}
               ).optimize(n_trials=1, show_progress=False)
    assert len(result.records()) == 4
    assert len(result.refresh().records()) == 5 and calls == [1]


def test_a_missing_constraint_value_is_infeasible_for_the_result_and_the_progress(task):
    study = make_study(task, optuna.storages.InMemoryStorage())
    ostudy = mt.run.open_study(study)
    keys = [c.key for c in study.constraints]
    metrics = {"accuracy": 0.9, "demographic_parity_difference": 0.01, "equalized_odds_difference": 0.0,
               "balanced_accuracy": 0.9}
    ostudy.add_trial(optuna.trial.create_trial(values=[0.9, 0.01], user_attrs={"metrics": metrics},
                                               system_attrs={f"constraints:{keys[0]}": -0.5}))  # the second is missing
    result = mt.Result(ostudy)
    record = result.records()[0]
    assert record.feasible is False and not record.on_front and result.summary()["infeasible"] == 1
    progress = TrialProgress(study, total=1, console=Console(file=io.StringIO()))
    progress.on_trial_end(record_of(ostudy.trials[0], keys))
    assert progress.infeasible == 1 and progress.status().startswith("done 1/1 | front 0")
