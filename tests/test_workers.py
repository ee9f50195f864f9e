"""Worker processes: one study run by a pool of processes (CPU workers, workers pinned to GPU ids),
stopped by a signal, losing a worker to kill -9; the per-device timing locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
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
    run = pool("--trials", "8", "--workers", "2", "--storage", url, env={"MOTUNE_TEST_STUDY": "pool"})
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
    run = pool("--trials", "4", "--gpus", "0,1", "--storage", url, env={"MOTUNE_TEST_STUDY": "gpus"})
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    seen = {(t.user_attrs["provenance"]["worker"]["index"], t.user_attrs["provenance"]["worker"]["cuda_visible_devices"])
            for t in trials_of(url, "gpus")}
    assert seen <= {(0, "0"), (1, "1")} and len({s[1] for s in seen}) == 2


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


def test_a_killed_worker_is_replaced_and_its_trial_failed_and_retried(tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    run = pool("--trials", "5", "--workers", "2", "--storage", url,
               env={"MOTUNE_TEST_STUDY": "killed", "MOTUNE_TEST_SLEEP_S": "3"})
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
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == dead.params
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 5  # the death did not eat a trial
    assert len({t.user_attrs["worker"]["pid"] for t in trials.values()}) == 3  # a new worker took its place


def test_planning_workers():
    assert [s.gpus for s in plan_workers(workers=3, cpu_count=8)] == [(), (), ()]
    assert {s.threads for s in plan_workers(workers=3, cpu_count=8)} == {2}
    assert [s.gpus for s in plan_workers(gpus="0,1", workers_per_gpu=2, cpu_count=8)] == [("0",), ("0",), ("1",), ("1",)]
    assert {s.threads for s in plan_workers(gpus="3", threads=5)} == {5}
    spec = plan_workers(gpus="1")[0]
    assert spec.environment()["CUDA_VISIBLE_DEVICES"] == "1" and spec.environment()["OMP_NUM_THREADS"] == str(spec.threads)
    for bad in (dict(workers=0), dict(gpus="0", workers_per_gpu=0), dict(workers=2, threads=0)):
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


def test_exclusive_timing_waits_for_training_and_holds_new_training_back(tmp_path, monkeypatch):
    monkeypatch.setenv("MOTUNE_LOCK_DIR", str(tmp_path))
    events = []

    def train(name, hold_s):
        with locks.study_timing("exclusive"), locks.training("cpu"):
            events.append(("train start", name, time.monotonic()))
            time.sleep(hold_s)
            events.append(("train end", name, time.monotonic()))

    def timer():
        with locks.study_timing("exclusive"), locks.timing_lock("cpu") as info:
            events.append(("time start", info["mode"], time.monotonic()))
            time.sleep(0.3)
            events.append(("time end", None, time.monotonic()))

    first = threading.Thread(target=train, args=("first", 0.6))
    first.start()
    time.sleep(0.1)
    timing = threading.Thread(target=timer)
    timing.start()
    time.sleep(0.1)
    second = threading.Thread(target=train, args=("second", 0.1))  # asks while the timer waits
    second.start()
    for t in (first, timing, second):
        t.join(timeout=10)
    order = [(kind, name) for kind, name, _ in sorted(events, key=lambda e: e[2])]
    assert order == [("train start", "first"), ("train end", "first"), ("time start", "exclusive"),
                     ("time end", None), ("train start", "second"), ("train end", "second")]


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
