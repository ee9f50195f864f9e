"""One error family: every kind is a MotuneError and the builtin it is; user mistakes raise it."""

import optuna
import pytest

import motune as mt
from conftest import make_frame, make_study


@pytest.mark.parametrize("kind, builtin", [
    (mt.SpecError, ValueError), (mt.SpecTypeError, TypeError), (mt.UnknownMetricError, ValueError),
    (mt.TaskError, ValueError), (mt.StorageError, ValueError), (mt.StudyNotFoundError, KeyError),
    (mt.StudyFileError, ValueError), (mt.OutputError, OSError), (mt.MetricError, RuntimeError), (mt.CallbackError, RuntimeError),
])
def test_each_kind_is_a_motune_error_and_its_builtin(kind, builtin):
    assert issubclass(kind, mt.MotuneError) and issubclass(kind, builtin)
    assert str(kind("what was wrong")) == "what was wrong"  # a KeyError would quote it


def test_user_mistakes_raise_the_family(task, sqlite_url):
    mistakes = [
        lambda: mt.Task.from_frame(make_frame(), label="nope", sensitive="group"),
        lambda: make_study(task, sqlite_url, objectives=[mt.maximize("acuracy")]),
        lambda: make_study(task, sqlite_url, task="not a task"),
        lambda: make_study(task, sqlite_url, heartbeat_s=0),
        lambda: make_study(task, optuna.storages.InMemoryStorage()).optimize(n_trials=1, n_jobs=0),
        lambda: mt.load_study("nothing", storage="sqlite:////no/such/dir/x.db"),
        lambda: mt.metrics.measure(object(), task, ["accuracy"]),
        lambda: mt.pruning.SuccessiveHalving(eta=1),
    ]
    for mistake in mistakes:
        with pytest.raises(mt.MotuneError):
            mistake()
    make_study(task, sqlite_url).optimize(n_trials=1, show_progress=False)
    with pytest.raises(KeyError, match="no study named 'other'"):
        mt.load_study("other", storage=sqlite_url)
