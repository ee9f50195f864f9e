"""Which forecast of a trial's final values, and which risk? Chosen on recorded learning curves that the
pruning benchmark does not score.

Input: unpruned runs (``benchmarks/pruning.py --arms none``) on the selection seeds 0-2 of every problem,
64 trials each. Two measurements:

1. **Forecast models** (``MODELS``), replayed trial by trial as a study would see them (trial ``j``
   forecast at each of its epochs from the curves of trials ``0..j-1``): coverage of the 90 % interval
   (nominal 0.90), the share of intervals the model could close, the mean width and the interval score
   (Gneiting & Raftery 2007: width plus 20 times any miss; lower is better), per problem, and the
   milliseconds per forecast.

   - ``peers_local``: motune's (:mod:`motune.pruning.forecast`): the completed trials' changes from the
     same epoch to their end, weighted by how alike their state was, corrected by a weighted linear fit of
     change on state (local linear regression), at least as wide as the trial's report-to-report noise;
   - ``peers_kernel``: the same without the linear correction;
   - ``peers_all``: the same changes, every completed trial alike (persistence plus the empirical spread of
     what happened next: split-conformal prediction);
   - ``regression``: each metric's final value regressed on its state across the completed trials, the
     residuals as the spread (conformal);
   - ``curve_fit``: a parametric curve ``a + b t^-c`` (c in 0.5, 1, 2, after Domhan et al. 2015) fitted to
     the trial's own curve and extrapolated, the completed trials' extrapolation errors as the spread.

2. **The rule's risk**: :class:`motune.pruning.ForecastAware` replayed over the same curves at each
   ``--risks`` value (its decisions change what later trials see, as in a study): the share of final-front
   trials it would stop (false prunes), the epochs it would save and the coverage of its stored forecasts.

    python benchmarks/forecast.py --runs benchmarks/results/pruning_selection_runs.jsonl.gz \\
        > benchmarks/results/forecast.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pruning as bench  # noqa: E402
from pruning_problems import MAX_EPOCHS, PROBLEMS  # noqa: E402

from motune.pruning import ForecastAware  # noqa: E402
from motune.pruning import forecast as fc  # noqa: E402

ALPHA = 0.1  # the interval's miss share (90 % intervals)


def _metrics(problem: Any) -> list[str]:
    return list(dict.fromkeys([o.metric for o in problem.objectives] + [c.metric for c in problem.constraints]))


def peers_local(step, reports, peers, metrics):
    return fc.forecast(step, reports, peers, metrics)


def peers_kernel(step, reports, peers, metrics):
    return fc.forecast(step, reports, peers, metrics, local_linear=False)


def peers_all(step, reports, peers, metrics):
    return fc.forecast(step, reports, peers, metrics, neighbours=10**6, min_bandwidth=1e12, local_linear=False)


def _finals(step, peers, metrics, window=3):
    rows, finals = [], []
    for p in peers:
        state = fc.state_of(p.reports, step, metrics, window)
        if state is not None:
            rows.append(state)
            finals.append([p.final[m] for m in metrics])
    return np.asarray(rows), np.asarray(finals)


def regression(step, reports, peers, metrics):
    state = fc.state_of(reports, step, metrics, 3)
    x, y = _finals(step, peers, metrics)
    if state is None or len(x) < 3:
        return None
    samples = np.empty_like(y)
    for j in range(len(metrics)):
        design = np.column_stack([np.ones(len(x)), x[:, j]])
        coef, *_ = np.linalg.lstsq(design, y[:, j], rcond=None)
        samples[:, j] = coef[0] + coef[1] * state[j] + (y[:, j] - design @ coef)
    return fc.Forecast(step, tuple(metrics), state, samples, np.ones(len(x)), 1.0, np.ones(len(metrics)))


def _extrapolate(values: np.ndarray, steps: np.ndarray, target: int) -> float:
    if len(values) < 3:
        return float(values[-1])
    best, best_sse = float(values[-1]), np.inf
    for c in (0.5, 1.0, 2.0):
        design = np.column_stack([np.ones(len(steps)), steps ** -c])
        coef, *_ = np.linalg.lstsq(design, values, rcond=None)
        sse = float(np.sum((design @ coef - values) ** 2))
        if sse < best_sse:
            best, best_sse = float(coef[0] + coef[1] * target ** -c), sse
    return best


def _curve_point(reports, step, metrics):
    steps = np.array(sorted(s for s in reports if s <= step), dtype=float)
    return np.array([_extrapolate(np.array([reports[int(s)][m] for s in steps]), steps, MAX_EPOCHS)
                     for m in metrics])


def curve_fit(step, reports, peers, metrics):
    if step not in reports:
        return None
    usable = [p for p in peers if step in p.reports]
    if len(usable) < 3:
        return None
    errors = np.array([[p.final[m] for m in metrics] for p in usable]) - \
        np.array([_curve_point(p.reports, step, metrics) for p in usable])
    point = _curve_point(reports, step, metrics)
    return fc.Forecast(step, tuple(metrics), point, point + errors, np.ones(len(usable)), 1.0,
                       np.ones(len(metrics)))


MODELS = {"peers_local": peers_local, "peers_kernel": peers_kernel, "peers_all": peers_all, "regression": regression,
          "curve_fit": curve_fit}


def score_model(model, runs, problem) -> dict[str, Any]:
    metrics = _metrics(problem)
    held, widths, scores, opened, made, ms = [], [], [], 0, 0, []
    for run in runs:
        trials = run["trials"]
        curves = [fc.Curve(t["reports"], t["metrics"]) for t in trials]
        for j, t in enumerate(trials):
            for step in range(1, MAX_EPOCHS):
                reports = {s: v for s, v in t["reports"].items() if s <= step}
                began = time.perf_counter()
                f = model(step, reports, curves[:j], metrics)
                ms.append(1000 * (time.perf_counter() - began))
                if f is None:
                    continue
                made += 1
                for m, (low, high) in f.interval().items():
                    if low is None or high is None:
                        opened += 1
                        continue
                    y = t["metrics"][m]
                    held.append(low <= y <= high)
                    widths.append(high - low)
                    scores.append((high - low) + (2 / ALPHA) * (max(0.0, low - y) + max(0.0, y - high)))
    closed = len(held)
    return {"coverage_90": statistics.fmean(held) if held else None, "closed": closed, "open": opened,
            "closed_share": closed / (closed + opened) if closed + opened else None,
            "mean_width": statistics.fmean(widths) if widths else None,
            "interval_score": statistics.fmean(scores) if scores else None,
            "forecasts": made, "ms_per_forecast": {"median": statistics.median(ms), "p95": float(np.percentile(ms, 95))}}


def score_risk(risk: float, runs, problem) -> dict[str, Any]:
    per_run = [bench.replay(problem, ForecastAware(risk=risk), run["trials"]) for run in runs]  # the rest default
    front = sum(p["front"] for p in per_run)
    decision_ms = [ms for p in per_run for ms in p["decision_ms"]]
    return {"false_prune_rate": sum(p["front_stopped"] for p in per_run) / front if front else None,
            "front_trials": front, "front_stopped": sum(p["front_stopped"] for p in per_run),
            "stopped": sum(p["stopped"] for p in per_run),
            "feasible_stopped": sum(p["feasible_stopped"] for p in per_run),
            "epochs_saved_fraction": bench.median_range([p["epochs_saved_fraction"] for p in per_run]),
            "coverage_90": bench._pooled_coverage([p["coverage"] for p in per_run]),
            "decision_ms": {"median": statistics.median(decision_ms), "p95": float(np.percentile(decision_ms, 95))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="unpruned runs (a --save-runs file of benchmarks/pruning.py)")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--risks", default="0.05,0.1,0.15,0.2,0.3")
    args = parser.parse_args()
    runs = [r for r in bench.load_runs(args.runs) if r["arm"] == "none"]
    out: dict[str, Any] = {"command": "python benchmarks/forecast.py " + " ".join(sys.argv[1:]),
                           "seeds": sorted({r["seed"] for r in runs}), "problems": {}}
    for name in args.problems.split(","):
        mine = [r for r in runs if r["problem"] == name]
        if not mine:
            continue
        problem = PROBLEMS[name]
        out["problems"][name] = {
            "runs": len(mine), "trials_per_run": [len(r["trials"]) for r in mine],
            "models": {m: score_model(MODELS[m], mine, problem) for m in args.models.split(",")},
            "risks": {r: score_risk(float(r), mine, problem) for r in args.risks.split(",")},
        }
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
