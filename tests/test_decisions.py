"""From front to decision, with real parts: models saved to a real artifact store on disk and loaded back
(each kind), the keep policy, confirmation against a direct measurement, the selection rules on
hand-built fronts, decisions through storage and the CLI, and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

import motune as mt
from conftest import FAST_LATENCY, make_study
from motune.cli import app
from motune.models import persist
from motune.selection.rules import Candidate

runner = CliRunner()


# ---------------------------------------------------------------- save / load per model kind

def _round_trip(model, X, tmp_path):
    path = tmp_path / "model.tar"
    manifest = persist.save_archive(model, path)
    loaded = persist.load_archive(path, sha256=manifest["sha256"])
    assert np.array_equal(np.asarray(loaded.predict(X)), np.asarray(model.predict(X)))
    again = persist.save_archive(model, tmp_path / "again.tar")
    return manifest, again


def test_a_scikit_learn_pipeline_round_trips(task, tmp_path):
    from conftest import train

    model = train({"C": 0.5, "fit_intercept": True}, task, None)
    manifest, again = _round_trip(model, task.X_test, tmp_path)
    assert manifest["kind"] == "pickle" and manifest["sha256"] == again["sha256"]  # the same model, the same bytes


def test_a_torch_classifier_round_trips_with_safetensors_weights(task, tmp_path):
    torch = pytest.importorskip("torch")
    from motune.models.torch import TorchClassifier

    data = task.numeric()
    module = torch.nn.Sequential(torch.nn.Linear(data.X_train.shape[1], 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    manifest, _ = _round_trip(TorchClassifier.for_task(module, task), task.X_test, tmp_path)
    assert manifest["kind"] == "torch" and "weights.safetensors" in manifest["files"]


def _scaled_module(n):
    import torch

    class Scaled(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.linear = torch.nn.Linear(n, 2)
            self.register_buffer("scale", torch.full((n,), 3.0), persistent=False)  # not in the state dict

        def forward(self, x):
            return self.linear(x * self.scale)

    globals()["Scaled"] = Scaled  # picklable by name, as a module-level class
    Scaled.__qualname__ = "Scaled"
    return Scaled(n)


def test_non_persistent_buffers_survive_the_round_trip(task, tmp_path):
    torch = pytest.importorskip("torch")
    from motune.models.torch import TorchClassifier

    model = TorchClassifier.for_task(_scaled_module(task.numeric().X_train.shape[1]), task)
    path = tmp_path / "m.tar"
    loaded = persist.load_archive(path, sha256=persist.save_archive(model, path)["sha256"])
    assert torch.equal(loaded.module.scale, torch.full_like(loaded.module.scale, 3.0))
    assert np.array_equal(loaded.predict_proba(task.X_test), model.predict_proba(task.X_test))


def test_a_quantized_torch_classifier_round_trips_as_a_pickle(task, tmp_path):
    torch = pytest.importorskip("torch")
    from motune.models.compress import quantize_int8
    from motune.models.torch import TorchClassifier

    data = task.numeric()
    module = torch.nn.Sequential(torch.nn.Linear(data.X_train.shape[1], 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    manifest, _ = _round_trip(TorchClassifier.for_task(quantize_int8(module), task), task.X_test, tmp_path)
    assert manifest["kind"] == "pickle"


def test_a_text_classifier_round_trips_with_its_tokenizer(tmp_path):
    pytest.importorskip("transformers")
    from text_fixtures import build_tiny_bert, small_text_task

    from motune.models.transformers import TextClassifier, load_classifier

    text = small_text_task(n_texts=60, probe_instances=10)
    folder = build_tiny_bert(tmp_path / "bert", text.texts("train"))
    model, tokenizer = load_classifier(folder, seed=0)
    manifest, _ = _round_trip(TextClassifier(model, tokenizer, max_length=24), text.X_valid, tmp_path)
    assert manifest["kind"] == "transformers"
    loaded = persist.load_archive(tmp_path / "model.tar", sha256=manifest["sha256"])
    assert loaded.max_length == 24


def test_a_changed_or_unreadable_archive_is_refused(task, tmp_path):
    from conftest import train

    path = tmp_path / "model.tar"
    manifest = persist.save_archive(train({"C": 1.0, "fit_intercept": True}, task, None), path)
    with open(path, "r+b") as f:
        f.seek(600)
        f.write(b"x")
    with pytest.raises(mt.ArtifactError, match="corrupt or was changed"):
        persist.load_archive(path, sha256=manifest["sha256"], what="the model of trial 3")
    path.write_bytes(b"not a tar")
    with pytest.raises(mt.ArtifactError, match="cannot be read"):
        persist.load_archive(path, sha256=persist.sha256_of(path))


# ---------------------------------------------------------------- the keep policy

def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.mark.parametrize("policy", ["front", "feasible", "all", "none"])
def test_the_keep_policy_decides_which_models_stay_in_the_store(task, tmp_path, policy):
    url = f"sqlite:///{tmp_path / 'keep.db'}"
    result = make_study(task, url, keep_models=policy,
                        constraints=[mt.at_most("equalized_odds_difference", 0.12)]).optimize(n_trials=8,
                                                                                            show_progress=False)
    store = tmp_path / "keep-artifacts"
    kept = {r.number for r in result.records() if r.model and not r.model_removed}
    in_store = {r.model["artifact_id"] for r in result.records() if r.model and not r.model_removed}
    assert in_store == _files(store)
    feasible = {r.number for r in result.records() if r.feasible}
    if policy == "front":
        assert kept == {r.number for r in result.records() if r.on_front}
        removed = {r.number for r in result.records() if r.model_removed}
        assert all(result.record(n).model_removed["reason"] == "no longer on the front" for n in removed)
    elif policy == "feasible":
        assert kept == feasible
    elif policy == "all":
        assert kept == set(range(8))
    else:
        assert kept == set() and not store.exists()
    if kept:
        model = mt.load_study("synthetic", storage=url).load_model(min(kept))
        assert len(model.predict(task.X_test)) == len(task.X_test)


def test_a_sqlite_storage_object_keeps_its_models_beside_its_file(task, tmp_path, monkeypatch):
    monkeypatch.delenv("MOTUNE_ARTIFACTS", raising=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'object.db'}")
    result = make_study(task, storage, keep_models="all").optimize(n_trials=1, show_progress=False)
    assert _files(tmp_path / "object-artifacts") == {result.record(0).model["artifact_id"]}
    assert not (tmp_path / "elsewhere" / "motune-artifacts").exists()  # not in the working directory


def test_a_missing_or_removed_model_is_a_clear_error_naming_the_trial(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'gone.db'}"
    result = make_study(task, url, keep_models="all").optimize(n_trials=3, show_progress=False)
    artifact = result.record(1).model["artifact_id"]
    (tmp_path / "gone-artifacts" / artifact).unlink()
    with pytest.raises(mt.ArtifactError, match="trial 1 of study 'synthetic'.*cannot be read"):
        result.load_model(1)
    front = make_study(task, f"sqlite:///{tmp_path / 'f.db'}").optimize(n_trials=6, show_progress=False)
    removed = [r.number for r in front.records() if r.model_removed]
    never = [r.number for r in front.records() if r.model is None]
    assert removed and never  # this seed gives both (checked)
    with pytest.raises(mt.ArtifactError, match=f"trial {removed[0]} .*was removed: no longer on the front"):
        front.load_model(removed[0])
    with pytest.raises(mt.ArtifactError, match="was not kept"):
        front.load_model(never[0])
    exported = runner.invoke(app, ["export", "synthetic", "--storage", f"sqlite:///{tmp_path / 'gone.db'}", "-o",
                                   str(tmp_path / "out")])
    assert exported.exit_code == 2 and "no decision yet" in exported.output


def test_the_keep_policy_leaves_a_running_trials_model_alone(task, tmp_path):
    """A model written by a trial still running in another worker is not 'no longer on the front'."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    result = make_study(task, url).optimize(n_trials=3, show_progress=False)
    ostudy = optuna.load_study(study_name="synthetic", storage=url)
    running = ostudy.ask()
    running.storage.set_trial_system_attr(running._trial_id, "motune:model", {"artifact_id": "x", "sha256": "0",
                                          "size_bytes": 1, "kind": "pickle", "filename": "m.tar"})
    from motune.run import artifacts

    again = mt.load_study("synthetic", storage=url)
    assert running.number not in artifacts.apply_keep_policy(again, again.artifact_store, "front")
    assert running.number not in {r.number for r in again.refresh().records() if r.model_removed}
    assert result  # the three trials before it ran as usual


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


