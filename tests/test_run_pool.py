"""Worker processes: one study run by a pool of processes (CPU workers, workers pinned to GPU ids),
stopped by a signal, losing a worker to kill -9; the per-device timing locks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from conftest import wait_until

import motune as mt
from motune import locks
from motune.run.pool import plan_workers

HERE = Path(__file__).parent


def pool(*args: str, env: dict | None = None) -> subprocess.Popen:
    full = {**os.environ, "PYTHONPATH": str(HERE), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "motune.cli", "run", str(HERE / "fault_study.py"), *args],
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def test_two_worker_processes_run_the_trials_of_one_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'pool.db'}"  # a new file: the workers start on a study with no trial
    run = pool("--trials", "8", "--workers", "2", "--storage", url,
               env={"MOTUNE_TEST_STUDY": "pool", "MOTUNE_TEST_SLEEP_S": "1.5"})  # longer than a worker's start-up
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    trials = trials_of(url, "pool")
    assert len(trials) == 8 and {t.state.name for t in trials} == {"COMPLETE"}
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(pids) == 2 and run.pid not in pids  # two worker processes, not the pool's own
    configs = [(t.params["C"], t.params["tol"]) for t in trials]
    assert len(set(configs)) == 8
    for t in trials:
        worker = t.user_attrs["provenance"]["worker"]
        assert worker["threads"] == max(1, (os.cpu_count() or 1) // 2) and worker["omp_num_threads"] == str(worker["threads"])
        assert worker["cuda_visible_devices"] == "" and worker["index"] in (0, 1)  # a CPU worker sees no GPU
    assert "w0 trial" in err and "w1 trial" in err and "in 2 worker processes" in err


def test_workers_pinned_to_gpu_ids_each_see_only_their_own(tmp_path):
    url = f"sqlite:///{tmp_path / 'gpus.db'}"
    run = pool("--trials", "4", "--gpus", "0,1", "--storage", url,
               env={"MOTUNE_TEST_STUDY": "gpus", "MOTUNE_TEST_SLEEP_S": "3", "CUDA_VISIBLE_DEVICES": "6,7",
                    "MOTUNE_GPU_DRY_RUN": "1"})  # this machine has no GPU: the layout is tried on the CPU
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    workers = [t.user_attrs["provenance"]["worker"] for t in trials_of(url, "gpus")]
    assert {(w["index"], w["cuda_visible_devices"]) for w in workers} == {(0, "6"), (1, "7")}  # --gpus 0,1 counts
    assert all(w["gpu_dry_run"] for w in workers)                          # the GPUs this job was given (6, 7)


def test_sigterm_stops_every_worker_and_leaves_no_trial_running(tmp_path):
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    run = pool("--trials", "6", "--workers", "2", "--storage", url,
               env={"MOTUNE_TEST_STUDY": "stop", "MOTUNE_TEST_SLEEP_S": "60"})
    wait_until(lambda: len([t for t in trials_of(url, "stop") if t.state.name == "RUNNING"]) == 2, 120,
               "two running trials")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143, err
    trials = trials_of(url, "stop")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert {t.user_attrs["error"] for t in trials} == {"interrupted by SIGTERM"}


def test_ctrl_c_to_the_pools_process_alone_is_recorded_as_sigint(tmp_path):
    url = f"sqlite:///{tmp_path / 'int.db'}"
    run = pool("--trials", "6", "--workers", "2", "--storage", url,
               env={"MOTUNE_TEST_STUDY": "int", "MOTUNE_TEST_SLEEP_S": "60"})
    wait_until(lambda: len([t for t in trials_of(url, "int") if t.state.name == "RUNNING"]) == 2, 120,
               "two running trials")
    workers = {t.user_attrs["worker"]["pid"] for t in trials_of(url, "int")}
    assert all(os.getpgid(pid) != os.getpgid(run.pid) for pid in workers)  # a terminal's Ctrl-C reaches the pool alone
    os.kill(run.pid, signal.SIGINT)  # the pool's process only, as a terminal's Ctrl-C now does
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    trials = trials_of(url, "int")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert {t.user_attrs["error"] for t in trials} == {"interrupted by SIGINT"}


def test_workers_stop_with_a_pool_killed_by_kill_9_and_the_next_run_leaves_nothing_running(tmp_path):
    import time

    url = f"sqlite:///{tmp_path / 'orphans.db'}"
    env = {"MOTUNE_TEST_STUDY": "orphans", "MOTUNE_TEST_SLEEP_S": "60", "MOTUNE_HEARTBEAT_S": "2"}
    run = pool("--trials", "6", "--workers", "2", "--storage", url, env=env)
    wait_until(lambda: len([t for t in trials_of(url, "orphans") if t.state.name == "RUNNING"]) == 2, 120,
               "two running trials")
    workers = {t.user_attrs["worker"]["pid"] for t in trials_of(url, "orphans")}
    run.kill()  # kill -9: the pool's process runs no handler
    run.wait(timeout=30)

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(lambda: all(gone(pid) for pid in workers), 60, "the workers to stop with their pool")
    began = time.monotonic()
    again = pool("--trials", "1", "--storage", url, env={**env, "MOTUNE_TEST_SLEEP_S": "0"})
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert time.monotonic() - began < 60
    trials = trials_of(url, "orphans")
    assert not [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    orphans = [t for t in trials if t.user_attrs.get("worker", {}).get("pid") in workers]
    assert len(orphans) == 2 and all(t.state.name == "FAIL" for t in orphans)
    reasons = [t.user_attrs.get("error") or t.system_attrs.get("fail_reason") for t in orphans]
    assert all(r in ("interrupted by SIGTERM",) or r.startswith("worker died") for r in reasons), reasons
    assert any(t.state.name == "COMPLETE" for t in trials)


def test_a_killed_worker_is_replaced_and_its_trial_failed_and_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    run = pool("--trials", "6", "--workers", "2", "--storage", url,
               env={"MOTUNE_TEST_STUDY": "killed", "MOTUNE_TEST_SLEEP_S": "3", "MOTUNE_TEST_REPORT": "1",
                    "MOTUNE_PROGRESS_S": "1"})
    victim = wait_until(lambda: next((t for t in trials_of(url, "killed") if t.state.name == "RUNNING"
                                      and "worker" in t.user_attrs), None), 120, "a running trial")
    os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert f"died with exit code -9; its trial(s) [{victim.number}] failed and retried" in err
    trials = {t.number: t for t in trials_of(url, "killed")}
    dead = trials[victim.number]
    assert dead.state.name == "FAIL" and dead.system_attrs["fail_reason"] == \
        "worker died (its process ended with exit code -9)"
    retry = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and dead.params.items() <= retry[0].params.items()
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 6  # the death did not eat a trial
    assert len({t.user_attrs["worker"]["pid"] for t in trials.values()}) == 3  # a new worker took its place
    assert "a new worker takes its place" in err
    done = [tuple(map(int, m)) for m in re.findall(r"done (\d+)/(\d+)", err)]
    assert all(k <= n for k, n in done) and done[-1] == (7, 7), done  # the retry is one more to run, counted
    assert re.search(r"trial \d+ still running \(\d+ s; last report at step \d+: progress \d", err), err


def test_planning_workers(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert [s.gpus for s in plan_workers(workers=3, cpu_count=8)] == [(), (), ()]
    assert {s.threads for s in plan_workers(workers=3, cpu_count=8)} == {2}
    assert [s.gpus for s in plan_workers(gpus="0,1", workers_per_gpu=2, cpu_count=8)] == [("0",), ("0",), ("1",), ("1",)]
    assert {s.threads for s in plan_workers(gpus="3", threads=5)} == {5}
    spec = plan_workers(gpus="1")[0]
    assert spec.environment()["CUDA_VISIBLE_DEVICES"] == "1" and spec.environment()["OMP_NUM_THREADS"] == str(spec.threads)
    with pytest.raises(mt.SpecError, match=r"may use 4 GPU\(s\).*\[7\] is not one of them"):
        plan_workers(gpus="1,7")
    for bad in (dict(workers=0), dict(gpus="0", workers_per_gpu=0), dict(workers=2, threads=0), dict(gpus="x")):
        with pytest.raises(mt.SpecError):
            plan_workers(**bad)


def test_gpus_all_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(mt.SpecError, match="no GPU is visible"):
        plan_workers(gpus="all")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert [s.gpus for s in plan_workers(gpus="all")] == [("2",), ("5",)]


# ---------------------------------------------------------------- timing locks

def test_timing_is_serialised_per_device_and_records_who_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTUNE_LOCK_DIR", str(tmp_path))
    assert locks.device_key("cpu") == locks.device_key("cpu:0")
    with locks.timing_lock("cpu") as info:
        assert info["lock"].startswith("cpu-") and info["mode"] == "per-device" and info["others_training"] == []
    trainer = subprocess.Popen([sys.executable, "-c", (
        "import time, motune.locks as l\n"
        "with l.training('cpu'):\n    print('training', flush=True); time.sleep(30)")],
        env={**os.environ, "MOTUNE_LOCK_DIR": str(tmp_path)}, stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout.readline().strip() == "training"
        with locks.timing_lock("cpu") as info:  # per-device: the other process may train; it is named
            assert [o["pid"] for o in info["others_training"]] == [trainer.pid]
    finally:
        trainer.kill()
        trainer.wait()
    with locks.timing_lock("cpu") as info:
        assert info["others_training"] == []  # the dead process's marker is cleared


def test_a_gpu_is_never_timed_while_a_sibling_trains_on_it_and_who_trained_is_named_by_device(tmp_path,
                                                                                              monkeypatch):
    """Two workers sharing a GPU: the timer waits for the sibling's training there, new training there waits
    for the timer, training on another device does not; the GPU is faked by its lock key (its UUID)."""
    import time

    monkeypatch.setenv("MOTUNE_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(locks, "device_key", lambda d: "gpu-FAKE-UUID" if str(d).startswith("cuda") else "cpu-h")
    release = tmp_path / "release"
    trainer = subprocess.Popen([sys.executable, "-c", (
        "import os, time, motune.locks as l\n"
        "l.device_key = lambda d: 'gpu-FAKE-UUID' if str(d).startswith('cuda') else 'cpu-h'\n"
        "with l.training('cuda'):\n    print('training', flush=True)\n"
        f"    while not os.path.exists({str(release)!r}): time.sleep(0.05)\n")],
        env={**os.environ, "MOTUNE_LOCK_DIR": str(tmp_path)}, stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout.readline().strip() == "training"
        with locks.timing_lock("cpu") as info:  # another device: no wait, the GPU training is named by its UUID
            assert info["training_excluded"] == "none"
            assert [o["device"] for o in info["others_training"]] == ["gpu-FAKE-UUID"]
        threading.Timer(1.0, release.touch).start()
        began = time.monotonic()
        with locks.timing_lock("cuda") as info:  # the GPU: it waits for the sibling's training to end
            waited = time.monotonic() - began
            assert info["training_excluded"] == "gpu" and info["lock"] == "gpu-FAKE-UUID"
        assert waited >= 0.8 and trainer.wait(timeout=30) == 0
    finally:
        trainer.kill()
        trainer.wait()


_ORDER_SCRIPT = """
import os, sys, time, motune.locks as l
role, log = sys.argv[1], sys.argv[2]
def note(what):
    with open(log, "a") as f:
        f.write(f"{time.monotonic()} {what}\\n")
