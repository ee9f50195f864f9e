import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from rich.console import Console

import motune as mt
from conftest import FAST_LATENCY, make_study, train
from motune.run.progress import TrialProgress


def test_a_study_runs_and_every_trial_carries_its_record(task, sqlite_url):
    study = make_study(task, sqlite_url, metrics=["latency_p95_ms", "robust_accuracy"], metric_options=FAST_LATENCY)
    result = study.optimize(n_trials=6, show_progress=False)
    trials = result.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    for t in trials:
        metrics = t.user_attrs["metrics"]
        assert t.values == [metrics["accuracy"], metrics["demographic_parity_difference"]]
        keys = [c.key for c in study.constraints]
        expected = [metrics["equalized_odds_difference"] - 0.5, 0.6 - metrics["balanced_accuracy"]]
        assert [t.system_attrs[f"constraints:{k}"] for k in keys] == pytest.approx(expected)
        assert t.system_attrs["constraints"] == pytest.approx(expected)  # the legacy list, for the dashboard
        assert {row["group"] for row in t.user_attrs["fairness"]["by_group"]} == {"a", "b"}
        lat = t.user_attrs["latency"]
        assert lat["batch_1"]["count"] >= 5 and lat["device"] == "cpu" and lat["method"] == "perf_counter_ns"
        assert "threads" in lat and lat["batch"]["batch_size"] == 32
        assert t.user_attrs["robustness"]["noise"] == 0.1
        prov = t.user_attrs["provenance"]
        assert prov["seed"] == t.number and prov["data"]["fingerprint"] == task.fingerprint
        assert {"optuna", "scikit-learn", "fairlearn", "motune"} <= set(prov["versions"]) and prov["python"]
        assert t.user_attrs["timing"]["train_s"] > 0
    assert result.study.metric_names == ["accuracy", "demographic_parity_difference"]


def test_the_front_is_feasible_and_non_dominated(task, sqlite_url):
    # a tight fairness bound makes some trials infeasible
    study = make_study(task, sqlite_url, constraints=[mt.at_most("equalized_odds_difference", 0.12)])
    result = study.optimize(n_trials=12, show_progress=False)
    trials = result.trials()
    front = result.front()
    feasible = trials[trials["equalized_odds_difference"] <= 0.12]
    assert 0 < len(front) <= len(feasible) < len(trials), "the bound should split the trials"
    assert (front["equalized_odds_difference"] <= 0.12).all()
    # no feasible trial dominates a front trial (accuracy up, demographic parity down)
    for _, f in front.iterrows():
        better = feasible[(feasible.accuracy >= f.accuracy) & (feasible.demographic_parity_difference <= f.demographic_parity_difference)
                          & ((feasible.accuracy > f.accuracy) | (feasible.demographic_parity_difference < f.demographic_parity_difference))]
        assert better.empty
    # every feasible trial not on the front is dominated by a front trial
    for _, t in feasible[~feasible.trial.isin(front.trial)].iterrows():
        assert ((front.accuracy >= t.accuracy) & (front.demographic_parity_difference <= t.demographic_parity_difference)).any()
    assert list(front.accuracy) == sorted(front.accuracy, reverse=True)
    summary = result.summary()
    assert summary["infeasible"] == len(trials) - len(feasible) and summary["on_front"] == len(front)
    assert {"params_C", "params_fit_intercept"} <= set(front.columns)


def test_failed_trials_record_the_reason_and_the_study_goes_on(task, sqlite_url):
    def flaky_train(params, task, ctx):
        if ctx.trial_number == 1:
            raise RuntimeError("out of memory on purpose")
        if ctx.trial_number == 2:
            return None
        if ctx.trial_number == 3:
            class NanModel:
                def predict(self, X):
                    return np.full(len(X), np.nan)
            return NanModel()
        return train(params, task, ctx)

    result = make_study(task, sqlite_url, train=flaky_train).optimize(n_trials=5, show_progress=False)
    by_number = {r.number: r for r in result.records()}
    assert [by_number[i].state for i in range(5)] == ["COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE"]
    assert by_number[1].error == "RuntimeError: out of memory on purpose"
    assert "train() returned None" in by_number[2].error
    assert "NaN" in by_number[3].error
    assert "out of memory on purpose" in by_number[1].attrs["traceback"]
    assert result.summary()["failed"] == 3
    assert set(result.front().trial) <= {0, 4}


