"""Per-trial overhead of motune over a bare Optuna loop.

Both arms optimise the same trivial two-objective problem with one
constraint (x, y in [0, 1]; maximize x, minimize (1 - x)^2 + y; y <= 0.8),
with the same seeded RandomSampler (so sampler cost is equal and small), for
N trials, on in-memory storage and on a fresh SQLite file. The bare arm
calls ``trial.suggest_float`` and ``trial.set_constraint`` and returns the
values. The motune arm runs a :class:`motune.Study` whose "model" holds the
suggested numbers and whose metrics read them, so what it adds is motune
itself: the spec, the train / measure dispatch, the constraint (also in the
legacy attribute optuna-dashboard reads), the metric, timing and provenance
records, and the progress callback (silent). ``measure_by_group`` is off so
that no model is evaluated; the cost of the default per-group fairness
measurement on a small task is reported separately.

Each arm runs ``--repeats`` times, interleaved; per-trial times are medians. The storage round trips
per trial (database sessions Optuna's RDB storage opens) are counted on one more SQLite run of each arm.

    python benchmarks/overhead.py --trials 500 --repeats 3 > benchmarks/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

import motune as mt
from motune.metrics.registry import measure
from motune.run import open_storage

BOUND = 0.8


def bare_objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    y = trial.suggest_float("y", 0.0, 1.0)
    trial.set_constraint("y", y - BOUND)
    return x, (1.0 - x) ** 2 + y


class Point:
    """The motune arm's "model": the suggested numbers."""

    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y

    def predict(self, X):
        return np.zeros(len(X), dtype=int)


@mt.register_metric(("bench_f1", "bench_f2", "bench_y"), key="bench")
def bench_metrics(model, task):
    return {"bench_f1": model.x, "bench_f2": (1.0 - model.x) ** 2 + model.y, "bench_y": model.y}


def motune_space(trial):
    trial.suggest_float("x", 0.0, 1.0)
    trial.suggest_float("y", 0.0, 1.0)


def motune_train(params, task, ctx):
    return Point(params["x"], params["y"])


def tiny_task() -> mt.Task:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"f": rng.normal(size=n), "g": rng.choice(["a", "b"], size=n), "y": rng.integers(0, 2, size=n)})
    return mt.Task.from_frame(frame, label="y", sensitive="g", name="tiny")


def run_bare(storage, n_trials: int, seed: int) -> float:
    study = optuna.create_study(directions=["maximize", "minimize"], storage=storage,
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    began = time.perf_counter()
    study.optimize(bare_objective, n_trials=n_trials)
    return (time.perf_counter() - began) / n_trials


def run_motune(storage, n_trials: int, seed: int, task: mt.Task, name: str) -> float:
    study = mt.Study(
        name=name, task=task, space=motune_space, train=motune_train,
        objectives=[mt.maximize("bench_f1"), mt.minimize("bench_f2")],
        constraints=[mt.at_most("bench_y", BOUND)],
        storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed), measure_by_group=False,
    )
    began = time.perf_counter()
    study.optimize(n_trials=n_trials, show_progress=False)
    return (time.perf_counter() - began) / n_trials


def sessions_per_trial(run: Any, n_trials: int = 100) -> float:
    """Database sessions (transactions) per trial of ``run(n_trials)``: Optuna's RDB storage opens one per
    storage call that reaches the database."""
    import contextlib

    from optuna.storages._rdb import storage as rdb

    count = {"sessions": 0}
    original = rdb._create_scoped_session

    @contextlib.contextmanager
    def counted(*args: Any, **kwargs: Any) -> Any:
        count["sessions"] += 1
        with original(*args, **kwargs) as session:
            yield session

    rdb._create_scoped_session = counted
    try:
        run(n_trials)
    finally:
        rdb._create_scoped_session = original
    return count["sessions"] / n_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    task = tiny_task()
    arms = ("bare_inmemory", "motune_inmemory", "bare_sqlite", "bare_sqlite_same_storage", "motune_sqlite")
    per_trial: dict[str, list[float]] = {k: [] for k in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            per_trial["bare_inmemory"].append(run_bare(optuna.storages.InMemoryStorage(), args.trials, rep))
            per_trial["motune_inmemory"].append(
                run_motune(optuna.storages.InMemoryStorage(), args.trials, rep, task, f"m{rep}"))
            per_trial["bare_sqlite"].append(run_bare(f"sqlite:///{Path(tmp) / f'bare{rep}.db'}", args.trials, rep))
            same = open_storage(f"sqlite:///{Path(tmp) / f'same{rep}.db'}")  # WAL + heartbeat, as motune opens it
            per_trial["bare_sqlite_same_storage"].append(run_bare(same, args.trials, rep))
            per_trial["motune_sqlite"].append(
                run_motune(f"sqlite:///{Path(tmp) / f'motune{rep}.db'}", args.trials, rep, task, f"m{rep}"))
            print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)

    # The default per-trial measurement of accuracy + fairlearn per-group table, on the tiny task.
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier(strategy="stratified", random_state=0).fit(task.X_train, task.y_train)
    names = list(mt.spec.ALWAYS_MEASURED)
    measure(model, task, names)
    began = time.perf_counter()
    for _ in range(50):
        measure(model, task, names)
    by_group_ms = (time.perf_counter() - began) / 50 * 1000

    ms = {k: statistics.median(v) * 1000 for k, v in per_trial.items()}
    with tempfile.TemporaryDirectory() as tmp:
        round_trips = {
            "bare_sqlite_same_storage": sessions_per_trial(lambda n: run_bare(open_storage(
                f"sqlite:///{Path(tmp) / 'count-bare.db'}"), n, 0)),
            "motune_sqlite": sessions_per_trial(lambda n: run_motune(f"sqlite:///{Path(tmp) / 'count.db'}", n, 0, task,
                                                                     "count")),
        }
    result = {
        "overhead_ms_per_trial_inmemory": ms["motune_inmemory"] - ms["bare_inmemory"],
        "overhead_ms_per_trial_sqlite": ms["motune_sqlite"] - ms["bare_sqlite"],
        "overhead_ms_per_trial_sqlite_same_storage": ms["motune_sqlite"] - ms["bare_sqlite_same_storage"],
        "notes": (
            "overhead_ms_per_trial_sqlite compares with a bare loop on Optuna's default SQLite settings; "
            "motune opens SQLite in WAL mode with synchronous=NORMAL and an Optuna heartbeat (a trial whose "
            "process died is marked failed), so overhead_ms_per_trial_sqlite_same_storage runs the bare loop "
            "on a storage opened exactly as motune opens it: that difference is motune's own code and records."
        ),
        "ms_per_trial": ms,
        "storage_round_trips_per_trial": round_trips,
        "ms_per_trial_all_repeats": {k: [round(x * 1000, 4) for x in v] for k, v in per_trial.items()},
        "by_group_measurement_ms_per_trial": by_group_ms,
        "by_group_task_rows_valid": len(task.y_valid),
        "goal_ms_per_trial": 2.0,
        "trials": args.trials,
        "repeats": args.repeats,
        "sampler": "RandomSampler (both arms)",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": __import__("os").cpu_count()},
        "versions": {"motune": mt.__version__, "optuna": optuna.__version__},
        "command": "python benchmarks/overhead.py --trials %d --repeats %d > benchmarks/results/overhead.json"
        % (args.trials, args.repeats),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