if role == "trainer":  # trains until the file argv[4] exists
    with l.training("cpu"):
        note("train start " + sys.argv[3])
        while not os.path.exists(sys.argv[4]):
            time.sleep(0.05)
        note("train end " + sys.argv[3])
else:
    with l.study_timing("exclusive"), l.timing_lock("cpu") as info:
        note("time start " + info["mode"]); time.sleep(0.5); note("time end")
"""


def test_exclusive_timing_waits_for_training_and_holds_new_training_back(tmp_path):
    """Three processes: a trainer, an exclusive timer that asks while it trains, a second trainer that asks
    while the timer waits. Each starts only once the previous one has been seen waiting or working."""
    log = tmp_path / "log"
    env = {**os.environ, "MOTUNE_LOCK_DIR": str(tmp_path / "locks")}
    script = tmp_path / "order.py"
    script.write_text(_ORDER_SCRIPT)

    release = tmp_path / "release"  # the first trainer trains until the other two are seen waiting
    first = subprocess.Popen([sys.executable, str(script), "trainer", str(log), "first", str(release)], env=env)
    wait_until(lambda: log.exists() and "train start first" in log.read_text(), 60, "the first trainer")
    timer = subprocess.Popen([sys.executable, str(script), "timer", str(log)], env=env)
    wait_until(lambda: _waits_on_a_lock(timer.pid), 60, "the timer waiting")
    second = subprocess.Popen([sys.executable, str(script), "trainer", str(log), "second", str(tmp_path)], env=env)
    wait_until(lambda: _waits_on_a_lock(second.pid), 60, "the second trainer waiting")
    release.touch()
    for p in (first, timer, second):
        assert p.wait(timeout=60) == 0
    order = [line.split(" ", 1)[1] for line in sorted(log.read_text().splitlines(), key=lambda x: float(x.split()[0]))]
    assert order == ["train start first", "train end first", "time start exclusive", "time end",
                     "train start second", "train end second"]


def _waits_on_a_lock(pid):
    """Whether process ``pid`` is blocked in flock (Linux: its wchan, or its state, says so)."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    return "lock" in wchan or "flock" in wchan