def test_a_nan_objective_fails_the_trial(task, sqlite_url):
    @mt.register_metric("always_nan", key="always_nan")
    def always_nan(model, task):
        return {"always_nan": float("nan")}

    try:
        study = make_study(task, sqlite_url, objectives=[mt.maximize("accuracy"), mt.minimize("always_nan")])
        result = study.optimize(n_trials=2, show_progress=False)
    finally:
        mt.metrics.unregister_metric("always_nan")
    assert [r.state for r in result.records()] == ["FAIL", "FAIL"]
    assert "always_nan=nan" in result.records()[0].error


def test_resume_same_spec_and_refuse_a_different_one(task, sqlite_url):
    make_study(task, sqlite_url).optimize(n_trials=2, show_progress=False)
    result = make_study(task, sqlite_url).optimize(n_trials=2, show_progress=False)
    assert len(result.records()) == 4
    changed = [
        dict(objectives=[mt.maximize("accuracy"), mt.minimize("equalized_odds_difference")]),
        dict(objectives=[mt.maximize("accuracy")]),
        dict(constraints=[mt.at_most("equalized_odds_difference", 0.1), mt.at_least("balanced_accuracy", 0.6)]),
        dict(constraints=[]),
    ]
    for overrides in changed:
        with pytest.raises(mt.SpecError, match="was created with objectives .* but this definition has"):
            make_study(task, sqlite_url, **overrides).optimize(n_trials=1, show_progress=False)
    assert len(mt.load_study("synthetic", storage=sqlite_url).records()) == 4  # nothing ran


def test_resume_refuses_other_data_split_or_metric_options(task, frame, sqlite_url):
    make_study(task, sqlite_url).optimize(n_trials=1, show_progress=False)
    other_rows = mt.Task.from_frame(frame.iloc[:500], label="y", sensitive="group", name="synthetic")
    for study, message in [
        (make_study(other_rows, sqlite_url), "other data"),
        (make_study(task, sqlite_url, split="test"), "a split to measure on \\('valid', now 'test'\\)"),
        (make_study(task, sqlite_url, metrics=["robust_accuracy"], metric_options={"robustness": {"noise": 0.3}}),
         "metric options"),
    ]:
        with pytest.raises(mt.SpecError, match=message):
            study.optimize(n_trials=1, show_progress=False)


def test_resumed_runs_do_not_repeat_suggestions(task, sqlite_url):
    make_study(task, sqlite_url).optimize(n_trials=3, show_progress=False)
    result = make_study(task, sqlite_url).optimize(n_trials=3, show_progress=False)
    values = [r.params["C"] for r in result.records()]
    assert len(set(values)) == 6, values
    # a fresh study on one machine is reproducible from its seed
    again = make_study(task, optuna.storages.InMemoryStorage()).optimize(n_trials=3, show_progress=False)
    assert [r.params["C"] for r in again.records()] == values[:3]


def test_parallel_threads(task, sqlite_url):
    result = make_study(task, sqlite_url).optimize(n_trials=6, n_jobs=2, show_progress=False)
    assert result.summary()["complete"] == 6 and len({r.params["C"] for r in result.records()}) == 6


class SeenConstraints(optuna.samplers.RandomSampler):
    """A sampler that records the constraints of every finished trial it is shown."""

    seen: list = []

    def sample_independent(self, study, trial, name, distribution):
        SeenConstraints.seen += [dict(t.constraints) for t in study._get_trials(deepcopy=False, use_cache=True)
                                 if t.state.is_finished()]
        return super().sample_independent(study, trial, name, distribution)


