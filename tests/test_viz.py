"""The figures' gathered data (no pixels), on a real study with pruning, latency and per-group tables."""

import json
import math

import numpy as np
import optuna
import plotly.graph_objects as go
import pytest

import motune as mt
from conftest import EVIL, make_study
from motune.viz.groups import _get_group_info
from motune.viz.history import RULE, _get_hypervolume_history_info, reference_point
from motune.viz.latency import _get_latency_info, mode_label, plot_latency
from motune.viz.pruning import _get_pruning_info
from motune.viz.tradeoffs import _get_importance_info, _get_parallel_info



def test_hypervolume_history_is_incremental_and_matches_a_recomputation(reported_result):
    info = _get_hypervolume_history_info(reported_result)
    assert info.rule == RULE and set(info.reference) == {"accuracy", "demographic_parity_difference"}
    records = [r for r in reported_result.records() if r.state in ("COMPLETE", "PRUNED")]
    assert info.trials == [r.number for r in records]
    assert all(b >= a for a, b in zip(info.hypervolume, info.hypervolume[1:]))  # never decreases
    for i, number in enumerate(info.trials):  # equals the hypervolume of all feasible trials so far
        upto = [r.number for r in records if r.number <= number]
        assert info.hypervolume[i] == pytest.approx(reported_result.hypervolume(info.reference, trials=upto))
    assert info.hypervolume[-1] > 0
    ref = reference_point(reported_result)
    feasible = [r for r in reported_result.records() if r.feasible]
    accs = [r.metrics["accuracy"] for r in feasible]
    assert ref["accuracy"] == pytest.approx(min(accs) - 0.1 * (max(accs) - min(accs)))


def test_parallel_coordinates_encode_log_and_categorical_params(reported_result):
    info = _get_parallel_info(reported_result)
    labels = [d.label for d in info.dimensions]
    assert labels[:3] == ["&lt;img src=x onerror=alert(1)&gt;", "log10(C)", "solver"]  # params sorted by name
    assert labels[3:] == ["accuracy \u2191", "demographic_parity_difference \u2193"]
    complete = [r for r in reported_result.records() if r.state == "COMPLETE"]
    assert info.trials == [r.number for r in complete]
    assert info.dimensions[1].values == pytest.approx([math.log10(r.params["C"]) for r in complete])
    solver = info.dimensions[2]
    assert solver.ticktext == ["lbfgs", "liblinear"]
    assert solver.values == [float(["lbfgs", "liblinear"].index(r.params["solver"])) for r in complete]


def test_importances_per_objective(reported_result):
    info = _get_importance_info(reported_result)
    assert set(info.importances) == {"accuracy", "demographic_parity_difference"}
    for imp in info.importances.values():
        assert set(imp) <= {"C", "solver", EVIL} and sum(imp.values()) == pytest.approx(1.0)


def test_group_bars_come_from_the_stored_tables(reported_result):
    from motune.viz.decision import candidates

    info = _get_group_info(reported_result)
    front = [int(t) for t in reported_result.front()["trial"]]
    picked = candidates(reported_result)  # the knee and the best on each objective, not the first five
    assert list(info.bars) == list(picked)[:5] and set(picked) <= set(front) and info.groups == ["a", "b"]
    assert info.labels[list(picked)[0]] == "; ".join(picked[list(picked)[0]])
    records = {r.number: r for r in reported_result.records()}
    first = records[front[0]].attrs["fairness"]["by_group"]
    assert info.bars[front[0]]["selection_rate"] == {row["group"]: row["selection_rate"] for row in first}
    assert _get_group_info(reported_result, trials=[front[-1]]).bars.keys() == {front[-1]}
    with pytest.raises(ValueError, match="no trial"):
        _get_group_info(reported_result, trials=[999])


def test_latency_info_and_pruning_info(reported_result):
    info = _get_latency_info(reported_result)
    complete = [r for r in reported_result.records() if r.state == "COMPLETE"]
    assert info.trials == [r.number for r in complete] and info.device == "cpu"
    assert all(s["p50_ci_low_ms"] <= s["p50_ms"] <= s["p50_ci_high_ms"] for s in info.stats)
    # scikit-learn models are timed on predict, host rows to host predictions: end to end, and the figure says so
    assert set(info.modes) == {"end_to_end"} and "model.predict" in info.window
    assert "end to end" in plot_latency(reported_result).layout.title.text
    assert mode_label(["device", "device"]) == "device time"
    assert mode_label(["device", None]) == "mixed modes: device time, mode not recorded"
    pruning = _get_pruning_info(reported_result)
    assert pruning.by_rule == {"odd_trials": 4} and pruning.steps == {"odd_trials": [2, 2, 2, 2]}
    assert pruning.budget_steps == 8 * 3 and pruning.used_steps == 4 * 3 + 4 * 2
    assert pruning.saved_fraction == pytest.approx(1 - 20 / 24)


