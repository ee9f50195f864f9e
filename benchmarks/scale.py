"""Throughput of motune's worker pool: trials per second with 1, 2 and 4 worker processes, on an objective
that sleeps (I/O bound) and on a CPU-bound one, on SQLite and on PostgreSQL.

Each configuration runs ``motune run benchmarks/scale_study.py --trials N --workers W`` in a new study and is
repeated ``--repeats`` times, interleaved. Steady-state trials per second are counted in the window when every
worker was running (from the last worker's first trial start to the first worker's last trial end: the
trials wholly inside it over its length), so the workers' start-up (a Python process importing motune and the
study, 2-3 s each on 2 cores) is left out; ``trials_per_s`` from the first start to the last end, and the
whole command's ``wall_s``, are kept beside it. The per-trial bookkeeping overhead is what a trial took
besides its ``train``: its stored duration minus its ``train_s`` (sampling, storage writes, the small accuracy
measurement), median over all trials of a run. Speedup = steady trials per second with W workers / with 1
worker, medians over the repeats.

    python benchmarks/scale.py --postgres postgresql+psycopg2://... > benchmarks/results/scale.json

On a 2-core machine the CPU-bound objective cannot scale past 2 workers; the I/O-bound one shows what the
pool's coordination costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import optuna

HERE = Path(__file__).parent


def calibrate_spin(seconds: float) -> int:
    """Matrix products per trial that take about ``seconds`` on one thread here."""
    from threadpoolctl import threadpool_limits

    m = np.random.default_rng(0).normal(size=(96, 96))
    with threadpool_limits(limits=1):
        began, n = time.perf_counter(), 0
        while time.perf_counter() - began < 0.5:
            m = np.tanh(m @ m / 96.0)
            n += 1
    return max(1, int(n * seconds / 0.5))


def run_once(storage: str, mode: str, workers: int, trials: int, work_s: float, spin: int) -> dict:
    name = f"scale-{mode}-{workers}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "MOTUNE_SCALE_MODE": mode, "MOTUNE_SCALE_WORK_S": str(work_s), "MOTUNE_SCALE_SPIN": str(spin),
           "MOTUNE_SCALE_STUDY": name}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "motune.cli", "run", str(HERE / "scale_study.py"), "--trials",
                           str(trials), "--workers", str(workers), "--threads", "1", "--storage", storage, "-q"],
                          env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    frozen = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    complete = [t for t in frozen if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)).total_seconds()
    # steady state: from when the last worker began its first trial to when the first worker ended its last
    by_pid: dict = {}
    for t in complete:
        by_pid.setdefault(t.user_attrs["worker"]["pid"], []).append(t)
    window = (max(min(x.datetime_start for x in ts) for ts in by_pid.values()),
              min(max(x.datetime_complete for x in ts) for ts in by_pid.values()))
    length = (window[1] - window[0]).total_seconds()
    inside = [t for t in complete if window[0] <= t.datetime_start and t.datetime_complete <= window[1]]
    steady = len(inside) / length if length > 0 and inside else None
    overhead = [t.duration.total_seconds() - t.user_attrs["timing"]["train_s"] for t in complete]
    work = [t.user_attrs["timing"]["train_s"] for t in complete]
    return {"trials": len(complete), "span_s": span, "wall_s": wall, "trials_per_s": len(complete) / span,
            "steady_trials_per_s": steady, "steady_window_s": length, "steady_trials": len(inside),
            "overhead_ms_per_trial": 1000 * statistics.median(overhead),
            "train_s_per_trial": statistics.median(work),
            "pids": len({t.user_attrs["worker"]["pid"] for t in complete})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL (the SQLite arms run without one)")
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--work-s", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    spin = calibrate_spin(args.work_s)
    storages = {"sqlite": None, **({"postgres": args.postgres} if args.postgres else {})}
    runs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for kind, url in storages.items():
                for mode in ("io", "cpu"):
                    for workers in args.workers:
                        storage = url or f"sqlite:///{Path(tmp) / f'scale-{repeat}-{mode}-{workers}.db'}"
                        result = run_once(storage, mode, workers, args.trials, args.work_s, spin)
                        runs.setdefault(f"{kind}_{mode}_{workers}", []).append(result)
                        print(f"{kind} {mode} {workers} workers: {result['trials_per_s']:.2f} trials/s, overhead "
                              f"{result['overhead_ms_per_trial']:.1f} ms/trial", file=sys.stderr, flush=True)
    summary: dict = {}
    for key, results in runs.items():
        rates = [r["trials_per_s"] for r in results]
        steady = [r["steady_trials_per_s"] for r in results if r["steady_trials_per_s"]]
        summary[key] = {"trials_per_s_median": statistics.median(rates), "trials_per_s_range": [min(rates), max(rates)],
                        "steady_trials_per_s_median": statistics.median(steady) if steady else None,
                        "steady_trials_per_s_range": [min(steady), max(steady)] if steady else None,
                        "overhead_ms_per_trial_median": statistics.median(r["overhead_ms_per_trial"] for r in results),
                        "wall_s_median": statistics.median(r["wall_s"] for r in results)}
    for kind in storages:
        for mode in ("io", "cpu"):
            base = summary[f"{kind}_{mode}_1"]
            for workers in args.workers:
                row = summary[f"{kind}_{mode}_{workers}"]
                row["speedup"] = row["steady_trials_per_s_median"] / base["steady_trials_per_s_median"]
                row["speedup_first_start_to_last_end"] = row["trials_per_s_median"] / base["trials_per_s_median"]
    out = {
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]).replace(args.postgres or "\0", "POSTGRES_URL"),
        "machine": {"host_cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "trials": args.trials, "work_s_per_trial": args.work_s, "repeats": args.repeats,
        "note": "trials per second from the first trial's start to the last trial's end (worker start-up apart); "
                "overhead = a trial's stored duration minus its train time, median",
        "summary": summary,
        "runs": runs,
    }
    if args.postgres:
        out["speedup_4_workers_postgres_io"] = summary.get("postgres_io_4", {}).get("speedup")
    out["speedup_4_workers_sqlite_io"] = summary.get("sqlite_io_4", {}).get("speedup")
    out["overhead_ms_per_trial_per_worker"] = {k: v["overhead_ms_per_trial_median"] for k, v in summary.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