def test_every_sampler_sees_each_constraint_once_while_the_dashboard_keeps_its_list(task):
    SeenConstraints.seen = []
    study = make_study(task, optuna.storages.InMemoryStorage(), sampler=SeenConstraints(seed=0))
    stored = study.optimize(n_trials=3, show_progress=False).study.trials
    assert all(len(t.system_attrs["constraints"]) == 2 for t in stored)  # the list optuna-dashboard 0.21 reads
    assert all(len(t.constraints) == 4 for t in stored)  # Optuna itself merges both forms
    assert SeenConstraints.seen and all(sorted(c) == sorted(study.constraints[i].key for i in range(2))
                                        for c in SeenConstraints.seen)  # the sampler: each once, by name
    forced = make_study(task, optuna.storages.InMemoryStorage(), dashboard_constraints=False)
    assert "constraints" not in forced.optimize(n_trials=1, show_progress=False).study.trials[0].system_attrs


def test_a_sampler_factory_keeps_per_trial_seeding(task, sqlite_url):
    made = []

    def factory(seed):
        made.append(seed)
        return optuna.samplers.RandomSampler(seed=seed)

    first = make_study(task, sqlite_url, sampler=factory).optimize(n_trials=3, show_progress=False)
    again = make_study(task, optuna.storages.InMemoryStorage(), sampler=factory).optimize(n_trials=3,
                                                                                          show_progress=False)
    assert len(set(made)) == 3 and made[:3] == made[3:]  # one seed per trial number, the same in both runs
    assert [r.params for r in first.records()] == [r.params for r in again.records()]
    with pytest.raises(TypeError, match="function seed -> sampler"):
        make_study(task, optuna.storages.InMemoryStorage(), sampler="tpe")


def test_a_plain_optuna_study_of_the_same_name_is_not_resumed(task, sqlite_url):
    plain = optuna.create_study(study_name="synthetic", storage=sqlite_url, directions=["maximize", "minimize"])
    plain.optimize(lambda t: (t.suggest_float("x", 0, 1), 0.0), n_trials=1)
    with pytest.raises(mt.SpecError, match="not created by motune"):
        make_study(task, sqlite_url).optimize(n_trials=1, show_progress=False)


@pytest.mark.parametrize(
    "url, message",
    [
        ("sqlite:////nonexistent-dir/sub/motune.db", "unable to open database file"),
        ("motune.db", "expected a URL"),
        ("postgresql+nosuchdriver://u:secret@127.0.0.1:1/db", "cannot open storage"),
    ],
)
def test_storage_that_cannot_be_opened(task, url, message):
    with pytest.raises(mt.StorageError, match=message) as info:
        make_study(task, url).optimize(n_trials=1, show_progress=False)
    assert "secret" not in str(info.value)


def test_in_memory_storage_object_and_timeout(task):
    result = make_study(task, optuna.storages.InMemoryStorage()).optimize(timeout=0.5, show_progress=False)
    assert result.summary()["complete"] >= 1
    with pytest.raises(ValueError, match="n_trials or timeout"):
        make_study(task, optuna.storages.InMemoryStorage()).optimize(show_progress=False)
    with pytest.raises(ValueError, match="positive integer"):
        make_study(task, optuna.storages.InMemoryStorage()).optimize(n_trials=0)


