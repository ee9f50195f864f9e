"""motune check: a decision's model on new data (real storage, real models, the CLI's exit codes), and
versioned study specs with their lineage."""

from __future__ import annotations

import json
import textwrap

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

import motune as mt
from motune.cli import app
from motune.errors import TaskError
from motune.monitoring.check import new_rows_task, psi, psi_noise

runner = CliRunner()

STUDY_FILE = '''
"""A study for the check tests: its version and bound come from the environment."""
import os

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import motune as mt
from conftest import make_frame

task = mt.Task.from_frame(make_frame(), label="y", sensitive="group", seed=0, name="synthetic")


def space(trial):
    trial.suggest_float("C", 1e-3, 10.0, log=True)


def train(params, task, ctx):
    model = make_pipeline(task.preprocessor(), LogisticRegression(C=params["C"]))
    return model.fit(task.X_train, task.y_train)


study = mt.Study(
    name="checked",
    version=int(os.environ.get("CHECK_VERSION", "1")),
    task=task,
    space=space,
    train=train,
    objectives=[mt.maximize("accuracy"), mt.minimize("equalized_odds_difference")],
    constraints=[mt.at_most("demographic_parity_difference", float(os.environ.get("CHECK_BOUND", "0.25")))],
    seed=0,
)
'''


def rows_of(task, split: str) -> pd.DataFrame:
    """A split of the task as the raw rows a user would hand to check (label values, sensitive column)."""
    X, y, s = getattr(task, f"X_{split}"), getattr(task, f"y_{split}"), getattr(task, f"sensitive_{split}")
    return X.assign(**{task.label: [task.classes[i] for i in y], task.sensitive: s.to_numpy()})


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    """A study run and decided through the CLI; returns (study file, storage url, its task)."""
    folder = tmp_path_factory.mktemp("check")
    path = folder / "checked_study.py"
    path.write_text(textwrap.dedent(STUDY_FILE))
    url = f"sqlite:///{folder / 'motune.db'}"
    mp = pytest.MonkeyPatch()
    from pathlib import Path

    mp.syspath_prepend(str(Path(__file__).parent))  # the study file imports conftest's frame
    ran = runner.invoke(app, ["run", str(path), "--trials", "6", "--storage", url])
    assert ran.exit_code == 0, ran.output
    chose = runner.invoke(app, ["decide", "checked", "--rule", "knee", "--why", "the knee", "--by", "a test",
                                "--storage", url])
    assert chose.exit_code == 0, chose.output
    result = mt.load_study("checked", storage=url)
    yield path, url, result.task()
    mp.undo()


def test_a_check_on_the_validation_rows_passes_with_the_recorded_values(decided, tmp_path):
    path, url, task = decided
    data = tmp_path / "valid.csv"
    rows_of(task, "valid").to_csv(data, index=False)
    out = runner.invoke(app, ["check", "checked", "--data", str(data), "--storage", url, "--format", "json"])
    assert out.exit_code == 0, out.output
    record = json.loads(out.stdout)
    assert record["verdict"] == "pass" and not record["reasons"]
    steps = [line for line in out.stderr.splitlines() if line.startswith("checking decision")]
    assert [line.split(": step ")[1].split(",")[0] for line in steps[:3]] == ["1 of 3", "2 of 3", "3 of 3"], steps
    assert "100 bootstrap resamples" in steps[1] and " s so far)" in steps[2] and "done in" in steps[3]
    assert record["data"]["rows"] == len(task.X_valid)
    for name, v in record["values"].items():  # the same rows: the same values, inside their intervals
        assert v["value"] == pytest.approx(v["recorded"], abs=1e-9), name
        assert v["low"] <= v["high"], name
    assert all(c["kept"] for c in record["constraints"].values())
    assert not record["drift"]["shifted"]  # 120 rows: PSI of a few tenths is what chance gives
    assert all(record["drift"]["psi"][c] <= record["drift"]["psi_by_chance"][c] for c in record["drift"]["psi"])