def test_a_report_inside_train_times_in_exclusive_mode_without_deadlocking(task, tmp_path, monkeypatch):
    from conftest import FAST_LATENCY, make_study
    from conftest import train as fit

    monkeypatch.setenv("MOTUNE_LOCK_DIR", str(tmp_path / "locks"))

    def train(params, task_, ctx):
        model = fit(params, task_, ctx)
        ctx.report(0, model)  # latency measured inside train, which holds the shared training lock
        return model

    study = make_study(task, optuna.storages.InMemoryStorage(), train=train, timing="exclusive",
                       objectives=[mt.maximize("accuracy"), mt.minimize("latency_p95_ms")],
                       metric_options=FAST_LATENCY)
    result = study.optimize(n_trials=2, show_progress=False)
    assert [r.state for r in result.records()] == ["COMPLETE", "COMPLETE"]
    assert not list((tmp_path / "locks" / "training").iterdir())  # markers removed


def test_locks_work_where_home_cannot_be_written(tmp_path, monkeypatch):
    monkeypatch.delenv("MOTUNE_LOCK_DIR", raising=False)
    monkeypatch.setenv("HOME", "/proc/no-home-here")
    with locks.training("cpu"), locks.timing_lock("cpu") as info:
        assert info["lock"].startswith("cpu-")
    assert str(locks.lock_folder()).startswith(str(Path(__import__("tempfile").gettempdir())))