def test_default_storage_is_an_sqlite_file_in_the_working_directory(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MOTUNE_STORAGE", raising=False)
    make_study(task, None).optimize(n_trials=1, show_progress=False)
    assert (tmp_path / "motune.db").is_file()
    assert mt.load_study("synthetic").summary()["complete"] == 1


def test_load_study_reopens_from_storage_alone_in_a_fresh_process(task, sqlite_url):
    make_study(task, sqlite_url).optimize(n_trials=3, show_progress=False)
    code = (
        "import json, sys, motune as mt; r = mt.load_study('synthetic', storage=sys.argv[1]);"
        "print(json.dumps({'front': r.front().trial.tolist(), 'summary': r.summary(),"
        " 'objectives': [str(o) for o in r.objectives]}))"
    )
    out = subprocess.run([sys.executable, "-c", code, sqlite_url], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    here = mt.load_study("synthetic", storage=sqlite_url)
    assert loaded["front"] == here.front().trial.tolist() and loaded["summary"]["complete"] == 3
    assert loaded["objectives"] == ["maximize accuracy", "minimize demographic_parity_difference"]
    with pytest.raises(mt.SpecError, match="no study named 'other'.*synthetic"):
        mt.load_study("other", storage=sqlite_url)


def test_context_gives_seed_and_records_user_values(task, sqlite_url):
    seen = []

    def recording_train(params, task, ctx):
        seen.append((ctx.trial_number, ctx.seed, dict(ctx.params)))
        ctx.set_attr("n_features", np.int64(4))
        return train(params, task, ctx)

    result = make_study(task, sqlite_url, train=recording_train, seed=100).optimize(n_trials=2, show_progress=False)
    assert [(n, s) for n, s, _ in seen] == [(0, 100), (1, 101)]
    assert set(seen[0][2]) == {"C", "fit_intercept"}
    assert result.records()[0].attrs["user:n_features"] == 4


def test_progress_lines_when_not_a_terminal(task):
    from motune.results import record_of

    buffer = io.StringIO()
    study = make_study(task, optuna.storages.InMemoryStorage())
    progress = TrialProgress(study, total=3, console=Console(file=buffer, width=300))
    ostudy = optuna.create_study(directions=study.directions)
    keys = [c.key for c in study.constraints]

    def objective(trial):
        if trial.number == 1:
            raise ValueError("broken")
        for key in keys:
            trial.set_constraint(key, -1.0)
        values = (0.8 + 0.01 * trial.number, 0.1)
        trial.set_user_attr("metrics", {"accuracy": values[0], "demographic_parity_difference": values[1]})
        return values

    progress.on_study_start(None)
    ostudy.optimize(objective, n_trials=3, catch=(ValueError,),
                    callbacks=[lambda _s, t: progress.on_trial_end(record_of(t, keys))])
    progress.on_study_end(None)
    lines = buffer.getvalue().strip().splitlines()
    assert lines[0].startswith("trial 0 complete") and "done 1/3" in lines[0]
    assert lines[1].startswith("trial 1 fail") and "failed 1" in lines[1]
    assert "front 1" in lines[2] and "best feasible of each objective (any trial): accuracy 0.82" in lines[2]
    assert progress.counts == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 1}


def test_optuna_dashboard_shows_the_constraints(task, sqlite_url):
    """optuna-dashboard 0.21 reads only the legacy `constraints` attribute: check its own API."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    study = make_study(task, sqlite_url, constraints=[mt.at_most("equalized_odds_difference", 0.12)])
    result = study.optimize(n_trials=6, show_progress=False)
    app = wsgi(sqlite_url)
    environ = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{result.study._study_id}"
    environ["QUERY_STRING"] = "after=0"
    status = []
    body = b"".join(app(environ, lambda s, h, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), body[:3000]
    detail = json.loads(body)
    shown = {t["number"]: t["constraints"] for t in detail["trials"]}
    for r in result.records():
        assert shown[r.number] == pytest.approx(list(r.violations.values()))
        assert (shown[r.number][0] > 0) == (not r.feasible)
    assert any(not r.feasible for r in result.records()), "want an infeasible trial to show"
    assert detail["objective_names"] == ["accuracy", "demographic_parity_difference"]


def test_feasible_hypervolume_against_a_hand_computation(task):
    result = make_study(task, optuna.storages.InMemoryStorage(),
                        constraints=[mt.at_most("equalized_odds_difference", 0.12)]).optimize(n_trials=8, show_progress=False)
    reference = {"accuracy": 0.5, "demographic_parity_difference": 0.5}
    feasible = [(r.metrics["accuracy"], r.metrics["demographic_parity_difference"]) for r in result.records() if r.feasible]
    # 2-D: sweep by accuracy, best first, adding each point's new area below the reference
    area, best_dp = 0.0, 0.5
    for acc, dp in sorted(feasible, reverse=True):
        if dp < best_dp:
            area += (acc - 0.5) * (best_dp - dp)
            best_dp = dp
    assert area > 0 and result.hypervolume(reference) == pytest.approx(area)
    assert result.hypervolume(reference, trials=[]) == 0.0
def _motune(*args, cwd=None):
    """The CLI as a user runs it: a subprocess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "motune.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)



def test_an_unreachable_ray_address_fails_within_its_timeout(task, tmp_path):
    import socket
    import time

    from motune.run.cluster import reachable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    began = time.monotonic()
    with pytest.raises(mt.SpecError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port} within 1.5 s"):
        reachable(f"127.0.0.1:{port}", 1.5)
    assert time.monotonic() - began < 6
    with pytest.raises(mt.SpecError, match="give 'auto', 'local', HOST:PORT"):
        reachable("nowhere", 1)
    study = tmp_path / "ray_study.py"
    study.write_text("import sys\nsys.path.insert(0, %r)\nfrom conftest import make_study, make_frame\n"
                     "import motune as mt\n"
                     "task = mt.Task.from_frame(make_frame(), label='y', sensitive='group', seed=0, name='s')\n"
                     "study = make_study(task, 'sqlite:///%s')\n" % (str(Path(__file__).parent), tmp_path / "r.db"))
    began = time.monotonic()
    out = _motune("run", str(study), "--trials", "1", "--ray", f"127.0.0.1:{port}", "--ray-timeout", "2")
    assert out.returncode == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port} within 2 s" in out.stderr
    assert time.monotonic() - began < 60