def test_a_shifted_sample_fails_naming_the_broken_constraint_and_the_checks_round_trip(decided, tmp_path):
    path, url, task = decided
    rows = pd.concat([rows_of(task, "valid"), rows_of(task, "test")])
    minority = rows[task.sensitive].value_counts().idxmin()
    shifted = rows[~((rows[task.sensitive] == minority) & (rows[task.label] == 1))]  # its positives removed
    data = tmp_path / "shifted.csv"
    shifted.to_csv(data, index=False)
    out = runner.invoke(app, ["check", "checked", "--data", str(data), "--storage", url])
    assert out.exit_code == 1, out.output
    assert "demographic_parity_difference <= 0.25" in out.output and "BROKEN" in out.output, out.stdout

    stored = mt.load_study("checked", storage=url).checks()
    failed = stored[-1]
    assert failed["verdict"] == "fail" and failed["data"]["rows"] == len(shifted)
    assert any("constraint demographic_parity_difference <= 0.25 broken" in r for r in failed["reasons"])
    assert [c["kept"] for c in failed["constraints"].values() if c["metric"] == "demographic_parity_difference"] \
        == [False]
    new_rate = failed["drift"]["label_rate"]["new"]
    assert new_rate < failed["drift"]["label_rate"]["train"]  # the drift report sees the label rate fall
    assert failed["drift"]["groups_without_positives"] == [minority]
    assert f"group {minority} has no positive label here" in out.output
    assert failed["data"]["fingerprint"].startswith("sha256:")

    again = mt.check(mt.load_study("checked", storage=url), shifted, task=task, store=False)
    assert again["verdict"] == "fail" and again["values"].keys() == failed["values"].keys()
    assert again["constraints"] == failed["constraints"]  # stored JSON round-trips the same record
    history = runner.invoke(app, ["checks", "checked", "--storage", url, "--format", "json"])
    assert history.exit_code == 0 and [c["verdict"] for c in json.loads(history.output)][-1] == "fail"

    from motune.viz import plot_checks, report_figures

    fig = plot_checks(mt.load_study("checked", storage=url))
    assert any(tr.y and tr.y[-1] == pytest.approx(failed["values"]["demographic_parity_difference"]["value"])
               for tr in fig.data)
    assert any("<= 0.25" in (a.text or "") for a in fig.layout.annotations)  # the bound is drawn
    decision = failed["decision"]  # one line per decision, its baseline labelled with it
    assert {tr.name for tr in fig.data} == {f"decision {decision} (trial {failed['trial']})"}
    assert any((a.text or "").startswith(f"decision {decision}: recorded") for a in fig.layout.annotations)
    assert "checks" in [key for key, _, _ in report_figures(mt.load_study("checked", storage=url))]


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns=["x2"]), "lacks the study's feature column(s) ['x2']"),
    (lambda f: f.drop(columns=["y"]).assign(target=f["y"]), "has no label column 'y'"),
    (lambda f: f.assign(y=f["y"].map({0: "no", 1: "yes"})), "label 'y' has value(s) ['no', 'yes']"),
    (lambda f: f.assign(color=f["color"].replace("red", "purple")), "categories the study's data never had "
                                                                    "(color: ['purple'])"),
    (lambda f: f[f["group"] == "a"], "a single group of 'group'"),
    (lambda f: f.iloc[:0], "has no rows"),
])
def test_new_data_that_is_not_the_studys_schema_is_refused_by_name(task, change, message):
    with pytest.raises(TaskError) as e:
        new_rows_task(task, change(rows_of(task, "valid")))
    assert message in str(e.value)


def test_the_cli_exits_2_on_bad_input(decided, tmp_path):
    path, url, task = decided
    data = tmp_path / "bad.csv"
    rows_of(task, "valid").drop(columns=["x1"]).to_csv(data, index=False)
    good = tmp_path / "good.csv"
    rows_of(task, "valid").to_csv(good, index=False)
    garbled = tmp_path / "garbled.csv"
    garbled.write_bytes(b"\xff\xfe\x00x1,\"unclosed\n1,2,3,4\n")
    letters = tmp_path / "letters.csv"
    rows_of(task, "valid").assign(x2="many").to_csv(letters, index=False)
    failing = tmp_path / "make.py"
    failing.write_text("def rows():\n    raise RuntimeError('the warehouse is down')\n")
    rows = rows_of(task, "valid")
    one_class = tmp_path / "one_class.csv"
    rows[rows[task.label] == rows[task.label].iloc[0]].to_csv(one_class, index=False)
    for args, says in ((["--data", str(data)], "x1"), (["--data", str(tmp_path / "nowhere.csv")], "no data file"),
                       (["--data", "x.py:make"], "no Python file"), (["--data", str(garbled)], "cannot read"),
                       (["--data", str(letters)], "numeric column 'x2' has non-numbers"),
                       (["--data", f"{failing}:rows"], "the warehouse is down"),
                       (["--data", str(good), "--decision", "9"], "has no decision 9; it has [1]"),
                       (["--data", str(one_class)], "cannot be measured on it; check on rows with every class"),
                       (["--data", str(good), "--format", "xml"], "--format"),
                       (["--data", str(good), "--constraints-of", "nothing"], "nothing")):
        out = runner.invoke(app, ["check", "checked", "--storage", url, *args])
        assert out.exit_code == 2 and says in out.output, (args, out.output)


