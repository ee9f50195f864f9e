"""Storage on a real PostgreSQL server, shared by several worker processes.

Needs MOTUNE_TEST_POSTGRES_URL (scripts/test starts a throwaway server);
with MOTUNE_REQUIRE_POSTGRES=1 (as in CI) a missing server fails instead of skipping.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import motune as mt

from conftest import postgres_url

URL = postgres_url()
HERE = Path(__file__).parent

pytestmark = pytest.mark.postgres


@pytest.fixture(autouse=True)
def models_in_a_temporary_folder(tmp_path, monkeypatch):
    """A PostgreSQL study keeps its models in ./motune-artifacts by default: not in the checkout."""
    monkeypatch.setenv("MOTUNE_ARTIFACTS", str(tmp_path / "artifacts"))


def test_two_worker_processes_share_one_study():
    name = f"pg-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MOTUNE_TEST_STUDY": name, "PYTHONPATH": str(HERE)}
    cmd = [sys.executable, "-m", "motune.cli", "run", str(HERE / "study_file.py"), "--trials", "4", "--storage", URL, "-q"]
    workers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    result = mt.load_study(name, storage=URL)
    records = result.records()
    assert sorted(r.number for r in records) == list(range(8))
    assert all(r.state == "COMPLETE" for r in records)
    # the two workers did not suggest the same configurations
    assert len({r.params["C"] for r in records}) == 8
    assert len(result.front()) >= 1


def test_resume_checks_the_spec_on_postgres(task):
    from conftest import make_study

    name = f"pg-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MOTUNE_TEST_STUDY": name, "PYTHONPATH": str(HERE)}
    cmd = [sys.executable, "-m", "motune.cli", "run", str(HERE / "study_file.py"), "--trials", "1", "--storage", URL, "-q"]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    stored = mt.load_study(name, storage=URL)
    assert [str(c) for c in stored.constraints] == ["equalized_odds_difference <= 0.2"]
    other = make_study(task, URL, name=name, objectives=[mt.maximize("accuracy"), mt.minimize("latency_p95_ms")],
                       constraints=[mt.at_most("equalized_odds_difference", 0.1)])
    with pytest.raises(mt.SpecError, match="was created with objectives"):
        other.optimize(n_trials=1, show_progress=False)
    assert len(mt.load_study(name, storage=URL).records()) == 1


def test_unreachable_postgres_is_a_clear_error():
    with pytest.raises(mt.StorageError, match="cannot open storage 'postgresql\\+psycopg2://u:\\*\\*\\*@127.0.0.1:9/db'"):
        mt.load_study("x", storage="postgresql+psycopg2://u:pw@127.0.0.1:9/db")