def _tar(path, files, *, mode="w"):
    """An archive with the given ``{name: bytes}`` members (the way someone other than motune would write it)."""
    import io
    import tarfile

    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return persist.sha256_of(path)


def test_every_hostile_or_malformed_archive_with_a_matching_hash_is_an_artifact_error(task, tmp_path):
    import gzip

    what = "the model of trial 7 of study 'x'"
    manifest = json.dumps({"kind": "pickle"}).encode()
    bomb = tmp_path / "bomb.tar.gz"
    with gzip.open(bomb, "wb") as f:  # 300 MiB of zeros in a few hundred KB
        import tarfile

        with tarfile.open(fileobj=f, mode="w") as tar:
            info = tarfile.TarInfo("model.joblib")
            info.size = 300 * 2**20

            class Zeros:
                left = info.size

                def read(self, n):
                    n = min(n, self.left)
                    self.left -= n
                    return b"\0" * n

            tar.addfile(info, Zeros())
    assert bomb.stat().st_size < 1_000_000
    cases = {
        "gzip-compressed": (bomb, persist.sha256_of(bomb)),
        "has no manifest.json": (tmp_path / "a.tar", _tar(tmp_path / "a.tar", {"model.joblib": b"x"})),
        "cannot be read (JSONDecodeError": (tmp_path / "b.tar", _tar(tmp_path / "b.tar", {"manifest.json": b"{"})),
        "is not a JSON object": (tmp_path / "c.tar", _tar(tmp_path / "c.tar", {"manifest.json": b"[1]"})),
        "unknown model kind 'other'": (tmp_path / "d.tar", _tar(tmp_path / "d.tar",
                                                               {"manifest.json": b'{"kind": "other"}'})),
        "malformed: its pickle model cannot be loaded": (tmp_path / "e.tar", _tar(tmp_path / "e.tar",
                                                                                 {"manifest.json": manifest})),
        "malformed: its torch model cannot be loaded": (tmp_path / "f.tar", _tar(tmp_path / "f.tar", {
            "manifest.json": b'{"kind": "torch"}', "classifier.joblib": b"junk"})),
    }
    for says, (path, sha) in cases.items():
        with pytest.raises(mt.ArtifactError) as info:
            persist.load_archive(path, sha256=sha, what=what)
        assert what in str(info.value) and says.split(" (")[0] in str(info.value), (says, str(info.value))
    many = tmp_path / "many.tar"
    sha = _tar(many, {"manifest.json": manifest, **{f"f{i}": b"" for i in range(30)}})
    with pytest.raises(mt.ArtifactError, match="31 members, over the limit of 10"):
        persist.load_archive(many, sha256=sha, what=what, max_members=10)
    big = tmp_path / "big.tar"
    sha = _tar(big, {"manifest.json": manifest, "model.joblib": b"x" * 50_000})
    with pytest.raises(mt.ArtifactError, match="over the 20000-byte limit"):
        persist.load_archive(big, sha256=sha, what=what, max_size_bytes=20_000)


def test_an_unreachable_ray_address_fails_within_its_timeout(task, tmp_path):
    import socket
    import time

    from motune.run.cluster import reachable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    began = time.monotonic()
    with pytest.raises(mt.SpecError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port} within 1.5 s"):
        reachable(f"127.0.0.1:{port}", 1.5)
    assert time.monotonic() - began < 6
    with pytest.raises(mt.SpecError, match="give 'auto', 'local', HOST:PORT"):
        reachable("nowhere", 1)
    study = tmp_path / "ray_study.py"
    study.write_text("import sys\nsys.path.insert(0, %r)\nfrom conftest import make_study, make_frame\n"
                     "import motune as mt\n"
                     "task = mt.Task.from_frame(make_frame(), label='y', sensitive='group', seed=0, name='s')\n"
                     "study = make_study(task, 'sqlite:///%s')\n" % (str(Path(__file__).parent), tmp_path / "r.db"))
    began = time.monotonic()
    out = _motune("run", str(study), "--trials", "1", "--ray", f"127.0.0.1:{port}", "--ray-timeout", "2")
    assert out.returncode == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port} within 2 s" in out.stderr
    assert time.monotonic() - began < 60
