"""Callbacks: motune's plain-record hooks and Optuna callbacks side by side."""

import optuna
import pytest

import motune as mt
from conftest import make_study, train
from motune.pruning import Decision, PruningPolicy


class Recorder(mt.Callback):
    def __init__(self):
        self.events = []

    def on_study_start(self, info):
        self.events.append(("study_start", info))

    def on_trial_start(self, trial):
        self.events.append(("trial_start", trial))

    def on_report(self, report):
        self.events.append(("report", report))

    def on_trial_end(self, record):
        self.events.append(("trial_end", record))

    def on_study_end(self, result):
        self.events.append(("study_end", result))


class PruneTrialOne(PruningPolicy):
    name = "trial_one"

    def decide(self, ctx):
        return Decision(self.name, "picked") if ctx.step == 2 and ctx.metrics.get("marker") == 1 else None


def reporting_train(params, task, ctx):
    model = train(params, task, ctx)
    for step in (1, 2, 3):  # (step 3 is the last: a trial that reaches it completes)
        ctx.report(step, model, metrics={"marker": ctx.trial_number})
    return model


def test_motune_callbacks_get_plain_records_and_optuna_callbacks_frozen_trials(task):
    recorder, seen = Recorder(), []
    study = make_study(task, optuna.storages.InMemoryStorage(), train=reporting_train, pruning=PruneTrialOne())
    result = study.optimize(n_trials=3, show_progress=False,
                            callbacks=[recorder, lambda s, t: seen.append((type(s), t.number, t.state.name))])
    kinds = [k for k, _ in recorder.events]
    assert kinds[0] == "study_start" and kinds[-1] == "study_end"
    assert kinds[1:-1] == ["trial_start", *["report"] * 3, "trial_end", "trial_start", *["report"] * 2, "trial_end",
                           "trial_start", *["report"] * 3, "trial_end"]
    start = recorder.events[0][1]
    assert start.name == "synthetic" and start.objectives == ["maximize accuracy", "minimize demographic_parity_difference"]
    assert start.n_trials == 3 and start.stored_trials == 0
    trial_starts = [e for k, e in recorder.events if k == "trial_start"]
    assert [(t.number, t.seed) for t in trial_starts] == [(0, 0), (1, 1), (2, 2)]
    assert set(trial_starts[0].params) == {"C", "fit_intercept"}
    reports = [e for k, e in recorder.events if k == "report"]
    assert [(r.number, r.step) for r in reports] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
    assert reports[4].pruned == {"rule": "trial_one", "reason": "picked"} and reports[3].pruned is None
    assert "accuracy" in reports[0].values and reports[0].values["marker"] == 0
    ends = [e for k, e in recorder.events if k == "trial_end"]
    assert [r.state for r in ends] == ["COMPLETE", "PRUNED", "COMPLETE"] and isinstance(ends[0], mt.TrialRecord)
    assert ends[1].pruned["rule"] == "trial_one"
    assert recorder.events[-1][1] is result
    assert seen == [(optuna.Study, 0, "COMPLETE"), (optuna.Study, 1, "PRUNED"), (optuna.Study, 2, "COMPLETE")]


def test_a_callback_that_is_neither_kind_is_refused(task):
    with pytest.raises(mt.SpecTypeError, match="a callback must be"):
        make_study(task, optuna.storages.InMemoryStorage()).optimize(n_trials=1, callbacks=["not a callback"])
