"""Workers on a real local Ray (logical GPUs on this CPU machine, so Ray's GPU assignment runs) against the
real PostgreSQL server: each worker sees only its own GPU id, the trials complete, and a Ray worker killed
mid-trial has its trial failed with the reason and retried."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import postgres_url, wait_until

ray = pytest.importorskip("ray")
URL = postgres_url()
HERE = Path(__file__).parent
pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray with two logical GPUs; its workers inherit the environment set here (undone after)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        env.setenv("MOTUNE_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
        env.setenv("MOTUNE_HEARTBEAT_S", "1")
        env.setenv("MOTUNE_TEST_SLEEP_S", "1.5")
        env.setenv("MOTUNE_GPU_DRY_RUN", "1")  # no GPU here: workers given one train on the CPU, and say so
        env.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # logical GPUs: Ray refuses more than a set list names
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
        yield ray
        ray.shutdown()


def _study(name, monkeypatch):
    """The fault-test study under ``name``: the driver's MOTUNE_* settings reach the Ray workers."""
    import runpy

    import dataclasses

    monkeypatch.setenv("MOTUNE_TEST_STUDY", name)
    return dataclasses.replace(runpy.run_path(str(HERE / "fault_study.py"))["study"], storage=URL)


def _trials(name):
    return optuna.load_study(study_name=name, storage=URL).get_trials(deepcopy=False)


def test_ray_workers_each_see_only_their_gpu(local_ray, monkeypatch):
    from motune.run.cluster import run_on_ray

    name = f"ray-{uuid.uuid4().hex[:8]}"
    result, signalled = run_on_ray(_study(name, monkeypatch), str(HERE / "fault_study.py"), address="local",
                                   n_trials=6, timeout=None, changes={"storage": URL}, gpus_per_worker=1,
                                   cpus_per_worker=1, show_progress=False)
    assert signalled is None
    trials = _trials(name)
    assert len(trials) == 6 and {t.state.name for t in trials} == {"COMPLETE"}
    seen = {}
    for t in trials:
        worker = t.user_attrs["provenance"]["worker"]
        seen.setdefault(worker["pid"], set()).add(worker["cuda_visible_devices"])
        assert worker["scheduler"] == "ray" and worker["threads"] == 1 and worker["gpu_dry_run"]
    assert len(seen) == 2 and all(len(ids) == 1 for ids in seen.values())  # each worker: one GPU id, its own
    assert set().union(*seen.values()) == {"0", "1"}
    assert len({(t.params["C"], t.params["tol"]) for t in trials}) == 6


def test_a_killed_ray_worker_has_its_trial_failed_and_retried(local_ray, monkeypatch):
    from motune.run.cluster import run_on_ray

    name = f"ray-kill-{uuid.uuid4().hex[:8]}"
    killed = {}

    def kill_one():
        victim = wait_until(lambda: next((t for t in _trials(name) if t.state.name == "RUNNING"
                                          and "worker" in t.user_attrs), None) if _exists(name) else None, 120,
                            "a running trial")
        killed["trial"] = victim.number
        os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_one)
    killer.start()
    result, _ = run_on_ray(_study(name, monkeypatch), str(HERE / "fault_study.py"), address="local", n_trials=5,
                           timeout=None, changes={"storage": URL}, gpus_per_worker=1, cpus_per_worker=1,
                           show_progress=False)
    killer.join(timeout=30)
    trials = {t.number: t for t in _trials(name)}
    dead = trials[killed["trial"]]
    assert dead.state.name == "FAIL" and dead.system_attrs["fail_reason"].startswith("worker died")
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and dead.params.items() <= retries[0].params.items()
    assert sum(t.state.name == "COMPLETE" for t in trials.values()) == 5
    assert not [t for t in trials.values() if t.state.name in ("RUNNING", "WAITING")]


def _exists(name):
    try:
        _trials(name)
        return True
    except KeyError:
        return False