# ---------------------------------------------------------------- GPU memory, Ray's GPUs, one GPU per plain run

class FakeCuda:
    """torch.cuda's memory calls, for a CPU machine: what a trial reserved, its peaks, and empty_cache."""

    def __init__(self):
        self.emptied = 0
        self.reserved = 100 * 2**20

    def is_initialized(self):
        return True

    def memory_reserved(self):
        return self.reserved

    def memory_allocated(self):
        return 10 * 2**20

    def reset_peak_memory_stats(self):
        self.reserved = 100 * 2**20

    def max_memory_allocated(self):
        return 512 * 2**20

    def max_memory_reserved(self):
        return 1024 * 2**20

    def empty_cache(self):
        self.emptied += 1
        self.reserved = 0


def test_every_trial_records_its_gpu_memory_and_frees_what_it_left(task, monkeypatch):
    import gc
    import weakref

    import torch

    from motune.run import trial as trial_module

    fake = FakeCuda()
    monkeypatch.setattr(trial_module, "_cuda", lambda: fake)
    left = []

    class Big:
        pass

    def train_and_fail(params, task_, ctx):
        big = Big()  # held by this frame: alive while Optuna keeps the trial's exception
        left.append(weakref.ref(big))
        if ctx.trial_number == 0:
            raise RuntimeError("a plain failure")
        return train(params, task_, ctx)

    gc.disable()  # only motune's collection after the trial may free it
    try:
        result = make_study(task, optuna.storages.InMemoryStorage(), train=train_and_fail).optimize(
            n_trials=2, show_progress=False)
        assert left[0]() is None  # the failed trial's frame (and what it held) was freed before the next trial
    finally:
        gc.enable()
    assert fake.emptied == 2  # the caching allocator gave its blocks back after each trial
    memory = result.records()[1].attrs["gpu_memory"]
    assert memory == {"reserved_mb_at_start": 100.0, "allocated_mb_at_start": 10.0, "peak_allocated_mb": 512.0,
                      "peak_reserved_mb": 1024.0}
    assert torch.cuda.is_initialized() is False  # nothing here started CUDA for real