def test_a_study_records_its_timing_mode_and_device_lock(task, tmp_path, monkeypatch):
    from conftest import FAST_LATENCY, make_study

    monkeypatch.setenv("MOTUNE_LOCK_DIR", str(tmp_path / "locks"))
    study = make_study(task, optuna.storages.InMemoryStorage(), metrics=["latency_p95_ms"],
                       metric_options=FAST_LATENCY, timing="exclusive")
    record = study.optimize(n_trials=1, show_progress=False).records()[0]
    latency = record.attrs["latency"]
    assert latency["timing_mode"] == "exclusive" and latency["lock"].startswith("cpu-")
    with pytest.raises(mt.SpecError, match="timing must be one of"):
        make_study(task, optuna.storages.InMemoryStorage(), timing="sometimes")
    assert json.loads(json.dumps(latency))  # plain JSON


# ---------------------------------------------------------------- the first sweep on a GPU box (faked where it can be)

def test_a_worker_whose_cuda_context_broke_ends_after_its_trial_and_is_replaced(tmp_path):
    """A device-side assert leaves the process's CUDA context unusable: every later trial of that worker would
    fail in milliseconds. Raised here by the train function itself, with CUDA's own message."""
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    run = pool("--trials", "4", "--workers", "1", "--storage", url,
               env={"MOTUNE_TEST_STUDY": "broken", "MOTUNE_TEST_FAIL": "CUDA error: device-side assert triggered"})
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    assert "a trial broke its CUDA context; a new worker takes its place" in err
    trials = trials_of(url, "broken")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert "device-side assert triggered" in trials[1].user_attrs["error"]
    pids = [t.user_attrs["worker"]["pid"] for t in trials]
    assert pids[0] == pids[1] != pids[2] == pids[3]  # the broken process ran no further trial


def test_a_worker_given_a_gpu_refuses_to_start_without_cuda(tmp_path):
    url = f"sqlite:///{tmp_path / 'nogpu.db'}"
    run = pool("--trials", "2", "--gpus", "0", "--storage", url, env={"MOTUNE_TEST_STUDY": "nogpu",
                                                                       "CUDA_VISIBLE_DEVICES": "0"})
    out, err = run.communicate(timeout=240)
    assert run.returncode == 2, err
    assert "was given GPU(s) ['0']" in err and "torch sees no usable GPU" in err and "CUDA none (a CPU build)" in err
    assert not [t for t in trials_of(url, "nogpu") if t.state.name == "COMPLETE"]  # it trained nothing on the CPU
