"""The reliability audit's faults, one test (or a few) per point, on real processes, real storage
and real signals. Each test failed before its fix (checked against the code before the change)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

import motune as mt
from conftest import FAST_LATENCY, make_frame, make_study, wait_until
from motune.cli import app

HERE = Path(__file__).parent
runner = CliRunner()


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``motune ARGS`` in a new process (its own process group) with the test folder importable."""
    full = {**os.environ, "PYTHONPATH": str(HERE), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "motune.cli", *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def running_trial(url: str, name: str):
    return next((t for t in trials_of(url, name) if t.state.name == "RUNNING" and "worker" in t.user_attrs), None)


# ---------------------------------------------------------------- 1. workers racing to create the tables

def test_01_workers_starting_together_on_a_new_sqlite_file_all_open_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    start_at = time.time() + 4.0  # every process opens the new file at the same instant
    code = textwrap.dedent(f"""
        import time, optuna
        from motune.run import open_storage
        time.sleep(max(0.0, {start_at} - time.time()))
        storage = open_storage({url!r})
        optuna.create_study(study_name="race", storage=storage, directions=["maximize"], load_if_exists=True)
        print("opened")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err[-2500:] for _, err in outputs if err]
    assert len(optuna.get_all_study_summaries(url)) == 1


# ---------------------------------------------------------------- 2. user text is never rich markup

def test_02_user_text_with_brackets_is_printed_as_it_is(tmp_path):
    url = f"sqlite:///{tmp_path / 'markup.db'}"
    env = {"MOTUNE_TEST_STUDY": "odd[/]name [bold]x", "MOTUNE_TEST_LABEL": "[/]",
           "MOTUNE_TEST_FAIL": "bad [/] value [red]here"}
    ran = cli("run", str(HERE / "fault_study.py"), "--trials", "3", "--storage", url, env=env)
    out, err = ran.communicate(timeout=180)
    assert ran.returncode == 0, err
    assert "odd[/]name [bold]x" in err and "bad [/] value [red]here" in err  # the trial's error, as it is
    assert "[/]" in out  # the categorical value in the front table
    front = cli("front", "odd[/]name [bold]x", "--storage", url)
    out, err = front.communicate(timeout=120)
    assert front.returncode == 0, err
    assert "odd[/]name [bold]x" in out and "[/]" in out
    # a resume-mismatch message keeps its bracketed parts
    other = cli("run", str(HERE / "fault_study.py"), "--trials", "1", "--storage", url,
                env={**env, "MOTUNE_TEST_OBJECTIVE": "demographic_parity_difference"})
    out, err = other.communicate(timeout=120)
    assert other.returncode == 2
    text = " ".join(err.split())
    assert "objectives [maximize accuracy, minimize latency_p95_ms] and constraints [equalized_odds_difference <= 0.3]" in text


# ---------------------------------------------------------------- 3. a URL sqlalchemy cannot parse

def test_03_a_storage_url_that_cannot_be_parsed_does_not_print_its_password():
    url = "postgresql+psycopg2://me:hunter2@127.0.0.1:notaport/db"
    for args in (["run", str(HERE / "fault_study.py"), "--trials", "1", "--storage", url],
                 ["front", "x", "--storage", url], ["studies", "--storage", url]):
        result = cli(*args)
        out, err = result.communicate(timeout=120)
        assert result.returncode == 2, err
        assert "hunter2" not in out + err and "me:***@" in err, err
    with pytest.raises(mt.StorageError) as info:
        mt.load_study("x", storage=url)
    assert "hunter2" not in str(info.value)
    assert mt.run.redact_url("postgresql://me:p@ss@host:x/db") == "postgresql://me:***@host:x/db"


# ---------------------------------------------------------------- 4. signals and sys.exit leave no trial RUNNING

def test_04_sigterm_fails_the_running_trial_with_its_reason_then_exits(tmp_path):
    url = f"sqlite:///{tmp_path / 'term.db'}"
    env = {"MOTUNE_TEST_STUDY": "term", "MOTUNE_TEST_SLEEP_S": "60"}
    worker = cli("run", str(HERE / "fault_study.py"), "--trials", "3", "--storage", url, env=env)
    wait_until(lambda: running_trial(url, "term"), what="a running trial")
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in err
    trials = trials_of(url, "term")
    assert [t.state.name for t in trials] == ["FAIL"]
    assert trials[0].user_attrs["error"] == "interrupted by SIGTERM"
    # resuming runs new trials; nothing is left RUNNING
    again = cli("run", str(HERE / "fault_study.py"), "--trials", "1", "--storage", url,
                env={**env, "MOTUNE_TEST_SLEEP_S": "0"})
    assert again.wait(timeout=120) == 0
    assert [t.state.name for t in trials_of(url, "term")] == ["FAIL", "COMPLETE"]


def test_04_sys_exit_in_train_fails_the_trial_and_exits_with_its_code(tmp_path):
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    worker = cli("run", str(HERE / "fault_study.py"), "--trials", "2", "--storage", url,
                 env={"MOTUNE_TEST_STUDY": "exit", "MOTUNE_TEST_EXIT": "3"})
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 3, err
    trials = trials_of(url, "exit")
    assert [t.state.name for t in trials] == ["FAIL"]
    assert trials[0].user_attrs["error"] == "train() called sys.exit(3)"


def test_04_sys_exit_without_a_code_exits_0_after_failing_the_trial(task, sqlite_url):
    def train(params, task_, ctx):
        sys.exit()

    with pytest.raises(SystemExit) as info:
        make_study(task, sqlite_url, train=train).optimize(n_trials=2, show_progress=False)
    assert info.value.code is None  # what sys.exit() asked for: status 0
    assert [(r.state, r.error) for r in mt.load_study("synthetic", storage=sqlite_url).records()] == [
        ("FAIL", "train() called sys.exit()")]


def test_04_a_failing_callback_stops_the_run_and_fails_its_trial(task, sqlite_url):
    class Broken(mt.Callback):
        def on_trial_start(self, trial):
            if trial.number == 1:
                raise RuntimeError("callback bug")

    with pytest.raises(mt.CallbackError, match="Broken.on_trial_start raised RuntimeError: callback bug") as info:
        make_study(task, sqlite_url).optimize(n_trials=4, show_progress=False, callbacks=[Broken()])
    assert isinstance(info.value.__cause__, RuntimeError)
    records = mt.load_study("synthetic", storage=sqlite_url).records()
    assert [(r.state, r.error) for r in records] == [
        ("COMPLETE", None), ("FAIL", "callback Broken.on_trial_start raised RuntimeError: callback bug")]


def test_04_an_error_leaves_no_live_progress_bar(task, monkeypatch):
    import functools
    import io

    from rich.console import Console

    import motune.run.progress as progress

    screen = io.StringIO()
    monkeypatch.setattr(progress, "Console", functools.partial(Console, file=screen, force_terminal=True))

    def boom(_study, _trial):
        raise RuntimeError("an Optuna callback's bug")

    with pytest.raises(RuntimeError, match="bug"):
        make_study(task, optuna.storages.InMemoryStorage()).optimize(n_trials=2, callbacks=[boom])
    assert screen.getvalue().endswith("\x1b[?25h") or "\x1b[?25h" in screen.getvalue()[-50:]  # cursor shown again


def test_04_ctrl_c_with_threads_ends_every_trial(tmp_path):
    script = tmp_path / "threads.py"
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    script.write_text(textwrap.dedent(f"""
        import dataclasses, os
        os.environ.update(MOTUNE_TEST_SLEEP_S="60", MOTUNE_TEST_REPORT="1")
        from fault_study import study
        result = dataclasses.replace(study, name="threads", storage={url!r}).optimize(
            6, n_jobs=2, show_progress=False)
        print("interrupted:", result.interrupted, sorted(r.state for r in result.records()))
    """))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(HERE)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len([t for t in trials_of(url, "threads") if t.state.name == "RUNNING"]) == 2,
               what="two running trials")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "interrupted: SIGINT ['FAIL', 'FAIL']" in out
    assert {t.user_attrs["error"] for t in trials_of(url, "threads")} == {"interrupted by SIGINT"}


def test_04_ctrl_c_in_a_python_script_returns_the_result_without_a_traceback(tmp_path):
    script = tmp_path / "script.py"
    url = f"sqlite:///{tmp_path / 'int.db'}"
    script.write_text(textwrap.dedent(f"""
        import dataclasses, os
        os.environ["MOTUNE_TEST_SLEEP_S"] = "60"
        from fault_study import study
        result = dataclasses.replace(study, name="int", storage={url!r}).optimize(3, show_progress=False)
        print("interrupted:", result.interrupted, [r.state for r in result.records()])
    """))
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(HERE)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: running_trial(url, "int"), what="a running trial")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "interrupted: SIGINT ['FAIL']" in out
    assert trials_of(url, "int")[0].user_attrs["error"] == "interrupted by SIGINT"


# ---------------------------------------------------------------- 5. a worker killed with kill -9

def test_05_a_killed_workers_trial_is_failed_with_a_reason_and_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    env = {"MOTUNE_TEST_STUDY": "kill", "MOTUNE_HEARTBEAT_S": "4"}  # grace: 3 heartbeats, 12 s (longer than
    # the survivor takes to start on a loaded host, so its first trial starts before the dead one goes stale)
    doomed = cli("run", str(HERE / "fault_study.py"), "--trials", "1", "--storage", url,
                 env={**env, "MOTUNE_TEST_SLEEP_S": "120"})
    # a running trial that has suggested its params (its worker is recorded before space() runs; killed
    # before them, the retry has none to run again)
    victim = wait_until(lambda: (t := running_trial(url, "kill")) is not None and t.params and t,
                        what="a running trial with its params")
    doomed.kill()  # SIGKILL: no handler runs, the trial stays RUNNING until its heartbeat goes stale
    doomed.wait(timeout=30)
    assert running_trial(url, "kill") is not None
    # the survivor starts at once (before the grace period ends) and its first trial takes 30 s: Optuna's
    # own check at a trial's start cannot see the dead trial stale, the survivor's watch thread must
    survivor = cli("run", str(HERE / "fault_study.py"), "--trials", "2", "--storage", url,
                   env={**env, "MOTUNE_TEST_SLEEP_S": "30", "MOTUNE_TEST_SLEEP_ONCE": "1"})
    out, err = survivor.communicate(timeout=180)
    assert survivor.returncode == 0, err
    trials = {t.number: t for t in trials_of(url, "kill")}
    dead = trials[victim.number]
    assert dead.state.name == "FAIL"
    assert dead.system_attrs["fail_reason"].startswith("worker died (heartbeat stale")
    assert mt.load_study("kill", storage=url).records()[victim.number].error.startswith("worker died")
    first = trials[victim.number + 1]  # the survivor's first trial
    assert first.datetime_start < dead.datetime_complete < first.datetime_complete  # failed while it ran
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    # the retry runs the dead trial's params (it may have died inside space(), before suggesting them all)
    assert dead.params and dead.params.items() <= retries[0].params.items()
    # the retry measured itself: nothing of the dead trial's failure carried over
    assert "fail_reason" not in retries[0].system_attrs and "error" not in retries[0].user_attrs
    assert retries[0].user_attrs["worker"]["pid"] == survivor.pid


def test_05_a_worker_never_fails_its_own_live_trial(task, sqlite_url):
    """A train function holding the GIL past the grace period (one long C call) delays the heartbeat;
    the worker's own stale-trial checks must not take that for a dead worker."""
    import re

    from conftest import train as fit

    def train(params, task_, ctx):
        if ctx.trial_number == 0:
            began = time.monotonic()
            re.match(r"(a+)+$", "a" * 28 + "b")  # catastrophic backtracking: seconds without releasing the GIL
            assert time.monotonic() - began > 2.5, "the GIL was not held past the grace period"
        return fit(params, task_, ctx)

    result = make_study(task, sqlite_url, train=train, heartbeat_s=1, heartbeat_grace_s=2).optimize(
        n_trials=2, show_progress=False)
    assert [(r.state, r.error) for r in result.records()] == [("COMPLETE", None), ("COMPLETE", None)]


def test_05_a_trial_another_worker_took_over_does_not_stop_the_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'taken.db'}"
    env = {"MOTUNE_TEST_STUDY": "taken", "MOTUNE_HEARTBEAT_S": "1"}  # grace 3 s
    watcher = cli("run", str(HERE / "fault_study.py"), "--trials", "1", "--storage", url,
                  env={**env, "MOTUNE_TEST_SLEEP_S": "25"})  # its watch thread looks every second
    wait_until(lambda: running_trial(url, "taken"), what="the watcher's trial")
    holder = cli("run", str(HERE / "fault_study.py"), "--trials", "2", "--storage", url,
                 env={**env, "MOTUNE_TEST_HOLD_GIL": "1"})
    out, err = holder.communicate(timeout=180)
    assert holder.returncode == 0, err
    assert "was failed by another worker while it ran" in err
    watcher.communicate(timeout=120)
    trials = trials_of(url, "taken")
    held = [t for t in trials if t.user_attrs.get("worker", {}).get("pid") == holder.pid and t.state.name == "FAIL"]
    assert len(held) == 1 and held[0].system_attrs["fail_reason"].startswith("worker died")
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert [t.state.name for t in trials if t.system_attrs.get("failed_trial") == held[0].number] == ["COMPLETE"]


# ---------------------------------------------------------------- 6. workers do not repeat configurations

def test_06_workers_started_together_never_repeat_a_configuration(tmp_path):
    url = f"sqlite:///{tmp_path / 'seeds.db'}"  # a new file: every worker sees a study with no trial
    workers = [cli("run", str(HERE / "fault_study.py"), "--trials", "6", "--storage", url, "-q",
                   env={"MOTUNE_TEST_STUDY": "seeds"}) for _ in range(3)]
    for w in workers:
        out, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    configs = [(t.params["C"], t.params["tol"]) for t in trials_of(url, "seeds")]
    assert len(configs) == 18 and len(set(configs)) == 18


def test_06_a_fresh_run_is_reproducible_from_its_seed(task):
    first = make_study(task, optuna.storages.InMemoryStorage()).optimize(n_trials=4, show_progress=False)
    second = make_study(task, optuna.storages.InMemoryStorage()).optimize(n_trials=4, show_progress=False)
    assert [r.params for r in first.records()] == [r.params for r in second.records()]
    other_seed = make_study(task, optuna.storages.InMemoryStorage(), seed=1).optimize(n_trials=1, show_progress=False)
    assert other_seed.records()[0].params != first.records()[0].params


# ---------------------------------------------------------------- 7. every split needs two groups

def test_07_a_split_with_a_single_group_is_refused():
    frame = make_frame(200)
    frame["group"] = "a"
    frame.loc[frame.index[:3], "group"] = "b"  # three rows of group b: not every split can hold one
    with pytest.raises(mt.TaskError, match=r"split '(valid|test|train)' has a single group"):
        mt.Task.from_frame(frame, label="y", sensitive="group", seed=0)


def test_07_fairness_on_a_split_with_a_single_group_is_an_error_not_zero(task):
    one_group = dataclasses.replace(task, sensitive_valid=pd.Series("a", index=task.sensitive_valid.index,
                                                                     name=task.sensitive))
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit(task.X_train, task.y_train)
    with pytest.raises(mt.MetricError, match="single group"):
        mt.metrics.measure(model, one_group, ["equalized_odds_difference"], split="valid")


# ---------------------------------------------------------------- 8. what train received is stored

def test_08_derived_and_fixed_params_are_stored(task, sqlite_url):
    from conftest import train

    def space(trial):
        c = trial.suggest_float("C", 1e-2, 1.0, log=True)
        return {"C": c, "fit_intercept": True, "C_times_ten": 10 * c}

    def train_(params, task_, ctx):
        assert params["C_times_ten"] == pytest.approx(10 * params["C"])
        return train(params, task_, ctx)

    result = make_study(task, sqlite_url, space=space, train=train_).optimize(n_trials=2, show_progress=False)
    for r in result.records():
        assert r.params["fit_intercept"] is True and r.params["C_times_ten"] == pytest.approx(10 * r.params["C"])
    assert "params_C_times_ten" in result.front().columns
    assert set(result.study.trials[0].params) == {"C"}  # Optuna's own params are unchanged


# ---------------------------------------------------------------- 9. clear errors, not tracebacks

def test_09_a_study_file_that_does_not_load_is_one_clear_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import motune as mt\n\nstudy = mt.Study(\n")
    raising = tmp_path / "raising.py"
    raising.write_text("import motune as mt\n\n\nraise RuntimeError('no data here')\n")
    for path, expected in ((broken, "line 3"), (raising, "(line 4 of raising.py) raised RuntimeError: no data here")):
        result = runner.invoke(app, ["run", str(path), "--trials", "1"])
        assert result.exit_code == 2, result.output
        assert expected in result.output and "Traceback" not in result.output


def test_09_bad_arguments_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    url = f"sqlite:///{tmp_path / 'never.db'}"
    result = runner.invoke(app, ["run", str(HERE / "fault_study.py"), "--trials", "1", "--n-jobs", "0",
                                 "--storage", url])
    assert result.exit_code == 2 and "n_jobs must be a positive integer" in result.output
    assert not (tmp_path / "never.db").exists()  # the study was not created
    made = cli("run", str(HERE / "fault_study.py"), "--trials", "1", "--storage", url, "-q")
    assert made.wait(timeout=120) == 0
    began = time.perf_counter()
    result = runner.invoke(app, ["report", "fault-study", "--storage", url, "-o", str(tmp_path / "no" / "r.html")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert time.perf_counter() - began < 5  # refused before the report was built
    assert runner.invoke(app, ["report", "fault-study", "--storage", url, "-o", str(tmp_path)]).exit_code == 2


def test_09_an_empty_frame_is_a_task_error():
    with pytest.raises(mt.TaskError, match="no rows"):
        mt.Task.from_frame(make_frame().iloc[:0], label="y", sensitive="group")


# ---------------------------------------------------------------- 10. reproducible torch trials

def test_10_the_same_params_and_seed_give_the_same_torch_model_in_two_studies(task):
    torch = pytest.importorskip("torch")
    from motune.models.torch import TorchClassifier, fit

    def space(trial):
        trial.suggest_int("hidden", 4, 16)

    def train(params, task_, ctx):
        data = task_.numeric()
        module = torch.nn.Sequential(torch.nn.Linear(data.X_train.shape[1], params["hidden"]), torch.nn.ReLU(),
                                     torch.nn.Dropout(0.3), torch.nn.Linear(params["hidden"], 2))
        noise = np.random.normal(scale=0.01, size=data.X_train.shape).astype(np.float32)  # numpy's global RNG
        fit(module, torch.from_numpy(data.X_train + noise), torch.from_numpy(data.y_train), epochs=2,
            seed=ctx.seed)
        return TorchClassifier.for_task(module, task_)

    metrics = []
    for _ in range(2):
        torch.rand(7), np.random.rand(3)  # whatever ran before must not matter
        study = make_study(task, optuna.storages.InMemoryStorage(), space=space, train=train, seed=5)
        ostudy = mt.run.open_study(study)
        ostudy.enqueue_trial({"hidden": 9})
        metrics.append(study.optimize(n_trials=1, show_progress=False).records()[0].metrics)
    assert metrics[0] == metrics[1]


# ---------------------------------------------------------------- 11. latency under load

def test_11_latency_fixes_every_thread_pool_and_records_the_load(tmp_path):
    code = textwrap.dedent("""
        import json, sys
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.pipeline import make_pipeline
        import motune as mt
        from conftest import make_frame
        task = mt.Task.from_frame(make_frame(), label="y", sensitive="group")
        model = make_pipeline(task.preprocessor(), HistGradientBoostingClassifier(max_iter=20)).fit(task.X_train, task.y_train)
        fast = {"warmup": 1, "min_count": 5, "min_time_s": 0.0, "batch_size": 16}
        wide = mt.metrics.measure(model, task, ["latency_p95_ms"], options={"latency": {**fast, "max_ci_width": 1e-9}})
        calm = mt.metrics.measure(model, task, ["latency_p95_ms"], options={"latency": {**fast, "max_ci_width": 1e9}})
        print(json.dumps({"torch": "torch" in sys.modules, "wide": wide.details["latency"],
                          "calm": calm.details["latency"]}))
    """)
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(HERE)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["torch"] is False  # the pools are fixed without torch in the process too
    details = data["wide"]
    assert details["threads_fixed"] == 1
    pools = {k: v for k, v in details["threads"].items() if k != "cpu_count"}
    assert pools and set(pools.values()) == {1}, pools  # OpenMP (HGB) and BLAS pools at 1 while timing
    assert len(details["load_average_before"]) == 3 and len(details["load_average_after"]) == 3
    assert details["noisy"] is True and "interval spans" in details["flags"][0]
    assert data["calm"]["noisy"] is False and data["calm"]["flags"] == []


# ---------------------------------------------------------------- 12. halving on a static objective

def test_12_successive_halving_ranks_on_latency_when_step_0_is_not_reported(task):
    from sklearn.linear_model import SGDClassifier

    def space(trial):
        trial.suggest_float("alpha", 1e-5, 1e-1, log=True)

    def train(params, task_, ctx):
        model = make_pipeline_sgd(task_, params["alpha"], ctx.seed)
        for epoch in (1, 2, 3):  # no ctx.report(0, ...): latency is measured at the first report
            model[-1].partial_fit(model[0].transform(task_.X_train), task_.y_train, classes=[0, 1])
            ctx.report(epoch, model)
        return model

    def make_pipeline_sgd(task_, alpha, seed):
        from sklearn.pipeline import make_pipeline

        pipe = make_pipeline(task_.preprocessor(), SGDClassifier(alpha=alpha, random_state=seed))
        pipe[0].fit(task_.X_train)
        return pipe

    study = make_study(task, optuna.storages.InMemoryStorage(), space=space, train=train,
                       objectives=[mt.maximize("accuracy"), mt.minimize("latency_p95_ms")], constraints=[],
                       metric_options=FAST_LATENCY, pruning=mt.pruning.SuccessiveHalving(min_resource=1, eta=2, calibrate=False))
    result = study.optimize(n_trials=8, show_progress=False)
    records = result.records()
    assert all("latency_p95_ms" in r.reports[1] for r in records)  # measured once, at step 1
    for r in records:
        if 2 in r.reports:
            assert r.reports[2]["latency_p95_ms"] == r.reports[1]["latency_p95_ms"]  # carried, not re-measured
    assert any(r.state == "PRUNED" for r in records)


def test_12_a_report_lacking_an_objective_warns_once_and_is_recorded(task):
    def train(params, task_, ctx):
        from conftest import train as fit

        for step in (1, 2):
            ctx.report(step, metrics={"accuracy": 0.5 + 0.01 * step})
        return fit(params, task_, ctx)

    study = make_study(task, optuna.storages.InMemoryStorage(), train=train)
    with pytest.warns(UserWarning, match="successive halving cannot rank it") as caught:
        result = study.optimize(n_trials=1, show_progress=False)
    assert len([w for w in caught if "cannot rank" in str(w.message)]) == 1
    assert "demographic_parity_difference" in result.records()[0].attrs["pruning_warning"]


# ---------------------------------------------------------------- 13. extra metrics are shown

def test_13_extra_metrics_appear_in_the_front_table_and_the_report(task, sqlite_url):
    study = make_study(task, sqlite_url, metrics=["roc_auc", "robust_accuracy"])
    result = study.optimize(n_trials=3, show_progress=False)
    front = result.front()
    assert {"roc_auc", "robust_accuracy"} <= set(front.columns)
    assert list(front.columns[:6]) == ["trial", "accuracy", "demographic_parity_difference",
                                       "equalized_odds_difference", "balanced_accuracy", "roc_auc"]
    html = mt.viz.render_report(mt.load_study("synthetic", storage=sqlite_url), figures=[])
    assert ">roc_<wbr>auc</th>" in html and ">robust_<wbr>accuracy</th>" in html  # headers break after "_"


# ---------------------------------------------------------------- faults around a sweep: the artifact store's disk

BIG_MODEL_STUDY = """
import json, os, resource, signal, sys
import numpy as np, optuna
sys.path.insert(0, {here!r})
from conftest import make_frame
import motune as mt


class Big:
    "A model with 2 MB of weights (a module-level class, so it pickles)."

    def __init__(self):
        self.weights = np.random.default_rng(0).standard_normal(250_000)

    def predict(self, X):
        return np.zeros(len(X), dtype=int)


def space(trial):
    trial.suggest_float("C", 0.1, 1.0)


if os.environ.get("LIMIT_BYTES"):  # a file-size limit: writes past it fail with EFBIG (not the default SIGXFSZ kill)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(os.environ["LIMIT_BYTES"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
task = mt.Task.from_frame(make_frame(), label="y", sensitive="group", seed=0, name="s")
study = mt.Study(name="big", task=task, space=space, train=lambda p, t, c: Big(),
                 objectives=[mt.maximize("accuracy")], storage=optuna.storages.InMemoryStorage(),
                 artifact_store=os.environ["STORE"], keep_models="all")
result = study.optimize(n_trials=3, show_progress=False)
left = [str(p) for p in __import__("pathlib").Path(os.environ["STORE"]).rglob("*") if p.is_file()]
print(json.dumps({{"left": left, "records": [{{"state": r.state, "accuracy": r.metrics.get("accuracy"),
                  "model": r.model, "not_kept": r.attrs.get("model_not_kept")}} for r in result.records()]}}))
"""


def _big_model_study(tmp_path, store, *, prefix=(), env=None):
    script = tmp_path / "big.py"
    script.write_text(BIG_MODEL_STUDY.format(here=str(HERE)))
    done = subprocess.run([*prefix, sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "STORE": str(store), **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["left"] == []  # no partial archive in the store (seen from inside, where the store is mounted)
    return out["records"]


def test_a_file_size_limit_while_saving_a_model_keeps_the_trial_and_leaves_no_archive(tmp_path):
    store = tmp_path / "store"
    records = _big_model_study(tmp_path, store, env={"LIMIT_BYTES": str(1_000_000)})
    assert [r["state"] for r in records] == ["COMPLETE"] * 3  # the study went on
    assert all(r["accuracy"] is not None and r["model"] is None for r in records)  # measurements kept
    assert all("File too large" in r["not_kept"] for r in records), records


def test_a_full_artifact_disk_keeps_the_trial_and_leaves_no_partial_archive(tmp_path):
    import shutil

    store = tmp_path / "store"
    store.mkdir()
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {store}"],
                           capture_output=True, text=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here ({probe.stderr.strip() if probe else 'no unshare'})")
    # a 1 MB filesystem of this process's own (a mount namespace): the 2 MB archive fills it while it is copied
    mounted = [unshare, "-m", "sh", "-c", f'mount -t tmpfs -o size=1m tmpfs {store} && exec "$0" "$@"']
    records = _big_model_study(tmp_path, store, prefix=mounted)
    assert [r["state"] for r in records] == ["COMPLETE"] * 3
    assert all(r["accuracy"] is not None and r["model"] is None for r in records)
    assert all("No space left on device" in r["not_kept"] for r in records), records

