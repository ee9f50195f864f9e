import re

import optuna
import pytest

import motune as mt
from conftest import make_study
from motune.viz._common import as_result
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


def _plain(values, name="plain"):
    """A plain Optuna study (maximize a, minimize b) whose trials end with ``values`` in order."""
    study = optuna.create_study(study_name=name, directions=["maximize", "minimize"])
    study.set_metric_names(["a", "b"])
    for i, v in enumerate(values):
        study.enqueue_trial({"x": float(i)})
    study.optimize(lambda t, it=iter(values): (t.suggest_float("x", 0, 100), next(it))[1], n_trials=len(values))
    return study


def test_ties_on_the_front_are_grouped_and_said():
    page = render_report(as_result(_plain([(0.9, 1.0), (0.9, 1.0), (0.9, 1.0), (0.5, 0.2)])))
    assert "Trials 0, 1, 2 tie on every objective: one point of the front" in page


def test_params_print_at_4_digits_with_the_exact_value_on_hover():
    page = render_report(as_result(_plain([(0.9, 1.0), (0.5, 0.2)])))
    front = page[page.index("<h2>Front"):]
    assert "<td title='1.0'>1</td>" in front  # x of trial 1: 1.0 shown as 1, exact on hover
    study = _plain([(0.9, 1.0)], name="long")
    study.enqueue_trial({"x": 0.01665710702398867})
    study.optimize(lambda t: (t.suggest_float("x", 0, 100), 0.5), n_trials=1)  # on the front
    page = render_report(as_result(study))
    assert "<td title='0.01665710702398867'>0.01666</td>" in page and ">0.01665710702398867<" not in page


def test_a_flat_hypervolume_is_drawn_on_its_own_scale():
    fig = mt.viz.plot_hypervolume_history(_plain([(0.9, 0.1), (0.5, 0.5), (0.4, 0.6)]))
    low, high = fig.layout.yaxis.range
    value = fig.data[0].y[0]
    assert all(y == value for y in fig.data[0].y) and low < value < high and low > 0  # not a 0..1 axis
    assert any("flat at" in (a.text or "") for a in fig.layout.annotations)


def test_a_latency_outlier_does_not_set_the_range():
    import plotly.graph_objects as go

    from motune.viz.latency import _range_from_spread

    stats = [{"min_ms": 8.0 + i, "p50_ms": 10.0 + i, "p90_ms": 14.0 + i, "p95_ms": 16.0 + i, "p99_ms": 20.0 + i,
              "max_ms": 24.0 + i} for i in range(5)]
    stats[2]["max_ms"], stats[2]["p99_ms"] = 250.0, 120.0
    fig = go.Figure()
    _range_from_spread(fig, [f"trial {i}" for i in range(5)], stats)
    low, high = fig.layout.yaxis.range
    assert high < 30 and low > 0  # the spread of what is compared, not 0..250
    above = next(t for t in fig.data if t.name.startswith("above the range"))
    assert "trial 2: max 250 ms" in " ".join(above.hovertext) and "trial 2: p99 120 ms" in " ".join(above.hovertext)
    assert any("up to 250 ms" in a.text for a in fig.layout.annotations)
