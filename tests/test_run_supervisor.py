"""The supervisor's decisions, one worker end at a time, on a real Optuna storage. The launcher here is a script
of what workers would say (the process pool's and Ray's launchers are tested with real processes and a real Ray
in test_run_pool.py and test_run_cluster.py); what is tested is what the supervisor does with it."""

import optuna
import pytest
from conftest import make_study

import motune as mt
from motune import _schema
from motune.errors import SpecError
from motune.run.supervisor import Ended, Event, Supervisor, Tickets
from motune.run.trial import BROKEN_DEVICE_EXIT

HOST = "node-a"


class Script:
    """A launcher that plays ``rounds`` of events (one list per call), then has no worker left."""

    where = "in a script"
    prefix = None
    shows_states = True

    def __init__(self, rounds, n_trials, placeable=True):
        self.rounds = list(rounds)
        self.tickets = Tickets(n_trials)
        self.started, self.stops, self.placeable = [], [], placeable

    def label(self, index):
        return f"w{index}"

    def start(self, indices, grant):
        self.started += list(indices)
        return [] if self.placeable else list(indices)

    def events(self):
        return self.rounds.pop(0) if self.rounds else []

    def busy(self):
        return bool(self.rounds)

    def stop(self, signal_name):
        self.stops.append(signal_name)

    def close(self, stopped_by):
        return []


@pytest.fixture
def setting(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'sup.db'}"
    study = make_study(task, url, pruning=None)
    ostudy = mt.run.open_study(study)
    return study, ostudy


def running_trial(ostudy, pid):
    trial = ostudy.ask()
    trial.suggest_float("C", 1e-3, 10.0, log=True)
    trial.set_user_attr(_schema.WORKER_ATTR, {"pid": pid, "host": HOST})
    return trial.number


def run(setting, rounds, n_trials=4, **kw):
    study, ostudy = setting
    launcher = Script(rounds, n_trials, **kw.pop("launcher", {}))
    supervisor = Supervisor(study, ostudy, launcher, [0, 1], n_trials, None, show_progress=False, **kw)
    return supervisor, launcher, supervisor.run(lambda result: result)


def test_a_worker_that_died_has_its_trial_failed_retried_with_its_own_ticket_and_is_replaced(setting):
    number = running_trial(setting[1], pid=111)
    died = Ended(0, 111, HOST, -9, None, "with exit code -9", "its process ended with exit code -9")
    supervisor, launcher, (result, interrupted, exit_code) = run(setting, [[Event("ended", 0, died)]], n_trials=4)
    trials = {t.number: t for t in setting[1].get_trials(deepcopy=False)}
    assert trials[number].state == optuna.trial.TrialState.FAIL
    assert trials[number].system_attrs[_schema.FAIL_REASON_ATTR] == "worker died (its process ended with exit code -9)"
    assert [t for t in trials.values() if t.system_attrs.get("failed_trial") == number]  # retried
    assert launcher.tickets.remaining() == 5  # the retry brought its own ticket
    assert launcher.started == [0, 1, 0] and supervisor.states[0] == "starting"  # a new w0
    assert interrupted is None and exit_code is None and supervisor.replacements_left == 2


def test_replacements_run_out_and_no_worker_replaces_one_when_no_trial_is_left(setting):
    rounds = [[Event("ended", 0, Ended(0, 200 + k, HOST, -9, said="with exit code -9"))] for k in range(3)]
    supervisor, launcher, _ = run(setting, rounds, max_replacements=2)
    assert launcher.started == [0, 1, 0, 0] and supervisor.replacements_left == 0 and supervisor.states[0] == "died"
    _, launcher, _ = run(setting, [[Event("ended", 0, Ended(0, 300, HOST, -9))]], n_trials=0)
    assert launcher.started == [0, 1]  # nothing left to run: not replaced


def test_a_broken_cuda_context_is_replaced_and_sys_exit_stops_the_pool_with_its_code(setting):
    broken = Ended(1, 400, HOST, BROKEN_DEVICE_EXIT, BROKEN_DEVICE_EXIT)
    supervisor, launcher, _ = run(setting, [[Event("ended", 1, broken)]])
    assert supervisor.states[1] == "starting" and launcher.started == [0, 1, 1] and not launcher.stops
    asked = Ended(0, 401, HOST, 3, 3)
    supervisor, launcher, (_, interrupted, exit_code) = run(setting, [[Event("ended", 0, asked)]])
    assert exit_code == 3 and launcher.stops == ["SIGTERM"] and interrupted is None
    assert launcher.started == [0, 1] and supervisor.states[0] == "exited 3"


def test_a_workers_own_error_stops_the_pool_and_is_raised(setting):
    boom = ValueError("the study file does not load")
    with pytest.raises(ValueError, match="does not load"):
        run(setting, [[Event("error", 1, ("ValueError: the study file does not load", boom))]])
    with pytest.raises(SpecError, match="worker w1 failed: it broke"):
        run(setting, [[Event("error", 1, ("it broke", None))]])


def test_a_stop_is_passed_on_tickets_end_and_the_run_says_it_was_interrupted(setting):
    import signal

    study, ostudy = setting
    launcher = Script([[], []], 4)
    supervisor = Supervisor(study, ostudy, launcher, [0], 4, None, show_progress=False)
    assert supervisor.grant()
    supervisor.stop(signal.SIGINT)
    assert not supervisor.grant() and launcher.stops == ["SIGINT"]
    died = Ended(0, 500, HOST, -2, None, "with exit code -2")
    supervisor.handle(Event("ended", 0, died))
    assert supervisor.states[0] == "stopped" and launcher.started == []  # no replacement while stopping
    result, interrupted, _ = supervisor.run(lambda r: r)
    assert interrupted == "SIGINT"


def test_a_retry_a_worker_queued_adds_a_ticket_and_one_to_the_total(setting):
    supervisor, launcher, _ = run(setting, [[Event("retry", 0, 2)]], n_trials=3)
    assert launcher.tickets.remaining() == 5 and supervisor.progress.total == 5


def test_workers_that_cannot_be_placed_are_marked_and_the_run_goes_on(setting):
    supervisor, launcher, _ = run(setting, [], launcher={"placeable": False})
    assert supervisor.states == {0: "unplaced", 1: "unplaced"}
