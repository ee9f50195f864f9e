"""motune.run._optuna_compat: every private path has a public fallback, and the fallback runs."""

import optuna

import motune as mt
from conftest import make_study
from motune.run import _optuna_compat as compat


def _stored(result):
    return [(r.number, r.state, r.metrics, r.violations, r.params, {k: v for k, v in r.attrs.items()
             if k not in ("timing", "provenance", "latency", "worker")}) for r in result.records()]


def test_the_public_write_path_stores_what_the_private_one_does(task, tmp_path, monkeypatch):
    private = make_study(task, f"sqlite:///{tmp_path / 'a.db'}").optimize(n_trials=3, show_progress=False)
    monkeypatch.setattr(compat, "_PRIVATE_INSERT", [False])
    public = make_study(task, f"sqlite:///{tmp_path / 'b.db'}").optimize(n_trials=3, show_progress=False)
    assert _stored(public) == _stored(private)


def test_any_failure_of_the_private_insert_falls_back(task, sqlite_url, monkeypatch):
    def moved(*_a, **_k):
        raise AttributeError("TrialUserAttributeModel moved in a new Optuna")

    monkeypatch.setattr(compat, "insert_trial_attrs", moved)
    result = make_study(task, sqlite_url).optimize(n_trials=2, show_progress=False)
    assert [r.state for r in result.records()] == ["COMPLETE", "COMPLETE"]
    assert all(r.feasible is not None and "accuracy" in r.metrics and len(r.violations) == 2 for r in result.records())


def test_trial_id_falls_back_to_the_storage_lookup(sqlite_url):
    study = optuna.create_study(storage=sqlite_url, study_name="ids")
    trial = study.ask()

    class NoPrivateId:
        storage = trial.storage
        number = trial.number

        def __init__(self):
            self.study = study

    assert compat.trial_id(NoPrivateId()) == compat.trial_id(trial)


def test_request_stop_falls_back_to_study_stop():
    study = optuna.create_study()

    def objective(trial):
        del study._stop_flag  # an Optuna without the private flag
        compat.request_stop(study)  # the public Study.stop() stops the loop
        return 0.0

    study.optimize(objective, n_trials=5)
    assert len(study.trials) == 1


def test_request_stop_works_outside_the_optimize_loop():
    study = optuna.create_study()
    compat.request_stop(study)  # no RuntimeError from Study.stop()
    study.optimize(lambda t: 0.0, n_trials=1)  # optimize resets the flag
    assert len(study.trials) == 1


def test_the_retry_drops_the_dead_trials_measurements(sqlite_url):
    storage = mt.run.open_storage(sqlite_url)
    study = optuna.create_study(storage=storage, study_name="retry", directions=["maximize"])
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    for key, value in {"constraints:a <= 1": 0.5, "constraints": [0.5], "motune:report:0:1": {"a": 1.0},
                       "fail_reason": "worker died"}.items():
        compat.set_system_attr(trial, key, value)
    for key, value in {"metrics": {"a": 1.0}, "error": "x", "worker": {"pid": 1}, "user:note": "kept",
                       "params": {"x": 0.5, "derived": 1}}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    compat.RetryStaleTrial()(study, study.trials[0])
    retry = study.trials[1]
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == study.trials[0].params
    assert retry.system_attrs == {"failed_trial": 0, "retry_history": [0]}
    assert retry.user_attrs == {"user:note": "kept", "params": {"x": 0.5, "derived": 1}}


def test_frozen_system_attrs_without_the_private_cache(sqlite_url):
    study = optuna.create_study(storage=sqlite_url, study_name="attrs")
    trial = study.ask()
    compat.set_system_attr(trial, "k", 1)
    object.__setattr__(trial, "_cached_frozen_trial", None)  # the private cache is gone
    assert compat.frozen_system_attrs(trial)["k"] == 1
