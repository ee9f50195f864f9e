"""Choosing and deciding: the rules on hand-built fronts, choices that see intervals and flags, decisions
through storage and the CLI (as a subprocess), which decision is current, and bad input refused."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

import motune as mt
from conftest import FAST_LATENCY, make_study
from motune.cli import app
from motune.selection.rules import Candidate

runner = CliRunner()


# ---------------------------------------------------------------- rules on hand-built fronts

ACC, DP = mt.maximize("accuracy"), mt.minimize("demographic_parity_difference")
EOD = mt.at_most("equalized_odds_difference", 0.10)


def front(*rows):
    return [Candidate(i, {"accuracy": a, "demographic_parity_difference": d, "equalized_odds_difference": e})
            for i, (a, d, e) in enumerate(rows)]


def test_knee_picks_the_corner_of_a_convex_front():
    cands = front((0.90, 0.30, 0.05), (0.88, 0.10, 0.05), (0.87, 0.08, 0.05), (0.80, 0.02, 0.05))
    index, reason, deciding = mt.rules.knee().choose(cands, [ACC, DP], [EOD])
    assert index == 1 and "farthest from the line" in reason
    assert deciding == ("accuracy", "demographic_parity_difference")  # every objective decides a knee
    assert mt.rules.knee().choose(cands[:1], [ACC, DP], [EOD])[:2] == (0, "knee: the only candidate")


def test_lexicographic_with_a_tolerance_and_ties():
    cands = front((0.90, 0.30, 0.05), (0.89, 0.10, 0.05), (0.85, 0.01, 0.05), (0.89, 0.10, 0.05))
    assert mt.rules.lexicographic().choose(cands, [ACC, DP], [EOD])[0] == 0
    index, reason, deciding = mt.rules.lexicographic(tolerances={"accuracy": 0.02}).choose(cands, [ACC, DP], [EOD])
    assert index == 1 and "3 of 4 within 0.02 of the best accuracy" in reason  # a tie goes to the lower trial
    assert deciding == ("accuracy", "demographic_parity_difference")
    assert mt.rules.lexicographic().choose(cands, [ACC, DP], [EOD]).deciding == ("accuracy",)  # one was best
    assert mt.rules.lexicographic(["demographic_parity_difference"]).choose(cands, [ACC, DP], [EOD])[0] == 2
    with pytest.raises(mt.SpecError, match="not objectives"):
        mt.rules.lexicographic(["latency_p95_ms"]).choose(cands, [ACC, DP], [EOD])


def test_weighted_and_best_within():
    cands = front((0.90, 0.30, 0.09), (0.88, 0.10, 0.02), (0.80, 0.02, 0.095))
    assert mt.rules.weighted({"accuracy": 1.0, "demographic_parity_difference": 0.01}).choose(cands, [ACC, DP], [EOD])[0] == 0
    assert mt.rules.weighted({"accuracy": 1.0, "demographic_parity_difference": 1.0}).choose(cands, [ACC, DP], [EOD])[0] == 1
    index, reason, deciding = mt.rules.best_within("accuracy", margin=0.02).choose(cands, [ACC, DP], [EOD])
    assert deciding == ("accuracy",)
    assert index == 1 and "1 of 3 candidates" in reason  # 0.09 and 0.095 are within 0.02 of the bound
    assert mt.rules.best_within("accuracy").choose(cands, [ACC, DP], [EOD])[0] == 0
    with pytest.raises(mt.SpecError, match="no candidate keeps"):
        mt.rules.best_within("accuracy", margin=0.5).choose(cands, [ACC, DP], [EOD])
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(mt.SpecError, match="finite numbers > 0"):
            mt.rules.weighted({"accuracy": bad, "demographic_parity_difference": 1.0})
    with pytest.raises(mt.SpecError, match="no weight for \\['demographic_parity_difference'\\]"):
        mt.rules.weighted({"accuracy": 1.0}).choose(cands, [ACC, DP], [EOD])
    assert mt.rules.weighted({"accuracy": 1.0}, default=1.0).choose(cands, [ACC, DP], [EOD])[0] == 1
    with pytest.raises(mt.SpecError, match="direction must be 'maximize' or 'minimize', got 'up'"):
        mt.rules.best_within("balanced_accuracy", direction="up")


def test_selecting_from_a_study_without_a_feasible_trial_is_a_clear_error(task):
    impossible = make_study(task, optuna.storages.InMemoryStorage(), constraints=[mt.at_least("accuracy", 0.999)])
    result = impossible.optimize(n_trials=3, show_progress=False)
    with pytest.raises(mt.SelectionError, match="no feasible trial"):
        mt.select(result, mt.rules.knee())


def test_lexicographic_tolerances_are_inclusive_and_the_rule_is_not_changed_by_use():
    cands = front((0.90, 0.30, 0.05), (0.88, 0.10, 0.05))
    rule = mt.rules.lexicographic(["accuracy"], tolerances={"accuracy": 0.02})
    assert rule.choose(cands, [ACC, DP], [EOD])[0] == 1  # 0.88 is within 0.02 of 0.90
    assert rule.params() == {"order": ["accuracy"], "tolerances": {"accuracy": 0.02}}


def test_weighted_ties_never_pick_a_dominated_candidate_and_best_within_checks_its_margins():
    cands = front((0.90, 0.30, 0.05), (0.90, 0.10, 0.05))
    assert mt.rules.weighted({"accuracy": 1.0}, default=1e-9).choose(cands, [ACC, DP], [EOD])[0] == 1
    with pytest.raises(mt.SpecError, match="margins for \\['equalised_odds'\\], which no constraint bounds"):
        mt.rules.best_within("accuracy", margin={"equalised_odds": 0.01}).choose(cands, [ACC, DP], [EOD])
    missing = [Candidate(0, {"accuracy": 0.9, "demographic_parity_difference": 0.1})]
    with pytest.raises(mt.SpecError, match="not every candidate has a value of \\['equalized_odds_difference'\\]"):
        mt.rules.best_within("accuracy").choose(missing, [ACC, DP], [EOD])


def test_two_people_deciding_at_once_both_keep_their_decision(task, tmp_path):
    import threading

    url = f"sqlite:///{tmp_path / 'two.db'}"
    make_study(task, url).optimize(n_trials=4, show_progress=False)
    written = []

    def decide(who):
        result = mt.load_study("synthetic", storage=url)
        written.append(mt.decide(mt.select(result, mt.rules.knee()), rationale="mine", decided_by=who))

    threads = [threading.Thread(target=decide, args=(f"person {i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = mt.load_study("synthetic", storage=url).decisions()
    assert sorted(d.decided_by for d in stored) == [f"person {i}" for i in range(4)]
    assert [d.number for d in stored] == [1, 2, 3, 4]
    assert {d.decided_by: d.id for d in written} == {d.decided_by: d.id for d in stored}


# ---------------------------------------------------------------- decisions, the CLI, export

def test_a_decision_round_trips_through_storage_the_cli_and_export(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    result = make_study(task, url, metrics=["roc_auc"]).optimize(n_trials=6, show_progress=False)
    confirmed = mt.confirm(result, n_boot=30)
    choice = mt.select(confirmed, mt.rules.knee())
    assert choice.values_used == "test"
    decision = mt.decide(choice, rationale="the best balance", decided_by="a test")
    assert decision.number == 1 and decision.trial == choice.trial and decision.artifact["sha256"]
    assert decision.test["accuracy"]["value"] == confirmed.record(choice.trial).confirmation["values"]["accuracy"]["value"]
    stored = mt.load_study("synthetic", storage=url).decisions()
    assert [d.to_dict() for d in stored] == [decision.to_dict()]
    predictions = stored[0].load_model().predict(task.X_test)
    assert len(predictions) == len(task.X_test)

    ran = runner.invoke(app, ["decide", "synthetic", "--storage", url, "--rule", "lexicographic", "--tolerance",
                              "accuracy=0.05", "--why", "accuracy first", "--by", "the CLI"])
    assert ran.exit_code == 0, ran.output
    listed = runner.invoke(app, ["decisions", "synthetic", "--storage", url, "--format", "json"])
    records = json.loads(listed.output)
    assert [d["number"] for d in records] == [1, 2] and records[1]["decided_by"] == "the CLI"
    assert records[1]["rule_params"]["tolerances"] == {"accuracy": 0.05}
    exported = runner.invoke(app, ["export", "synthetic", "--storage", url, "--decision", "1", "-o", "chosen"])
    assert exported.exit_code == 0, exported.output
    assert {p.name for p in (tmp_path / "chosen").iterdir()} == {"model.tar", "decision.json", "MODEL_CARD.md"}
    model = mt.load_exported(tmp_path / "chosen")
    assert np.array_equal(model.predict(task.X_test), predictions)
    card = (tmp_path / "chosen" / "MODEL_CARD.md").read_text()
    assert "the best balance" in card and "| accuracy |" in card and decision.artifact["sha256"] in card
    bad = [(["export", "synthetic", "--storage", url, "--decision", "9", "-o", "x"], "no decision 9"),
           (["export", "synthetic", "--storage", url, "-o", "chosen"], "not an empty folder"),
           (["decide", "synthetic", "--storage", url, "--rule", "best", "--why", "w", "--by", "b"], "--rule must be"),
           (["decide", "synthetic", "--storage", url, "--rule", "weighted", "--weight", "accuracy", "--why", "w",
             "--by", "b"], "METRIC=NUMBER")]
    for args, message in bad:
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and message in out.output, (args, out.output)


# ---------------------------------------------------------------- decisions that noise and bad input cannot flip

def _motune(*args, cwd=None):
    """The CLI as a user runs it: a subprocess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "motune.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_bad_decide_input_is_a_one_line_error_and_records_nothing(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    make_study(task, url).optimize(n_trials=4, show_progress=False)
    base = ["decide", "synthetic", "--storage", url, "--why", "w", "--by", "b"]
    cases = [
        (["--rule", "best-within", "--metric", "balanced_accuracy", "--direction", "up"],
         "direction must be 'maximize' or 'minimize', got 'up'"),
        (["--rule", "weighted", "--weight", "accuracy=inf", "--weight", "demographic_parity_difference=1"],
         "the number must be finite"),
        (["--rule", "weighted", "--weight", "accuracy=nan", "--weight", "demographic_parity_difference=1"],
         "the number must be finite"),
        (["--rule", "weighted", "--weight", "accuracy=1", "--weight", "accuracy=2"], "names 'accuracy' twice"),
        (["--rule", "weighted", "--weight", "accuracy=1"], "no weight for ['demographic_parity_difference']"),
        (["--rule", "weighted", "--weight", "accuracy=0", "--weight", "demographic_parity_difference=1"],
         "finite numbers > 0"),
        (["--rule", "knee", "--weight", "accuracy=1"], "--rule knee does not take --weight"),
        (["--rule", "lexicographic", "--margin", "0.1"], "does not take --margin"),
        (["--rule", "best-within", "--metric", "accuracy", "--kind", "linear"], "does not take --kind"),
    ]
    for args, says in cases:
        out = _motune(*base, *args)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2 and len(lines) == 1 and says in lines[0], (args, out.stderr)
    assert mt.load_study("synthetic", storage=url).decisions() == []
    ok = _motune(*base, "--rule", "weighted", "--weight", "accuracy=2", "--default-weight", "1")
    assert ok.returncode == 0, ok.stderr
    decision = mt.load_study("synthetic", storage=url).decision
    assert decision.rule_params == {"weights": {"accuracy": 2.0}, "kind": "chebyshev", "default": 1.0}
    assert "accuracy 2, demographic_parity_difference 1" in decision.reason


