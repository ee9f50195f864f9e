import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from motune.cli import app

HERE = Path(__file__).parent
runner = CliRunner()


@pytest.fixture
def study_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # the study file imports conftest's frame
    path = tmp_path / "my_study.py"
    shutil.copy(HERE / "study_file.py", path)
    return path


def test_run_front_report_studies(study_file, sqlite_url, tmp_path):
    ran = runner.invoke(app, ["run", str(study_file), "--trials", "4", "--storage", sqlite_url])
    assert ran.exit_code == 0, ran.output
    assert "trial 3 complete" in ran.output and "front of cli-study" in ran.output

    front = runner.invoke(app, ["front", "cli-study", "--storage", sqlite_url, "--format", "json"])
    assert front.exit_code == 0, front.output
    rows = json.loads(front.output)
    assert rows and all(r["equalized_odds_difference"] <= 0.2 for r in rows)
    assert {"trial", "accuracy", "latency_p95_ms", "params_C"} <= set(rows[0])

    table = runner.invoke(app, ["front", "cli-study", "--storage", sqlite_url])
    assert table.exit_code == 0 and "of 4 trials" in table.output

    csv = runner.invoke(app, ["front", "cli-study", "--storage", sqlite_url, "-f", "csv"])
    assert csv.output.splitlines()[0].startswith("trial,accuracy,latency_p95_ms")

    out = tmp_path / "r.html"
    report = runner.invoke(app, ["report", "cli-study", "-o", str(out), "--storage", sqlite_url])
    assert report.exit_code == 0 and out.stat().st_size > 1_000_000  # plotly.js is inlined

    listed = runner.invoke(app, ["studies", "--storage", sqlite_url])
    assert "cli-study" in listed.output and "maximize accuracy" in listed.output

    again = runner.invoke(app, ["run", str(study_file), "--trials", "1", "--storage", sqlite_url, "-q"])
    assert again.exit_code == 0
    assert len(json.loads(runner.invoke(app, ["front", "cli-study", "--storage", sqlite_url, "-f", "json"]).output)) >= 1


def test_cli_errors_are_clear(study_file, sqlite_url, tmp_path):
    missing = runner.invoke(app, ["front", "anything", "--storage", sqlite_url])
    assert missing.exit_code == 2 and "no SQLite database at" in " ".join(missing.output.split())
    assert not (tmp_path / "motune.db").exists(), "a read-only command must not create a database"
    assert runner.invoke(app, ["run", str(study_file), "--trials", "1", "--storage", sqlite_url, "-q"]).exit_code == 0
    cases = [
        (["run", str(study_file), "--trials", "0", "--storage", sqlite_url], "n_trials must be a positive integer"),
        (["run", str(study_file), "--storage", sqlite_url], "give --trials N or --timeout"),
        (["run", str(tmp_path / "missing.py"), "--trials", "1"], "not found"),
        (["run", str(study_file), "--trials", "1", "--study", "other", "--storage", sqlite_url], "defines no motune.Study named 'other'"),
        (["run", str(study_file), "--trials", "1", "--storage", "sqlite:////no/such/dir/x.db"], "cannot open storage"),
        (["front", "nothing", "--storage", sqlite_url], "no study named 'nothing'"),
        (["front", "nothing", "--storage", sqlite_url, "-f", "xml"], "--format must be"),
        (["report", "nothing", "--storage", sqlite_url], "no study named 'nothing'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    result = runner.invoke(app, ["run", str(empty), "--trials", "1"])
    assert result.exit_code == 2 and "defines no motune.Study" in result.output


def test_a_study_file_imports_modules_beside_it_and_all_failed_is_an_error(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    (tmp_path / "helpers_beside.py").write_text("def broken_train(params, task, ctx):\n    raise RuntimeError('no GPU here')\n")
    source = (HERE / "study_file.py").read_text().replace(
        "import motune as mt\n", "import motune as mt\nfrom helpers_beside import broken_train\n"
    ).replace("    train=train,\n", "    train=broken_train,\n")
    path = tmp_path / "failing_study.py"
    path.write_text(source)
    result = runner.invoke(app, ["run", str(path), "--trials", "2", "--storage", sqlite_url])
    assert result.exit_code == 2
    assert "no trial of 'cli-study' completed; the first error: RuntimeError: no GPU here" in " ".join(result.output.split())


def test_passwords_are_not_printed(study_file):
    result = runner.invoke(app, ["run", str(study_file), "--trials", "1",
                                 "--storage", "postgresql+psycopg2://me:hunter2@127.0.0.1:9/db"])
    assert result.exit_code == 2 and "hunter2" not in result.output and "me:***@" in result.output
