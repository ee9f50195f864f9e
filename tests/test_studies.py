"""The shipped studies, end to end on the real data (slow)."""

import runpy
from pathlib import Path

import pytest
from typer.testing import CliRunner

import motune as mt
from motune.cli import app

STUDIES = Path(__file__).parents[1] / "studies"
pytestmark = pytest.mark.slow


def test_adult_fairness_study_from_the_command_line(sqlite_url, tmp_path):
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(STUDIES / "adult_fairness.py"), "--trials", "4", "--storage", sqlite_url])
    assert ran.exit_code == 0, ran.output
    result = mt.load_study("adult-fairness", storage=sqlite_url)
    records = result.records()
    assert [r.state for r in records] == ["COMPLETE"] * 4
    assert all(0.75 < r.metrics["accuracy"] < 0.9 for r in records)
    assert {row["group"] for row in records[0].attrs["fairness"]["by_group"]} == {"Female", "Male"}
    assert {"robust_accuracy", "roc_auc", "latency_p95_ms"} <= set(records[0].metrics)
    assert {"model", "reweighing", "postprocess"} <= set(records[0].params)
    report = runner.invoke(app, ["report", "adult-fairness", "-o", str(tmp_path / "r.html"), "--storage", sqlite_url])
    assert report.exit_code == 0
    assert "UCI Adult" in (tmp_path / "r.html").read_text()


def test_german_credit_study(sqlite_url):
    study = runpy.run_path(str(STUDIES / "german_credit.py"))["study"]
    study.storage = sqlite_url
    result = study.optimize(n_trials=4, show_progress=False)
    assert result.summary()["complete"] == 4
    assert result.summary()["feasible"] >= 1