def test_ray_workers_get_whole_gpus_or_an_even_share_and_cpu_workers_see_none():
    from motune.run.cluster import check_gpus_per_worker, worker_environment

    assert check_gpus_per_worker(0.5, 2) == 0.5 and check_gpus_per_worker(2, 4) == 2.0
    for bad, says in ((1.5, "part of a second GPU"), (0.4, "divide it evenly"), (-1, ">= 0"), (3, "has 2 GPU")):
        with pytest.raises(mt.SpecError, match=says):
            check_gpus_per_worker(bad, 2)
    assert worker_environment(0)["CUDA_VISIBLE_DEVICES"] == ""  # Ray leaves it unset: it would see every GPU
    assert "CUDA_VISIBLE_DEVICES" not in worker_environment(1)  # Ray sets it to the GPU it assigned


def test_a_plain_run_on_a_box_of_several_gpus_uses_one(monkeypatch):
    import importlib

    run_optimize = importlib.import_module("motune.run.optimize")  # the module (motune.run.optimize is also a function)
    for name in ("CUDA_VISIBLE_DEVICES", "MOTUNE_WORKER", "MOTUNE_ALL_GPUS"):
        monkeypatch.setenv(name, "")  # recorded, so that undoing restores it as it was (delenv of an unset
        monkeypatch.delenv(name)      # name records nothing, and pin_one_gpu's own setting would leak)
    monkeypatch.setattr(run_optimize, "visible_gpus", lambda: ["0", "1", "2", "3"])
    note = run_optimize.pin_one_gpu()
    assert "uses GPU 0 of the 4 here" in note and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("MOTUNE_ALL_GPUS", "1")
    assert run_optimize.pin_one_gpu() is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.delenv("MOTUNE_ALL_GPUS")
    monkeypatch.setenv("MOTUNE_WORKER", '{"index": 0, "gpus": ["2"]}')  # a pool's worker: its GPU is set already
    assert run_optimize.pin_one_gpu() is None


def test_progress_counts_a_resumed_study_as_the_front_does(task, sqlite_url, capsys):
    study = make_study(task, sqlite_url)
    study.optimize(n_trials=4, show_progress=False)
    result = study.optimize(n_trials=2, show_progress=True)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "done 2/2 (+4 stored)" in last, last
    assert f"front {len(result.front())} " in last, last  # the study's front, not this run's two trials
    failed = sum(r.state == "FAIL" for r in result.records())
    assert f"failed {failed} " in last


def test_a_long_trial_prints_a_line_while_it_runs_with_its_last_report(task, monkeypatch, capsys):
    import time

    monkeypatch.setenv("MOTUNE_PROGRESS_S", "0.3")

    def slow(params, task_, ctx):
        for step in range(1, 8):
            time.sleep(0.2)
            ctx.report(step, metrics={"accuracy": 0.5 + step / 100})
        return train(params, task_, ctx)

    make_study(task, optuna.storages.InMemoryStorage(), train=slow, pruning=None).optimize(n_trials=1,
                                                                                          show_progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "still running" in line]
    assert lines and lines[0].startswith("trial 0 still running (")
    assert any("last report at step" in line and "accuracy 0.5" in line for line in lines), lines


def test_quiet_prints_nothing_of_optunas(tmp_path):
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": str(here), "MOTUNE_TEST_STUDY": "quiet"}
    done = subprocess.run([sys.executable, "-m", "motune", "run", str(here / "fault_study.py"), "--trials", "2",
                           "--storage", f"sqlite:///{tmp_path / 'q.db'}", "-q"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Trial 0 finished" not in done.stderr and "A new study created" not in done.stderr, done.stderr
    assert "done " not in done.stderr  # motune's own lines are quiet too