def test_every_figure_takes_a_result_or_an_optuna_study(reported_result):
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    seen_escaped = set()
    for fn in (mt.viz.plot_pareto_front, mt.viz.plot_hypervolume_history, mt.viz.plot_parallel_coordinates,
               mt.viz.plot_param_importances, mt.viz.plot_group_fairness, mt.viz.plot_latency, mt.viz.plot_pruning):
        for arg in (reported_result, reported_result.study):
            fig = fn(arg)
            assert isinstance(fig, go.Figure) and fig.data, fn.__name__
            texts = list(_strings(json.loads(fig.to_json())))  # what plotly.js will read, decoded
            assert not [t for t in texts if EVIL in t], fn.__name__  # never as raw markup
            if any(escaped in t for t in texts):
                seen_escaped.add(fn.__name__)
    # the hostile parameter name is shown (escaped) where parameters are named
    assert {"plot_pareto_front", "plot_parallel_coordinates", "plot_param_importances"} <= seen_escaped
    with pytest.raises(TypeError, match="expected a motune Result"):
        mt.viz.plot_latency("not a study")
    pareto = mt.viz.plot_pareto_front(reported_result)
    assert any(t.name.startswith("pruned") for t in pareto.data)  # pruned trials at their last report


def test_a_study_without_trials_gives_messages_not_errors(task):
    res = mt.Result(mt.run.open_study(make_study(task, optuna.storages.InMemoryStorage())))
    assert mt.viz.report_figures(res) == []
    assert "no feasible completed trial" in mt.viz.plot_hypervolume_history(res).layout.annotations[0].text
    assert "no completed trial" in mt.viz.plot_parallel_coordinates(res).layout.annotations[0].text
    assert "at least 2 completed trials" in mt.viz.plot_param_importances(res).layout.annotations[0].text


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_hypervolume_is_computed_only_when_a_trial_enters_the_front(reported_result, monkeypatch):
    import optuna._hypervolume as hv

    calls = []
    real = hv.compute_hypervolume
    monkeypatch.setattr(hv, "compute_hypervolume", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    info = _get_hypervolume_history_info(reported_result)
    feasible = sum(1 for r in reported_result.records() if r.feasible)
    # at most one call per feasible trial after the first, each over (a clip of) the front only,
    # never over every feasible trial so far
    assert len(calls) <= feasible - 1 and all(n <= max(info.front_size) for n in calls)
    assert len(calls) < len(info.trials)


def test_conditional_parameters_sit_at_an_na_tick(task):
    def space(trial):
        kind = trial.suggest_categorical("kind", ["small", "large"])
        if kind == "large":
            trial.suggest_float("C", 1e-2, 10.0, log=True)
        else:
            trial.suggest_categorical("fit_intercept", [True, False])

    def train(params, task_, ctx):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        model = LogisticRegression(C=params.get("C", 1.0), fit_intercept=params.get("fit_intercept", True))
        return make_pipeline(task_.preprocessor(), model).fit(task_.X_train, task_.y_train)

    result = make_study(task, optuna.storages.InMemoryStorage(), space=space, train=train).optimize(
        n_trials=8, show_progress=False)
    kinds = [r.params["kind"] for r in result.records()]
    assert {"small", "large"} <= set(kinds)
    dims = {d.label: d for d in _get_parallel_info(result).dimensions}
    c = dims["log10(C)"]
    assert c.ticktext[0] == "n/a" and all((v == c.tickvals[0]) == (k == "small") for v, k in zip(c.values, kinds))
    fi = dims["fit_intercept"]
    assert fi.ticktext == ["True", "False", "n/a"]
    assert all((v == 2.0) == (k == "large") for v, k in zip(fi.values, kinds))
    assert _get_importance_info(result).left_out == ["C", "fit_intercept"]


def test_the_forecast_figure_sets_stored_forecasts_against_final_values(task):
    from test_pruning import sgd_space, sgd_train

    from motune.pruning import ForecastAware
    from motune.viz.pruning import _get_forecast_info

    study = make_study(task, optuna.storages.InMemoryStorage(), space=sgd_space, train=sgd_train,
                       pruning=ForecastAware(risk=0.01), keep_models="none", max_step=9)
    result = study.optimize(n_trials=16, show_progress=False)
    later = [r for r in result.records() if r.state == "COMPLETE" and r.forecasts]
    assert len(later) >= 3  # trials after the first three completed ones carry a forecast at every report
    info = _get_forecast_info(result)
    assert set(info.metrics) == {"accuracy", "demographic_parity_difference", "equalized_odds_difference",
                                 "balanced_accuracy"}
    first = info.points["accuracy"][0]
    record = next(r for r in later if r.number == first[0])
    assert first[1] == min(record.forecasts) and first[5] == record.metrics["accuracy"]
    held = [f["metrics"]["accuracy"]["low"] <= r.metrics["accuracy"] <= f["metrics"]["accuracy"]["high"]
            for r in later for f in r.forecasts.values() if f["metrics"]["accuracy"]["low"] is not None
            and f["metrics"]["accuracy"]["high"] is not None]
    assert info.checked.get("accuracy", 0) == len(held) == sum(len(r.forecasts) for r in later)  # all closed
    assert result.forecast_calibration().trials == len(later)  # trials, not forecasts
    assert info.coverage.get("accuracy") == (pytest.approx(np.mean(held)) if held else None)
    figure = mt.viz.plot_forecasts(result)
    assert len(figure.data) == 2 * len(info.metrics) and "intervals held the final value" in figure.layout.annotations[0].text
    assert "forecasts" in [key for key, _, _ in mt.viz.report_figures(result)]
