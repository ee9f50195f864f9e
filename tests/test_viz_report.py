import re

import optuna
import pytest

import motune as mt
from conftest import make_study
from motune.viz.pareto import _get_pareto_info, axis_title, plot_pareto_front
from motune.viz.report import render_report

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def result(task):
    def space(trial):
        trial.suggest_float("C", 1e-3, 10.0, log=True)
        trial.suggest_categorical("fit_intercept", [True, False])
        trial.suggest_categorical("note", [EVIL])

    study = make_study(task, optuna.storages.InMemoryStorage(), space=space, description=EVIL,
                       constraints=[mt.at_most("equalized_odds_difference", 0.12)])
    return study.optimize(n_trials=10, show_progress=False)


def test_pareto_info_tells_front_dominated_and_infeasible_apart(result):
    info = _get_pareto_info(result)
    assert info.axes == ["accuracy", "demographic_parity_difference"]
    assert info.titles == ["accuracy (higher is better)", "demographic_parity_difference (lower is better)"]
    records = {r.number: r for r in result.records()}
    for category, points in info.points.items():
        for number, values, hover in points:
            r = records[number]
            expected = "front" if r.on_front else ("dominated" if r.feasible else "infeasible")
            assert category == expected
            assert values == (r.metrics["accuracy"], r.metrics["demographic_parity_difference"])
            assert f"trial {number}" in hover and EVIL not in hover
    assert sum(len(p) for p in info.points.values()) == 10
    assert len(info.points["front"]) == len(result.front())
    assert info.bounds == []  # the constraint's metric is not on an axis
    with pytest.raises(ValueError, match="not objectives"):
        _get_pareto_info(result, ["latency_p95_ms"])


def test_axis_units():
    assert axis_title("latency_p95_ms", "minimize") == "latency_p95_ms (ms, lower is better)"
    assert axis_title("throughput_per_s") == "throughput_per_s (1/s)"


def test_figure_traces(result):
    fig = plot_pareto_front(result)
    names = [t.name for t in fig.data]
    assert any(n.startswith("feasible front") for n in names)
    assert sum(len(t.x) for t in fig.data) == 10


def test_figure_draws_constraint_bounds_on_axes(task):
    study = make_study(task, optuna.storages.InMemoryStorage(),
                       objectives=[mt.maximize("accuracy"), mt.minimize("equalized_odds_difference")],
                       constraints=[mt.at_most("equalized_odds_difference", 0.12)])
    fig = plot_pareto_front(study.optimize(n_trials=3, show_progress=False))
    assert [s.y0 for s in fig.layout.shapes] == [0.12]


def test_three_objectives_draw_in_3d(task):
    study = make_study(task, optuna.storages.InMemoryStorage(),
                       objectives=[mt.maximize("accuracy"), mt.minimize("demographic_parity_difference"),
                                   mt.minimize("equalized_odds_difference")], constraints=[])
    fig = plot_pareto_front(study.optimize(n_trials=3, show_progress=False))
    assert fig.data[0].type == "scatter3d"


def test_report_is_self_contained_and_escapes_user_text(result):
    page = render_report(result)
    assert EVIL not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert not re.search(r"<script[^>]+src=", page), "no external scripts: it must work offline"
    assert "plotly.js" in page and "Plotly.newPlot" in page
    assert "maximize accuracy" in page and "equalized_odds_difference &lt;= 0.12" in page
    assert f"Front ({len(result.front())} feasible non-dominated trials)" in page
    assert "&quot;fingerprint&quot;" in page  # provenance (escaped JSON)


def test_report_of_an_empty_study(task):
    study = make_study(task, optuna.storages.InMemoryStorage())
    from motune.run import open_study

    page = render_report(mt.Result(open_study(study)))
    assert "No completed trial yet" in page and "Plotly.newPlot" not in page


def test_png_export_without_a_browser_says_why_and_still_writes_the_report(task, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    make_study(task, url, name="no-browser").optimize(n_trials=2, show_progress=False)
    bin_dir = str(Path(sys.executable).parent)  # no /usr/bin: no chromium; BROWSER_PATH points nowhere
    env = {**os.environ, "PATH": bin_dir, "BROWSER_PATH": str(tmp_path / "no-chrome")}
    out = tmp_path / "r.html"
    ran = subprocess.run([os.path.join(bin_dir, "motune"), "report", "no-browser", "-o", str(out), "--storage", url,
                          "--png"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr  # a script can tell; the report itself is complete
    assert "no PNGs written" in ran.stderr and "Chrome or Chromium" in ran.stderr
    assert out.stat().st_size > 1_000_000 and not (tmp_path / "r_figures").exists()