def test_psi_is_zero_for_the_same_sample_large_for_a_moved_one_and_a_small_sample_is_judged_by_chance():
    import numpy as np

    rng = np.random.default_rng(0)
    a = pd.Series(rng.normal(size=2000))
    assert psi(a, a, numeric=True) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, a + 1.0, numeric=True) > max(0.2, psi_noise(a, a + 1.0, numeric=True))
    small = [psi(a, pd.Series(rng.normal(size=100)), numeric=True) for _ in range(200)]  # no shift, 100 rows
    noise = psi_noise(a, pd.Series(rng.normal(size=100)), numeric=True)
    assert sum(v > 0.2 for v in small) > 0 and sum(v > noise for v in small) <= 8  # 0.2 alone cries wolf
    colors = pd.Series(["red"] * 50 + ["blue"] * 50)
    assert psi(colors, pd.Series(["red"] * 90 + ["blue"] * 10), numeric=False) > 0.2


def test_a_new_version_records_its_lineage_and_rejudges_an_old_decision(decided, tmp_path, monkeypatch):
    path, url, task = decided
    monkeypatch.setenv("CHECK_VERSION", "2")
    monkeypatch.setenv("CHECK_BOUND", "0.05")
    ran = runner.invoke(app, ["run", str(path), "--trials", "2", "--storage", url])
    assert ran.exit_code == 0, ran.output

    v2 = mt.load_study("checked@v2", storage=url)
    assert v2.version == 2 and v2.info["family"] == "checked"
    assert v2.lineage == {"study": "checked", "version": 1,
                          "changes": ["demographic_parity_difference <= 0.25 -> <= 0.05"]}
    v1 = mt.load_study("checked", storage=url)
    assert v1.version == 1 and v1.lineage is None and v1.decision.spec_version == 1
    listed = runner.invoke(app, ["studies", "--storage", url])
    assert listed.exit_code == 0 and "checked@v2" in listed.output and "0.05" in listed.output, listed.output

    from motune.viz import render_report

    assert "following checked (version 1): demographic_parity_difference &lt;= 0.25 -&gt; &lt;= 0.05" in \
        render_report(v2)

    data = tmp_path / "valid.csv"
    rows_of(task, "valid").to_csv(data, index=False)
    out = runner.invoke(app, ["check", "checked", "--data", str(data), "--storage", url, "--constraints-of",
                              "checked@v2", "--format", "json", "--no-store"])
    assert out.exit_code in (0, 1), out.output
    record = json.loads(out.stdout)
    judged = next(c for c in record["constraints"].values() if c["metric"] == "demographic_parity_difference")
    assert record["constraints_of"] == "checked@v2" and judged["bound"] == 0.05 and record["constraints_version"] == 2
    assert record["spec_version"] == 1  # the decision's version
    # the same rows passed under version 1's bound (0.25); the decision's gap is above version 2's
    assert judged["value"] > 0.05 and judged["kept"] is False and out.exit_code == 1
    assert len(mt.load_study("checked", storage=url).checks()) == len(v1.checks())  # --no-store stored nothing

    monkeypatch.setenv("CHECK_VERSION", "1")  # version 1 with a changed bound: refused, pointing at a version
    again = runner.invoke(app, ["run", str(path), "--trials", "1", "--storage", url])
    assert again.exit_code == 2 and "version" in again.output


def test_versions_are_validated_and_read_from_a_name(task):
    from conftest import space, train

    def study(name, **kw):
        return mt.Study(name=name, task=task, space=space, train=train, objectives=[mt.maximize("accuracy")],
                        storage=optuna.storages.InMemoryStorage(), **kw)

    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(mt.SpecError, match="version"):
            study("v", version=bad)
    with pytest.raises(mt.SpecError, match="says version 2 but version=3"):
        study("v@v2", version=3)
    assert (study("v@v2").name, study("v@v2").version, study("v@v2").family) == ("v@v2", 2, "v")
    assert (study("team@vision").name, study("team@vision").family) == ("team@vision", "team@vision")
    assert study("team@vision", version=2).name == "team@vision@v2"


def test_spec_changes_keep_two_constraints_on_one_metric_apart():
    from motune.run.study import spec_changes

    before = {"constraints": [{"metric": "accuracy", "op": ">=", "bound": 0.7},
                              {"metric": "accuracy", "op": "<=", "bound": 0.99}]}
    after = {"constraints": [{"metric": "accuracy", "op": ">=", "bound": 0.75},
                             {"metric": "accuracy", "op": "<=", "bound": 0.99}]}
    assert spec_changes(before, after) == ["accuracy >= 0.7 -> >= 0.75"]
