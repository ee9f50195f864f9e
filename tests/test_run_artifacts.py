"""The keep policy and the artifact store: which models stay, where, and what a missing one says."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

import motune as mt
from conftest import make_study
from motune.cli import app

runner = CliRunner()


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


