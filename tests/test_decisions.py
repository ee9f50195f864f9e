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
from conftest import FAST_LATENCY, make_frame, make_study
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
    index, reason = mt.rules.knee().choose(cands, [ACC, DP], [EOD])
    assert index == 1 and "farthest from the line" in reason
    assert mt.rules.knee().choose(cands[:1], [ACC, DP], [EOD]) == (0, "knee: the only candidate")


def test_lexicographic_with_a_tolerance_and_ties():
    cands = front((0.90, 0.30, 0.05), (0.89, 0.10, 0.05), (0.85, 0.01, 0.05), (0.89, 0.10, 0.05))
    assert mt.rules.lexicographic().choose(cands, [ACC, DP], [EOD])[0] == 0
    index, reason = mt.rules.lexicographic(tolerances={"accuracy": 0.02}).choose(cands, [ACC, DP], [EOD])
    assert index == 1 and "3 of 4 within 0.02 of the best accuracy" in reason  # a tie goes to the lower trial
    assert mt.rules.lexicographic(["demographic_parity_difference"]).choose(cands, [ACC, DP], [EOD])[0] == 2
    with pytest.raises(mt.SpecError, match="not objectives"):
        mt.rules.lexicographic(["latency_p95_ms"]).choose(cands, [ACC, DP], [EOD])


def test_weighted_and_best_within():
    cands = front((0.90, 0.30, 0.09), (0.88, 0.10, 0.02), (0.80, 0.02, 0.095))
    assert mt.rules.weighted({"accuracy": 1.0, "demographic_parity_difference": 0.0}).choose(cands, [ACC, DP], [EOD])[0] == 0
    assert mt.rules.weighted({"accuracy": 1.0, "demographic_parity_difference": 1.0}).choose(cands, [ACC, DP], [EOD])[0] == 1
    index, reason = mt.rules.best_within("accuracy", margin=0.02).choose(cands, [ACC, DP], [EOD])
    assert index == 1 and "1 of 3 candidates" in reason  # 0.09 and 0.095 are within 0.02 of the bound
    assert mt.rules.best_within("accuracy").choose(cands, [ACC, DP], [EOD])[0] == 0
    with pytest.raises(mt.SpecError, match="no candidate keeps"):
        mt.rules.best_within("accuracy", margin=0.5).choose(cands, [ACC, DP], [EOD])
    with pytest.raises(mt.SpecError, match="at least one > 0"):
        mt.rules.weighted({"accuracy": 0.0})


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
    assert mt.rules.weighted({"accuracy": 1.0}).choose(cands, [ACC, DP], [EOD])[0] == 1
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