def test_an_earlier_decision_is_made_current_and_every_reader_says_which(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'current.db'}"
    result = make_study(task, url).optimize(n_trials=6, show_progress=False)
    for rule in (mt.rules.knee(), mt.rules.lexicographic(), mt.rules.lexicographic(["demographic_parity_difference"])):
        mt.decide(mt.select(result, rule), rationale=f"by {rule.name}", decided_by="a test")
    assert [d.current for d in mt.load_study("synthetic", storage=url).decisions()] == [False, False, True]
    refused = _motune("decisions", "synthetic", "--storage", url, "--current", "1")
    assert refused.returncode == 2 and "--current N needs --why TEXT and --by NAME" in refused.stderr
    missing = _motune("decisions", "synthetic", "--storage", url, "--current", "7", "--why", "w", "--by", "b")
    assert missing.returncode == 2 and "no decision 7" in missing.stderr
    made = _motune("decisions", "synthetic", "--storage", url, "--current", "1", "--why", "the knee after all",
                   "--by", "the review board")
    assert made.returncode == 0 and "decision 1 of synthetic" in made.stderr, made.stderr
    listed = json.loads(_motune("decisions", "synthetic", "--storage", url, "--format", "json").stdout)
    assert [d["current"] for d in listed] == [True, False, False] and len(listed) == 3  # the history is kept
    assert listed[0]["made_current"]["by"] == "the review board" and listed[0]["made_current"]["why"] == \
        "the knee after all"
    loaded = mt.load_study("synthetic", storage=url)
    assert loaded.decision.number == 1 and loaded.pick_decision().number == 1
    table = _motune("decisions", "synthetic", "--storage", url)
    assert "decision 1 is current (the review board: the knee after all)" in table.stdout.replace("\n", " ")
    exported = _motune("export", "synthetic", "--storage", url, "-o", str(tmp_path / "out"))
    assert exported.returncode == 0 and "exported decision 1 of synthetic" in exported.stderr
    assert "the current one" in exported.stderr
    assert json.loads((tmp_path / "out" / "decision.json").read_text())["number"] == 1
    third = _motune("export", "synthetic", "--storage", url, "--decision", "3", "-o", str(tmp_path / "old"))
    assert "not the current one" in third.stderr
    # a new decision becomes current again
    mt.decide(mt.select(loaded, mt.rules.knee()), rationale="again", decided_by="a test")
    assert mt.load_study("synthetic", storage=url).decision.number == 4


