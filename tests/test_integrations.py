"""The tools people already use, each against the real client: optuna-dashboard's WSGI app and
Optuna's own API (intermediate values, trials_dataframe, plot_intermediate_values)."""

import json
import re
from wsgiref.util import setup_testing_defaults

import numpy as np
import optuna
import pytest

import motune as mt
from conftest import make_study
from conftest import train as fit
from motune.pruning import SuccessiveHalving


def reporting_train(params, task, ctx):
    """A fitted pipeline reported at steps 1-3 (its measured metrics move only with the params)."""
    model = fit(params, task, ctx)
    for step in (1, 2, 3):
        ctx.report(step, model)
    return model


def _study(task, url, **overrides):
    return make_study(task, url, train=reporting_train, **overrides)


def api(app, path):
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:300])
    return json.loads(body)


def test_the_dashboard_shows_learning_curves_sortable_metrics_the_note_and_the_report(task, tmp_path, monkeypatch):
    from optuna_dashboard import wsgi

    from motune.cli import app as cli

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    study = _study(task, url, pruning=None)
    result = study.optimize(n_trials=3, show_progress=False)
    from typer.testing import CliRunner

    decided = CliRunner().invoke(cli, ["decide", "synthetic", "--storage", url, "--rule", "lexicographic", "--order",
                                       "accuracy", "--why", "most accurate", "--by", "test"])
    assert decided.exit_code == 0, decided.output
    ran = CliRunner().invoke(cli, ["report", "synthetic", "--storage", url, "-o", str(tmp_path / "r.html")])
    assert ran.exit_code == 0 and "attached the report" in ran.output, ran.output

    result = mt.load_study("synthetic", storage=url)
    app = wsgi(url, artifact_store=result.artifact_store)
    studies = api(app, "/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in studies if s["study_name"] == "synthetic")
    detail = api(app, f"/api/studies/{study_id}")
    trial = detail["trials"][0]
    curve = {v["step"]: v["value"] for v in trial["intermediate_values"]}
    assert curve == {s: pytest.approx(result.records()[0].reports[s]["accuracy"]) for s in (1, 2, 3)}
    assert detail["has_intermediate_values"]
    assert {"key": "metric:accuracy", "sortable": True} in detail["union_user_attrs"]
    assert "**Objectives:** maximize `accuracy`" in detail["note"]["body"]
    assert "Decision 1" in detail["note"]["body"] and "most accurate" in detail["note"]["body"]
    assert any(a["filename"] == "r.html" for a in detail["artifacts"])
    assert "<!--" not in detail["note"]["body"] and detail["note"]["body"].rstrip().endswith(
        "[//]: # (written by motune; remove this line to keep your edits)")  # a marker Markdown does not show
    # motune's constraint-aware front on the study's page: only feasible trials on it, the decision starred
    figures = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
    assert set(figures) == {"motune-front"}
    front = figures["motune-front"]
    decision = result.refresh().decision
    assert f"decision {decision.number}: trial {decision.trial}" in front["layout"]["title"]["text"]
    on_front = [r.number for r in result.records() if r.on_front]
    traces = {t["name"].split(" (")[0]: t for t in front["data"]}
    assert len(traces["feasible front"]["x"]) == len(on_front) and all(r.feasible for r in result.records()
                                                                       if r.on_front)
    assert any(f"trial {decision.trial}" in str(t.get("hovertext") or t.get("text")) or
               "chosen" in t["name"] for t in front["data"])


def test_tpe_suggests_over_pruned_trials_that_carry_intermediate_values(task):
    """In a multi-objective study a PRUNED trial with intermediate values makes TPE raise (Optuna 5.0):
    motune writes them, and its sampler view keeps them from TPE, whether or not it shows pruned trials."""
    for sees in (True, False):
        study = _study(task, optuna.storages.InMemoryStorage(), sampler_sees_pruned=sees,
                       pruning=SuccessiveHalving(min_resource=1, eta=2, min_peers=2, calibrate=False))
        result = study.optimize(n_trials=14, show_progress=False)  # past TPE's 10 random start-up trials
        pruned = [t for t in result.study.get_trials() if t.state.name == "PRUNED"]
        assert pruned and all(t.intermediate_values for t in pruned), sees
        assert len(result.records()) == 14
        assert {r.state for r in result.records()} <= {"COMPLETE", "PRUNED"}, sees  # no suggestion raised


def test_optuna_sees_learning_curves_and_flat_metric_columns(task):
    result = _study(task, optuna.storages.InMemoryStorage(), pruning=None).optimize(n_trials=2, show_progress=False)
    figure = optuna.visualization.plot_intermediate_values(result.study)
    traces = {t.name: (list(t.x), list(t.y)) for t in figure.data}
    first = result.records()[0]
    assert traces["Trial0"] == ([1, 2, 3], [pytest.approx(first.reports[s]["accuracy"]) for s in (1, 2, 3)])
    frame = result.study.trials_dataframe()
    assert frame["user_attrs_metric:accuracy"].dtype == np.float64
    assert frame["user_attrs_metric:accuracy"].tolist() == pytest.approx([r.metrics["accuracy"] for r in result.records()])


def test_mlflow_logs_each_trial_and_the_decision(task, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # a SQLite tracking store puts run artifacts in ./mlruns
    from mlflow.tracking import MlflowClient

    from motune.integrations.mlflow import MLflowCallback, log_decision

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = _study(task, f"sqlite:///{tmp_path / 'm.db'}", keep_models="all",
                   pruning=SuccessiveHalving(min_resource=1, eta=2, min_peers=2, calibrate=False),
                   constraints=[mt.Constraint("equalized_odds_difference", "<=", 0.5),
                                mt.Constraint("equalized_odds_difference", ">=", 0.0)])
    result = study.optimize(n_trials=4, show_progress=False, callbacks=[MLflowCallback(uri)])
    decision = mt.decide(mt.select(result, mt.rules.knee()), rationale="the knee", decided_by="test")
    run_id = log_decision(decision, uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synthetic")
    runs = {r.data.tags["mlflow.runName"]: r for r in client.search_runs([experiment.experiment_id])}
    assert {f"trial {r.number}" for r in result.records()} | {"decision 1"} == set(runs)
    for r in result.records():
        run = runs[f"trial {r.number}"]
        assert run.data.tags["motune.state"] == r.state and run.data.params["C"] == str(r.params["C"])
        assert run.info.status == ("FINISHED" if r.state == "COMPLETE" else "KILLED")
        history = client.get_metric_history(run.info.run_id, "report:accuracy")
        assert [(m.step, m.value) for m in history] == [(s, pytest.approx(v["accuracy"])) for s, v in
                                                        sorted(r.reports.items())]
        files = {f.path for f in client.list_artifacts(run.info.run_id)}
        if r.state == "COMPLETE":  # (a pruned trial has its reports; provenance is recorded on completion)
            assert "provenance.json" in files
            assert run.data.metrics["accuracy"] == pytest.approx(r.metrics["accuracy"])
            assert "fairness_by_group.json" in files
            at_most, at_least = (r.violations[c.key] for c in study.constraints)  # x <= b and x >= b: two names
            assert run.data.metrics["constraint:equalized_odds_difference le 0.5"] == pytest.approx(at_most)
            assert run.data.metrics["constraint:equalized_odds_difference ge 0"] == pytest.approx(at_least)
            assert run.data.tags["motune.model.sha256"] == r.model["sha256"] and "model.json" in files
        assert run.info.end_time - run.info.start_time == pytest.approx(1000 * r.duration_s, abs=2)  # the trial's
    chosen = runs["decision 1"]
    assert chosen.info.run_id == run_id and chosen.data.tags["motune.trial"] == str(decision.trial)
    assert chosen.data.tags["motune.rule"] == "knee" and "the knee" in chosen.data.tags["mlflow.note.content"]


def test_a_plain_optuna_study_gets_motunes_front_figures_and_report(tmp_path):
    from typer.testing import CliRunner

    from motune.cli import app as cli

    url = f"sqlite:///{tmp_path / 'plain.db'}"
    plain = optuna.create_study(study_name="plain", storage=url, directions=["maximize", "minimize"])
    plain.set_metric_names(["accuracy", "cost_ms"])

    def objective(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        trial.set_constraint("y <= 0.8", y - 0.8)
        return x - y, (1 - x) ** 2 + y

    plain.optimize(objective, n_trials=30)
    result = mt.load_study("plain", storage=url)
    assert result.foreign and [str(o) for o in result.objectives] == ["maximize accuracy", "minimize cost_ms"]
    assert result.constraint_keys == ["y <= 0.8"]
    infeasible = {t.number for t in plain.trials if t.params["y"] > 0.8}
    front = set(result.front()["trial"])
    assert front and not front & infeasible  # Optuna's own best_trials would not exclude them
    expected = {t.number for t in optuna.study._multi_objective._get_pareto_front_trials_by_trials(  # noqa: SLF001
        [t for t in plain.trials if t.number not in infeasible], plain.directions)}
    assert front == expected
    assert mt.viz.plot_pareto_front(plain).data  # a plain optuna.Study works too
    runner = CliRunner()
    shown = runner.invoke(cli, ["front", "plain", "--storage", url])
    assert shown.exit_code == 0 and "was not created by motune" in shown.output and "missing:" in shown.output
    report = runner.invoke(cli, ["report", "plain", "--storage", url, "-o", str(tmp_path / "plain.html")])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "plain.html").read_text()
    assert "Not created by motune" in html and "y &lt;= 0.8 (Optuna's value; bound not recorded)" in html
    # only what the study has: no task, split or version motune would have recorded, no "motune None"
    assert ">task<" not in html and "metrics measured on" not in html and ">version<" not in html
    assert "None" not in re.sub(r"<script.*?</script>", "", html, flags=re.S)
    assert re.search(r"Generated by motune \d", html) and "the study was recorded by motune" not in html


def test_a_note_a_person_wrote_in_the_dashboard_is_kept(task):
    from optuna_dashboard import get_note, save_note

    from motune.dashboard import MARKER, save_study_note

    result = _study(task, optuna.storages.InMemoryStorage(), pruning=None).optimize(n_trials=1, show_progress=False)
    assert MARKER in get_note(result.study)  # motune's own note
    save_note(result.study, "our team's notes")
    mt.decide(mt.select(result.refresh(), mt.rules.knee()), rationale="the knee", decided_by="test")
    save_study_note(result.study)
    assert get_note(result.study) == "our team's notes"
