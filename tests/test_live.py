"""`motune serve`: the live view of a running sweep, read in a real headless Chromium while the study runs."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import wait_until
from test_browser import chromium

HERE = Path(__file__).parent


def motune(*args, env=None):
    full = {**os.environ, "PYTHONPATH": str(HERE), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "motune", *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def dom(url):
    """The page as Chromium has it once its scripts ran (the live note included)."""
    run = chromium("--virtual-time-budget=5000", "--window-size=1200,900", "--dump-dom", url)
    assert "<h1>" in run.stdout, run.stderr[-2000:]
    return run.stdout


def complete_in(page):
    found = re.search(r'id="motune-live"[^>]*>live: (\d+) trials(?:, (\d+) complete)?', page)
    assert found, page[-3000:]
    return int(found.group(2) or 0)


def test_the_live_view_follows_a_running_study_in_a_browser(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    run = motune("run", str(HERE / "fault_study.py"), "--trials", "6", "--storage", url, "-q",
                 env={"MOTUNE_TEST_STUDY": "live", "MOTUNE_TEST_SLEEP_S": "2"})
    server = None
    try:
        import optuna

        def completed():
            try:
                trials = optuna.load_study(study_name="live", storage=url).get_trials(deepcopy=False)
            except KeyError:
                return 0
            return sum(t.state.name == "COMPLETE" for t in trials)

        wait_until(lambda: completed() >= 1, 180, "a completed trial")
        server = motune("serve", "live", "--storage", url, "--port", "0", "--poll", "1")
        line = ""
        deadline = time.monotonic() + 120
        while "serving" not in line and time.monotonic() < deadline:
            line = server.stderr.readline()
            assert line or server.poll() is None, server.stderr.read()
        address = re.search(r"at (http://127\.0\.0\.1:\d+/)", line).group(1)

        first = dom(address)
        assert "<h1>live</h1>" in first and "Pareto front" in first
        seen = complete_in(first)
        assert 1 <= seen < 6  # the sweep is still running
        shown = re.search(r'"key": "([0-9a-f]{16})"', first).group(1)  # the state the page was rendered from
        state = json.loads(urllib.request.urlopen(address + "state").read())
        assert state["study"] == "live" and len(state["key"]) == 16

        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        time.sleep(1.5)  # past the server's poll interval
        later = json.loads(urllib.request.urlopen(address + "state").read())
        assert later["states"] == {"COMPLETE": 6} and later["key"] != shown
        last = dom(address)
        assert complete_in(last) == 6 and "Front (" in last and later["key"] in last
        assert urllib.request.urlopen(address + "healthz").read() == b"ok"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(address + "nothing")
    finally:
        for process in (run, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate(timeout=30)


def test_serve_refuses_a_study_that_is_not_there(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    import optuna

    optuna.create_study(study_name="other", storage=url)
    server = motune("serve", "missing", "--storage", url, "--port", "0")
    out, err = server.communicate(timeout=120)
    assert server.returncode == 2 and "missing" in err and "other" in err