def test_a_choice_says_which_candidates_its_intervals_cannot_tell_apart(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'ties.db'}"
    result = make_study(task, url).optimize(n_trials=8, show_progress=False)
    confirmed = mt.confirm(result, n_boot=30)
    choice = mt.select(confirmed, mt.rules.knee())
    assert choice.deciding == ("accuracy", "demographic_parity_difference") and not choice.not_compared
    chosen = confirmed.record(choice.trial).confirmation["values"]
    for alt in choice.alternatives:
        if alt["left_out"]:
            continue
        theirs = confirmed.record(alt["trial"]).confirmation["values"]
        overlap = all(theirs[m]["low"] <= chosen[m]["high"] and chosen[m]["low"] <= theirs[m]["high"]
                      for m in choice.deciding)
        assert alt["indistinguishable"] == overlap and (alt["trial"] in choice.indistinguishable) == overlap
    decision = mt.decide(choice, rationale="the knee", decided_by="a test")
    assert decision.indistinguishable == choice.indistinguishable and decision.deciding == list(choice.deciding)
    # on validation values nothing but latency has an interval: the decision says what it could not compare
    plain = mt.select(make_study(task, optuna.storages.InMemoryStorage()).optimize(n_trials=4, show_progress=False),
                      mt.rules.knee())
    assert plain.not_compared == ["accuracy", "demographic_parity_difference"] and not plain.indistinguishable


