"""Confirmation: the front re-measured on the test split from its kept models, against a direct measurement."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import motune as mt
from conftest import FAST_LATENCY, make_study
from motune.cli import app

runner = CliRunner()


# ---------------------------------------------------------------- confirmation

def test_confirmation_equals_a_direct_measurement_on_the_test_split(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    study = make_study(task, url, metrics=["latency_p95_ms", "roc_auc"], metric_options=FAST_LATENCY)
    result = study.optimize(n_trials=6, show_progress=False)
    confirmed = mt.confirm(result, n_boot=50, latency_min_count=40, latency_min_time_s=0.05)
    for r in (r for r in confirmed.records() if r.on_front):
        c = r.confirmation
        direct = mt.metrics.measure(confirmed.load_model(r.number), task,
                                    ["accuracy", "balanced_accuracy", "demographic_parity_difference",
                                     "equalized_odds_difference", "roc_auc"], split="test").values
        for name, value in direct.items():
            assert c["values"][name]["value"] == pytest.approx(value)
        for name in ("accuracy", "demographic_parity_difference", "equalized_odds_difference"):
            entry = c["values"][name]
            assert entry["low"] < entry["high"]  # a percentile interval need not hold the point estimate
        latency = c["latency"]["batch_1"]
        assert latency["count"] >= 40 and c["values"]["latency_p95_ms"]["low"] is not None
        assert c["fails_on_test"] == any(not v["kept"] for v in c["constraints"].values())
    assert len(confirmed.confirmation_table()) == sum(r.on_front for r in confirmed.records())


def test_confirmation_refuses_while_trials_run_and_checks_the_data(task, frame, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = make_study(task, url).optimize(n_trials=2, show_progress=False)
    ostudy = optuna.load_study(study_name="synthetic", storage=url)
    ostudy.ask()  # a trial that runs
    with pytest.raises(mt.SpecError, match="1 trial\\(s\\) of study 'synthetic' are running"):
        mt.confirm(result)
    other = mt.Task.from_frame(frame.iloc[:400], label="y", sensitive="group")
    with pytest.raises(mt.SpecError, match="is not the data"):
        mt.confirm(mt.load_study("synthetic", storage=url), task=other, allow_running=True)



def test_the_cli_confirms_a_study_from_its_recorded_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    study_file = tmp_path / "s.py"
    study_file.write_text((Path(__file__).parent / "study_file.py").read_text())
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert runner.invoke(app, ["run", str(study_file), "--trials", "4", "--storage", url, "-q"]).exit_code == 0
    out = runner.invoke(app, ["confirm", "cli-study", "--storage", url, "--n-boot", "20"])
    assert out.exit_code == 0, out.output
    assert "confirmed on the test split" in out.output and "->" in out.output
    assert all(r.confirmation for r in mt.load_study("cli-study", storage=url).records() if r.on_front)




def test_a_front_timed_on_a_gpu_is_re_timed_on_it_or_flagged_where_there_is_none():
    from motune.confirm import _device_for
    from motune.results import TrialRecord

    def record(device):
        return TrialRecord(number=4, state="COMPLETE", params={}, metrics={}, violations={}, feasible=True,
                           on_front=True, duration_s=1.0, error=None, attrs={"latency": {"device": device}})

    assert _device_for(record("cpu")) == (None, None)
    device, moved = _device_for(record("cuda:0"))  # this machine has no GPU: the CPU, with the reason
    assert device is None and "trial 4 was timed on cuda:0 during the sweep" in moved
