"""Workers dying on a shared PostgreSQL study: several `motune run` workers, `kill -9` for two of them
mid-trial and SIGTERM for a third; the study keeps every completed trial as it was, leaves nothing
RUNNING once the heartbeat grace period has passed, fails each killed trial with the reason and retries
it, never repeats a configuration, and `front` and `report` work on it.

Needs MOTUNE_TEST_POSTGRES_URL (scripts/test starts a throwaway server); with MOTUNE_REQUIRE_POSTGRES=1
(as in CI) a missing server fails instead of skipping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from conftest import postgres_url, wait_until

URL = postgres_url()
HERE = Path(__file__).parent

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def models_in_a_temporary_folder(tmp_path, monkeypatch):
    """A PostgreSQL study keeps its models in ./motune-artifacts by default: not in the checkout."""
    monkeypatch.setenv("MOTUNE_ARTIFACTS", str(tmp_path / "artifacts"))
GRACE_S = 3  # MOTUNE_HEARTBEAT_S=1: a heartbeat a second, stale after three


def worker(name: str, trials: int, sleep_s: float = 1.5) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(HERE), "MOTUNE_TEST_STUDY": name, "MOTUNE_HEARTBEAT_S": "1",
           "MOTUNE_TEST_SLEEP_S": str(sleep_s)}
    return subprocess.Popen([sys.executable, "-m", "motune.cli", "run", str(HERE / "fault_study.py"), "--trials",
                             str(trials), "--storage", URL, "-q"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def trials(name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=URL).get_trials()
    except KeyError:
        return []


def running_on(name: str, pid: int):
    return next((t for t in trials(name) if t.state.name == "RUNNING"
                 and t.user_attrs.get("worker", {}).get("pid") == pid), None)


def test_killed_and_terminated_workers_lose_nothing_and_leave_nothing_running(tmp_path):
    name = f"faults-{uuid.uuid4().hex[:8]}"
    workers = [worker(name, 8) for _ in range(4)]
    doomed, terminated, survivor = workers[:2], workers[2], workers[3]
    wait_until(lambda: sum(t.state.name == "COMPLETE" for t in trials(name)) >= 3, 240, "three completed trials")
    completed_before = {t.number: (t.values, t.params, t.user_attrs["metrics"]) for t in trials(name)
                        if t.state.name == "COMPLETE"}

    for w in doomed:  # kill -9 while the worker is inside a trial
        wait_until(lambda: running_on(name, w.pid), 60, f"a running trial of worker {w.pid}")
        w.kill()
        w.wait(timeout=30)
    wait_until(lambda: running_on(name, terminated.pid), 60, "a running trial of the worker to terminate")
    terminated.send_signal(signal.SIGTERM)
    out, err = terminated.communicate(timeout=60)
    assert terminated.returncode == 143, err
    replacement = worker(name, 4)

    for w in (survivor, replacement):
        out, err = w.communicate(timeout=400)
        assert w.returncode == 0, err[-3000:]
    time.sleep(GRACE_S + 1)
    final = {t.number: t for t in trials(name)}

    # nothing left RUNNING (or waiting for a retry that never ran)
    assert not [t.number for t in final.values() if t.state.name in ("RUNNING", "WAITING")]
    # every completed trial kept exactly what it had
    for number, (values, params, metrics) in completed_before.items():
        t = final[number]
        assert (t.state.name, t.values, t.params, t.user_attrs["metrics"]) == ("COMPLETE", values, params, metrics)
    # each killed worker's trial failed with the reason and was retried once, with the same params
    killed_pids = {w.pid for w in doomed}
    killed = [t for t in final.values() if t.user_attrs.get("worker", {}).get("pid") in killed_pids
              and t.state.name != "COMPLETE" and "failed_trial" not in t.system_attrs]
    assert len(killed) >= 2
    for t in killed:
        assert t.state.name == "FAIL" and t.system_attrs["fail_reason"].startswith("worker died (heartbeat stale")
        retries = [r for r in final.values() if r.system_attrs.get("failed_trial") == t.number]
        assert len(retries) == 1 and retries[0].params == t.params, t.number
        assert retries[0].state.name == "COMPLETE"
    # the terminated worker's trial failed with its reason and was not retried
    stopped = [t for t in final.values() if t.user_attrs.get("worker", {}).get("pid") == terminated.pid
               and t.state.name == "FAIL"]
    assert [t.user_attrs["error"] for t in stopped] == ["interrupted by SIGTERM"]
    assert not [r for r in final.values() if r.system_attrs.get("failed_trial") == stopped[0].number]
    # no configuration was tried twice, except as the retry of a dead worker's trial
    firsts = [t for t in final.values() if "failed_trial" not in t.system_attrs]
    configs = [(t.params["C"], t.params["tol"]) for t in firsts]
    assert len(configs) == len(set(configs))
    # the study reads back and reports
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    for args in (["front", name], ["report", name, "-o", str(tmp_path / "r.html")]):
        done = subprocess.run([sys.executable, "-m", "motune.cli", *args, "--storage", URL], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- the server itself restarted mid-sweep

@pytest.fixture
def own_server():
    """A PostgreSQL server of this test's own (so that restarting it disturbs no other test): its URL and a
    function that restarts it."""
    import glob
    import shutil
    import socket
    import tempfile

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins or not os.path.exists(f"{bins[-1]}/initdb"):
        pytest.skip("no PostgreSQL server binaries to start a server of this test's own")
    pg_bin, data = bins[-1], Path(tempfile.mkdtemp(prefix="motune-pg-restart-"))  # outside root's private tmp
    as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []  # initdb refuses to run as root
    if as_pg:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *args: subprocess.run([*as_pg, *args], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{pg_bin}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-h 127.0.0.1 -p {port} -k {data}"
    run(f"{pg_bin}/pg_ctl", "-D", str(data), "-l", str(data / "log"), "-w", "-o", options, "start")
    run(f"{pg_bin}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "restart")

    def restart() -> float:
        began = time.monotonic()
        run(f"{pg_bin}/pg_ctl", "-D", str(data), "-l", str(data / "log"), "-m", "fast", "-w", "-o", options,
            "restart")  # the log file keeps the server off this test's pipes
        return time.monotonic() - began

    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/restart", restart
    subprocess.run([*as_pg, f"{pg_bin}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(data, ignore_errors=True)


def test_workers_wait_for_a_restarted_server_and_lose_nothing(own_server):
    url, restart = own_server
    name = "restarted"

    def start(trials: int) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(HERE), "MOTUNE_TEST_STUDY": name, "MOTUNE_HEARTBEAT_S": "2",
               "MOTUNE_TEST_SLEEP_S": "1", "MOTUNE_RECONNECT_S": "60"}
        return subprocess.Popen([sys.executable, "-m", "motune.cli", "run", str(HERE / "fault_study.py"), "--trials",
                                 str(trials), "--storage", url, "-q"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def stored() -> list[optuna.trial.FrozenTrial]:
        try:
            return optuna.load_study(study_name=name, storage=url).get_trials()
        except Exception:  # noqa: BLE001  (the study not created yet, or the server restarting)
            return []

    workers = [start(6), start(6)]
    wait_until(lambda: sum(t.state.name == "COMPLETE" for t in stored()) >= 3, 240, "three completed trials")
    before = {t.number: (t.values, t.params) for t in stored() if t.state.name == "COMPLETE"}
    took_s = restart()  # every connection of both workers is cut; the server is away for about a second
    assert took_s < 30
    for w in workers:
        out, err = w.communicate(timeout=400)
        assert w.returncode == 0, err[-3000:]
    final = {t.number: t for t in stored()}
    assert not [t.number for t in final.values() if t.state.name in ("RUNNING", "WAITING")]
    complete = [t for t in final.values() if t.state.name == "COMPLETE"]
    assert len(complete) == 12, sorted((t.number, t.state.name, t.system_attrs.get("fail_reason"),
                                        t.user_attrs.get("error")) for t in final.values())
    for number, (values, params) in before.items():
        assert (final[number].values, final[number].params) == (values, params)  # nothing completed was lost