def test_a_choice_a_noisy_latency_decided_is_refused_unless_accepted(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'noisy.db'}"
    noisy = {"latency": {**FAST_LATENCY["latency"], "max_ci_width": 1e-9}}  # every run's median interval too wide
    result = make_study(task, url, objectives=[mt.maximize("accuracy"), mt.minimize("latency_p95_ms")],
                        metric_options=noisy).optimize(n_trials=4, show_progress=False)
    choice = mt.select(result, mt.rules.lexicographic(["latency_p95_ms"]))
    assert choice.flagged and all("latency_p95_ms" in f for f in choice.flagged.values())
    with pytest.raises(mt.SelectionError, match="flagged as not to be trusted.*--accept-noisy"):
        mt.decide(choice, rationale="fastest", decided_by="a test")
    assert result.refresh().decisions() == []
    cli = _motune("decide", "synthetic", "--storage", url, "--rule", "lexicographic", "--order", "latency_p95_ms",
                  "--why", "fastest", "--by", "a test")
    assert cli.returncode == 2 and "--accept-noisy" in cli.stderr
    accepted = _motune("decide", "synthetic", "--storage", url, "--rule", "lexicographic", "--order",
                       "latency_p95_ms", "--why", "fastest", "--by", "a test", "--accept-noisy")
    assert accepted.returncode == 0 and "accepted although flagged" in accepted.stderr, accepted.stderr
    assert "NOISY" in accepted.stdout and "load" in accepted.stdout  # the chosen values with the run's flag and load
    decision = mt.load_study("synthetic", storage=url).decision
    assert decision.accepted_noisy and decision.flagged
    facts = decision.latency["latency_p95_ms"]
    assert facts["noisy"] and facts["low"] <= facts["value"] <= facts["high"] and facts["load_average"]
    # accuracy alone decides: the flagged latency did not decide, nothing to refuse
    assert not mt.select(result, mt.rules.lexicographic(["accuracy"])).flagged
    # the report and the model card show the latency the decision used: interval, flag, load
    page = mt.viz.render_report(mt.load_study("synthetic", storage=url))
    assert "Decided on values flagged as noisy" in page and "class='latency-used'" in page and "flagged: " in page
    from motune.export import model_card

    card = model_card(mt.load_study("synthetic", storage=url), decision)
    assert "## Latency (validation values)" in card and "flagged noisy" in card and "the study's current decision" in card


