"""Does motune's pruning pay? Anytime feasible hypervolume against the training compute, at equal budgets.

Per problem (benchmarks/pruning_problems.py: ``adult``, ``adult_wide``,
``adult_tight`` with a binding fairness bound, ``german_mlp`` on another
data set) and per seed, every arm tunes the same problem with the same
training loop and the same per-epoch measurements, until it has spent the
epochs of ``--budget`` full trainings (27 epochs each):

- ``none``: motune without pruning, ``--budget`` trials;
- ``default``: motune's default policy (:class:`motune.pruning.ForecastAware`);
- ``classic``: the rules before issue 13 (the constraint-aware rule with
  patience | MO-ASHA rungs at every step, the sampler blind to pruned trials);
- ``top_third``: keep the top third after one epoch (a trial's first-epoch
  report is ranked by constrained non-dominated sorting among every trial's
  first epoch; Egele et al. 2023 report that such a one-epoch baseline can
  match multi-fidelity methods);
- ``default_sees_forecast``: the default, with the sampler shown each pruned
  trial at its forecast final values rather than its last report;
- ``moasha`` / ``moasha_fixed``: Syne Tune 0.16's MOASHA (random
  configurations, successive halving at epochs 1, 3, 9) as published and
  with its ranking read as intended (benchmarks/pruning_moasha.py).

No arm knows its budget, so the first 16 full trainings' worth of a run is
the run a budget of 16 would have made: one run per arm and seed serves both
budgets (16 and 64). The measure is the hypervolume of the feasible front of
the trials that finished all 27 epochs (the problem's reference point),
after 12.5 / 25 / 50 / 100 % of the budget's epochs, as a ratio to the
``none`` arm's final hypervolume at that budget (same seed; its first 16 or
64 trials); medians and ranges over seeds. The replay runs each rule over the
``none`` arm's recorded learning curves (trials in their order, each rule
deciding at each epoch on the reports before it, as the study would):
``false_prune_rate`` is the share of the trials that ended feasible and on
that arm's front which the rule would have stopped. ``forecast_coverage_90``
is how often a completed trial's final value fell inside the 90 % interval
the default forecast for it as the study ran (every report, every metric).

Every arm measures the four metrics on the validation split after every
epoch with ``pruning_problems.epoch_metrics`` (the numbers motune's
fairlearn measurement gives, checked on each run's first model, without its
pandas overhead); a completed trial's final values are motune's own
measurement. Epochs are the unit of compute; seconds are shown too.

The default's settings were chosen on other seeds (0-2, benchmarks/forecast.py);
these seeds (20-24) score it:

    python benchmarks/pruning.py --seeds 5 --first-seed 20 --budget 64 --jobs 2 \\
        --save-runs runs.jsonl > benchmarks/results/pruning.json    # hours on 2 cores
    gzip -9 -c runs.jsonl > benchmarks/results/pruning_runs.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pruning_problems import MAX_EPOCHS, METRICS, PROBLEMS, Problem, check_epoch_metrics, epoch_metrics  # noqa: E402

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
BUDGETS = (16, 64)


# ---------------------------------------------------------------- the arms

def _classic_policy() -> Any:
    """motune's rules before issue 13: constraint-aware with patience 5 | successive halving at every rung."""
    from motune.pruning import ConstraintAware, SuccessiveHalving

    return ConstraintAware(patience=5) | SuccessiveHalving(min_resource=1, eta=3, min_agreement=None)


def _default_policy() -> Any:
    from motune.pruning import default_policy

    return default_policy()


def _top_third() -> Any:
    from motune.pruning import Decision, PruningPolicy
    from motune.pruning.halving import rank_order

    class TopThirdAfterOneEpoch(PruningPolicy):
        """At epoch 1, continue the trials in the top third of every trial's first epoch."""

        name = "top_third"
        ranks_on_objectives = True

        def decide(self, ctx: Any) -> Any:
            if ctx.step != 1:
                return None
            names = [o.metric for o in ctx.objectives]
            entries = [ctx.metrics] + [p.metrics for p in ctx.peers if all(n in p.metrics for n in names)]
            keep = math.ceil(len(entries) / 3)
            place = rank_order(entries, ctx.objectives, ctx.constraints).index(0) + 1
            return None if place <= keep else Decision(self.name, f"placed {place} of {len(entries)} after one epoch")

    return TopThirdAfterOneEpoch()


ARMS: dict[str, dict[str, Any]] = {  # motune arms: a pruning policy (a factory) and study options
    "none": {"policy": None},
    "default": {"policy": _default_policy},
    "classic": {"policy": _classic_policy, "study": {"sampler_sees_pruned": False}},
    "top_third": {"policy": _top_third},
    "default_sees_forecast": {"policy": _default_policy, "study": {"sampler_sees_pruned": "forecast"}},
}
REPLAYS = {"default": _default_policy, "classic": _classic_policy, "top_third": _top_third}
SYNE_ARMS = {"moasha": False, "moasha_fixed": True}  # Syne Tune's MOASHA: published / corrected ranking


def _compact_forecasts(forecasts: dict[int, Any]) -> dict[int, dict[str, list]]:
    """Stored forecasts as ``{step: {metric: [point, low, high, scale]}}``."""
    return {step: {m: [f["point"], f["low"], f["high"], f.get("scale", 1.0)] for m, f in rec["metrics"].items()}
            for step, rec in forecasts.items()}


def run_motune_arm(problem_name: str, arm: str, seed: int, n_trials: int | None, budget_epochs: int | None
                   ) -> list[dict[str, Any]]:
    import optuna

    import motune as mt
    from motune import _schema

    problem = PROBLEMS[problem_name]
    task = problem.task()
    spec = ARMS[arm]
    used = {"epochs": 0}

    def train(params: dict, task: Any, ctx: Any) -> Any:
        model = None
        for epoch, model in problem.epochs(params, task, ctx.seed):
            if ctx.trial_number == 0 and epoch == 1:
                check_epoch_metrics(model, task)
            ctx.report(epoch, metrics=epoch_metrics(model, task))
        return model

    class Count(mt.Callback):
        def on_report(self, report: Any) -> None:
            used["epochs"] += report.step >= 1

    def stop_at_budget(ostudy: optuna.Study, _frozen: Any) -> None:
        if budget_epochs is not None and used["epochs"] >= budget_epochs:
            ostudy.stop()

    policy = spec["policy"]() if spec["policy"] is not None else None
    storage = optuna.storages.InMemoryStorage()
    study = mt.Study(name=f"{problem_name}-{arm}-{seed}", task=task, space=problem.space, train=train,
                     objectives=list(problem.objectives), constraints=list(problem.constraints), pruning=policy,
                     storage=storage, seed=seed, keep_models="none", max_step=MAX_EPOCHS, **spec.get("study", {}))
    result = study.optimize(n_trials=n_trials if budget_epochs is None else 100_000, show_progress=False,
                            callbacks=[Count(), stop_at_budget])
    frozen = {t.number: t for t in optuna.load_study(study_name=study.name, storage=storage).get_trials()}
    trials = []
    for r in sorted(result.records(), key=lambda r: r.number):  # one worker: number order is completion order
        pruned = r.pruned or {}
        details = pruned.get("details") or {}
        trials.append({"trial": r.number, "state": r.state, "epochs": sum(1 for s in r.reports if s >= 1),
                       "seconds": r.duration_s or 0.0, "params": r.params,
                       "metrics": {m: r.metrics.get(m) for m in METRICS} if r.state == "COMPLETE" else None,
                       "pruned": pruned.get("rule"), "pruned_step": pruned.get("step"),
                       "pruned_kind": details.get("kind"), "pruned_probability": details.get("probability"),
                       "reports": {s: v for s, v in r.reports.items() if s >= 1},
                       "forecasts": _compact_forecasts(_schema.read_forecasts(frozen[r.number].system_attrs,
                                                                              r.number))})
    return trials


def run_syne_arm(problem_name: str, arm: str, seed: int, budget_epochs: int) -> list[dict[str, Any]]:
    from pruning_moasha import run_moasha

    problem = PROBLEMS[problem_name]
    return run_moasha(problem, problem.task(), seed=seed, budget_epochs=budget_epochs, corrected=SYNE_ARMS[arm],
                      max_epochs=MAX_EPOCHS, measure_metrics=epoch_metrics)


def run_unit(unit: tuple[str, str, int, int | None, int | None]) -> dict[str, Any]:
    problem, arm, seed, n_trials, budget = unit
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    began = time.perf_counter()
    trials = run_syne_arm(problem, arm, seed, budget) if arm in SYNE_ARMS else \
        run_motune_arm(problem, arm, seed, n_trials, budget)
    print(f"{problem} {arm} seed {seed}: {len(trials)} trials, {sum(t['epochs'] for t in trials)} epochs, "
          f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return {"problem": problem, "arm": arm, "seed": seed, "trials": trials}


# ---------------------------------------------------------------- the measures

def hypervolume(problem: Problem, points: list[dict[str, float]]) -> float:
    from motune import _pareto

    good = [p for p in points if problem.feasible(p)]
    if not good:
        return 0.0
    directions = [o.direction for o in problem.objectives]
    reference = dict(problem.reference)
    losses = _pareto.to_losses([[p[o.metric] for o in problem.objectives] for p in good], directions)
    ref = _pareto.to_losses([[reference[o.metric] for o in problem.objectives]], directions)[0]
    return _pareto.hypervolume(losses, ref)


def curve(problem: Problem, trials: list[dict[str, Any]]) -> list[dict[str, float]]:
    """After each trial: cumulative epochs and seconds, and the hypervolume of what had completed."""
    points, epochs, seconds, done = [], 0, 0.0, []
    for t in trials:
        epochs += t["epochs"]
        seconds += t["seconds"]
        if t["state"] == "COMPLETE" and t["metrics"]:
            done.append(t["metrics"])
            points.append({"epochs": epochs, "seconds": round(seconds, 3), "hv": hypervolume(problem, done)})
        else:
            points.append({"epochs": epochs, "seconds": round(seconds, 3), "hv": points[-1]["hv"] if points else 0.0})
    return points


def hv_at(points: list[dict[str, float]], key: str, budget: float) -> float:
    """The hypervolume held once ``budget`` (epochs or seconds) was spent: trials finished within it."""
    held = 0.0
    for p in points:
        if p[key] > budget + 1e-9:
            break
        held = p["hv"]
    return held


def front_trials(problem: Problem, trials: list[dict[str, Any]]) -> set[int]:
    """The completed feasible non-dominated trials."""
    from motune import _pareto

    good = [t for t in trials if t["state"] == "COMPLETE" and t["metrics"] and problem.feasible(t["metrics"])]
    if not good:
        return set()
    losses = _pareto.to_losses([[t["metrics"][o.metric] for o in problem.objectives] for t in good],
                               [o.direction for o in problem.objectives])
    return {t["trial"] for t, keep in zip(good, _pareto.nondominated_mask(losses)) if keep}


def replay(problem: Problem, policy: Any, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``policy`` over recorded full learning curves, as the study would have (each trial decided on the
    reports and stored forecasts of the trials before it; a stopped trial shows only the reports it made):
    which trials it stops, where, the forecasts it makes and how long each decision takes."""
    from motune.pruning import PeerReport, ReportContext

    decided: list[dict[str, Any]] = []
    stopped: dict[int, int] = {}
    seconds: list[float] = []
    checks: list[tuple[dict[str, Any], dict[str, float]]] = []  # (forecast, final) of trials that would complete
    for t in trials:
        history: list[tuple[int, dict[str, float]]] = []
        forecasts: dict[int, Any] = {}
        state = "COMPLETE"
        for step in sorted(t["reports"]):
            metrics = t["reports"][step]
            decision = None
            if step < MAX_EPOCHS:
                peers = [PeerReport(d["trial"], d["state"], d["reports"][step], d["final"],
                                    d["reports"] if d["final"] else None, d["forecasts"] if d["final"] else None)
                         for d in decided if step in d["reports"]]
                began = time.perf_counter()
                decision, forecast = policy.assess(ReportContext(step, metrics, list(history), peers,
                                                                 list(problem.objectives), list(problem.constraints),
                                                                 frozenset(), MAX_EPOCHS))
                seconds.append(time.perf_counter() - began)
                if forecast is not None:
                    forecasts[step] = forecast
            history.append((step, metrics))
            if decision is not None:
                stopped[t["trial"]] = step
                state = "PRUNED"
                break
        seen = {s: v for s, v in t["reports"].items() if s <= (stopped.get(t["trial"]) or MAX_EPOCHS)}
        final = t["metrics"] if state == "COMPLETE" else None
        decided.append({"trial": t["trial"], "state": state, "reports": seen, "final": final, "forecasts": forecasts})
        if final is not None:
            checks += [(f, final) for f in forecasts.values()]
    front = front_trials(problem, trials)
    full = sum(len(t["reports"]) for t in trials)
    spent = sum(stopped.get(t["trial"], len(t["reports"])) for t in trials)
    return {"stopped": len(stopped), "front": len(front), "front_stopped": len(front & set(stopped)),
            "feasible_stopped": sum(1 for t in trials if t["trial"] in stopped and t["metrics"]
                                    and problem.feasible(t["metrics"])),
            "epochs_saved_fraction": 1 - spent / full if full else 0.0,
            "coverage": coverage(checks), "decision_ms": [1000 * s for s in seconds]}


def coverage(checks: list[tuple[dict[str, Any], dict[str, float]]]) -> dict[str, Any]:
    """How often the final value fell inside the stored 90 % forecast interval: pooled over metrics and per
    metric (closed intervals only; ``open`` counts the intervals the forecast left open)."""
    inside: dict[str, list[bool]] = {}
    opened = 0
    for record, final in checks:
        for m, f in record["metrics"].items():
            point, low, high = (f["point"], f["low"], f["high"]) if isinstance(f, dict) else f[:3]
            if low is None or high is None:
                opened += 1
                continue
            inside.setdefault(m, []).append(low <= final[m] <= high)
    pooled = [v for held in inside.values() for v in held]
    return {"pooled": statistics.fmean(pooled) if pooled else None, "checked": len(pooled), "open": opened,
            "by_metric": {m: statistics.fmean(v) for m, v in inside.items()}}


def rank_agreement(problem: Problem, trials: list[dict[str, Any]]) -> dict[int, float]:
    """Spearman correlation, per epoch, between the constrained non-dominated order of the trials'
    reports at that epoch and at the last one."""
    from scipy.stats import spearmanr

    from motune.pruning.halving import rank_order

    out = {}
    for step in range(1, MAX_EPOCHS):
        have = [t for t in trials if step in t["reports"] and MAX_EPOCHS in t["reports"]]
        if len(have) < 5:
            continue
        places = []
        for at in (step, MAX_EPOCHS):
            order = rank_order([t["reports"][at] for t in have], problem.objectives, problem.constraints)
            place = [0] * len(have)
            for position, i in enumerate(order):
                place[i] = position
            places.append(place)
        out[step] = float(spearmanr(*places).statistic)
    return out


def load_runs(path: str) -> list[dict[str, Any]]:
    """Runs from a result file or a ``--save-runs`` file (JSON turned the report steps into strings)."""
    text = gzip.decompress(Path(path).read_bytes()).decode() if path.endswith(".gz") else Path(path).read_text()
    try:
        runs = json.loads(text)["runs"]
    except json.JSONDecodeError:  # one run per line
        runs = [json.loads(line) for line in text.splitlines() if line.strip()]
    for run in runs:
        for t in run["trials"]:
            t["reports"] = {int(s): v for s, v in t["reports"].items()}
            t["forecasts"] = {int(s): v for s, v in (t.get("forecasts") or {}).items()}
    return runs


def median_range(values: list[float | None]) -> dict[str, Any]:
    real = [v for v in values if v is not None]
    if not real:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(real), "min": min(real), "max": max(real), "n": len(real)}


def within_budget(trials: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """The trials a run had finished when it had spent ``epochs`` epochs (what a run with that budget did)."""
    out, spent = [], 0
    for t in trials:
        if spent >= epochs:
            break
        out.append(t)
        spent += t["epochs"]
    return out


def run_coverage(trials: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, float]]]:
    """(stored forecast, final values) of a run's completed trials."""
    checks = []
    for t in trials:
        if t["state"] == "COMPLETE" and t["metrics"]:
            checks += [({"metrics": f}, t["metrics"]) for f in t.get("forecasts", {}).values()]
    return checks


def summarise_budget(problem: Problem, mine: list[dict[str, Any]], seeds: list[int], budget: int,
                     replays: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    epochs_budget = budget * MAX_EPOCHS
    base = {r["seed"]: within_budget(r["trials"], epochs_budget) for r in mine if r["arm"] == "none"}
    arms: dict[str, Any] = {}
    for arm in dict.fromkeys(r["arm"] for r in mine):
        ratios = {f: [] for f in FRACTIONS}
        seconds_ratios = {f: [] for f in FRACTIONS}
        to98, completed, trials_run, pruned = [], [], [], []
        for r in (r for r in mine if r["arm"] == arm and r["seed"] in base):
            ref_points = curve(problem, base[r["seed"]])
            final = ref_points[-1]["hv"]
            budget_s = ref_points[-1]["seconds"]
            trials = within_budget(r["trials"], epochs_budget)
            points = curve(problem, trials)
            for f in FRACTIONS:
                ratios[f].append(hv_at(points, "epochs", f * epochs_budget) / final if final else None)
                seconds_ratios[f].append(hv_at(points, "seconds", f * budget_s) / final if final else None)
            to98.append(next((p["epochs"] / epochs_budget for p in points if final and p["hv"] >= 0.98 * final),
                             None))
            completed.append(sum(1 for t in trials if t["state"] == "COMPLETE"))
            pruned.append(sum(1 for t in trials if t["state"] == "PRUNED"))
            trials_run.append(len(trials))
        arms[arm] = {
            "hv_ratio_at_epochs": {str(f): median_range(v) for f, v in ratios.items()},
            "hv_ratio_at_seconds": {str(f): median_range(v) for f, v in seconds_ratios.items()},
            "epochs_to_98pct": median_range(to98),
            "epochs_to_98pct_reached": sum(v is not None for v in to98),
            "trials": median_range(trials_run),
            "completed": median_range(completed),
            "pruned": median_range(pruned),
        }
    replayed = {}
    for name, make in replays.items():
        per_seed = [replay(problem, make(), base[s]) for s in seeds if s in base]
        front = sum(p["front"] for p in per_seed)
        decision_ms = sorted(ms for p in per_seed for ms in p["decision_ms"])
        replayed[name] = {"false_prune_rate": sum(p["front_stopped"] for p in per_seed) / front if front else None,
                          "front_trials": front, "front_stopped": sum(p["front_stopped"] for p in per_seed),
                          "feasible_stopped": sum(p["feasible_stopped"] for p in per_seed),
                          "stopped": sum(p["stopped"] for p in per_seed),
                          "epochs_saved_fraction": median_range([p["epochs_saved_fraction"] for p in per_seed]),
                          "forecast_coverage_90": _pooled_coverage([p["coverage"] for p in per_seed]),
                          "decision_ms": {"median": statistics.median(decision_ms) if decision_ms else None,
                                          "p95": decision_ms[int(0.95 * (len(decision_ms) - 1))] if decision_ms
                                          else None, "decisions": len(decision_ms)}}
    as_ran = coverage([c for r in mine if r["arm"] == "default" and r["seed"] in base
                       for c in run_coverage(within_budget(r["trials"], epochs_budget))])

    def ratio(arm: str, f: float = 0.25) -> float | None:
        return arms.get(arm, {}).get("hv_ratio_at_epochs", {}).get(str(f), {}).get("median")

    moasha = [ratio(a) for a in SYNE_ARMS if ratio(a) is not None]
    return {
        "budget_full_trainings": budget,
        "hv_ratio_at_25pct": ratio("default"),
        "none_hv_ratio_at_25pct": ratio("none"),
        "moasha_hv_ratio_at_25pct": max(moasha) if moasha else None,
        "false_prune_rate": replayed.get("default", {}).get("false_prune_rate"),
        "forecast_coverage_90": as_ran["pooled"],
        "forecast_coverage_90_detail": as_ran,
        "arms": arms,
        "replay": replayed,
    }


def _pooled_coverage(parts: list[dict[str, Any]]) -> dict[str, Any]:
    checked = sum(p["checked"] for p in parts)
    pooled = sum((p["pooled"] or 0.0) * p["checked"] for p in parts) / checked if checked else None
    return {"pooled": pooled, "checked": checked, "open": sum(p["open"] for p in parts)}


def summarise(runs: list[dict[str, Any]], replays: dict[str, Callable[[], Any]],
              budgets: tuple[int, ...] = BUDGETS) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in sorted({r["problem"] for r in runs}):
        problem = PROBLEMS[name]
        mine = [r for r in runs if r["problem"] == name]
        seeds = sorted({r["seed"] for r in mine})
        by_budget = {str(b): summarise_budget(problem, mine, seeds, b, replays) for b in budgets}
        unpruned = [t for r in mine if r["arm"] == "none" for t in r["trials"] if t["metrics"]]
        agreement = [rank_agreement(problem, r["trials"]) for r in mine if r["arm"] == "none"]
        top = by_budget[str(max(budgets))]
        out[name] = {
            **{k: top[k] for k in ("budget_full_trainings", "hv_ratio_at_25pct", "none_hv_ratio_at_25pct",
                                   "moasha_hv_ratio_at_25pct", "false_prune_rate", "forecast_coverage_90")},
            "infeasible_share_unpruned": 1 - sum(problem.feasible(t["metrics"]) for t in unpruned) / len(unpruned)
            if unpruned else None,
            "constraints": [str(c) for c in problem.constraints],
            "budgets": by_budget,
            "rank_agreement_with_final": {str(step): median_range([a.get(step) for a in agreement])
                                          for step in range(1, MAX_EPOCHS)},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--arms", default=",".join([*ARMS, *SYNE_ARMS]))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=20)
    parser.add_argument("--budget", type=int, default=max(BUDGETS), help="full trainings (of 27 epochs) per run; "
                        "the none arm runs this many trials")
    parser.add_argument("--jobs", type=int, default=2, help="processes (each arm and seed runs in one, 1 thread)")
    parser.add_argument("--runs", help="read the runs from this file (a result or a --save-runs file) instead of "
                        "running them (re-summarise)")
    parser.add_argument("--save-runs", help="append each finished run to this JSON-lines file as it ends; runs "
                        "already in it are not run again (resume a benchmark that died, or add arms)")
    args = parser.parse_args()
    problems, arms = args.problems.split(","), args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS and a not in SYNE_ARMS] + [p for p in problems if p not in PROBLEMS]
    if unknown:
        parser.error(f"unknown arms or problems: {unknown}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    budgets = tuple(b for b in BUDGETS if b <= args.budget) or (args.budget,)
    began = time.perf_counter()
    if args.runs:
        runs = [r for r in load_runs(args.runs) if r["problem"] in problems and r["seed"] in seeds
                and (r["arm"] in arms or r["arm"] == "none")]
    else:
        budget = args.budget * MAX_EPOCHS
        units = [(p, "none", s, args.budget, None) for p in problems for s in seeds]
        units += [(p, a, s, None, budget) for p in problems for s in seeds for a in arms if a != "none"]
        runs = []
        if args.save_runs and Path(args.save_runs).exists():  # resume: the runs already saved are not run again
            runs = [r for r in load_runs(args.save_runs) if r["problem"] in problems and r["seed"] in seeds
                    and (r["arm"] in arms or r["arm"] == "none")]
            done = {(r["problem"], r["arm"], r["seed"]) for r in runs}
            units = [u for u in units if (u[0], u[1], u[2]) not in done]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for run in (f.result() for f in as_completed([pool.submit(run_unit, u) for u in units])):
                runs.append(run)
                if args.save_runs:
                    with open(args.save_runs, "a") as out_file:
                        out_file.write(json.dumps(run, default=float) + "\n")
    from pruning_moasha import ranking_check

    out = {
        "command": "python benchmarks/pruning.py " + " ".join(sys.argv[1:]),
        "goal": "per problem at the 64 budget: hv_ratio_at_25pct >= 0.98; the default ahead of none and of MOASHA "
                "at every budget fraction; false_prune_rate <= 0.05; forecast_coverage_90 within 0.85-0.95",
        "budgets_full_trainings": list(budgets),
        "epochs_per_training": MAX_EPOCHS,
        "fractions": list(FRACTIONS),
        "seeds": seeds,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "jobs": args.jobs,
                    "load_average_at_end": list(os.getloadavg())},
        "wall_seconds": round(time.perf_counter() - began, 1),
        "default_policy": _default_policy().describe(),
        "moasha_ranking_check": ranking_check(),
        "problems": summarise(runs, REPLAYS, budgets),
    }
    if args.save_runs or args.runs:  # the runs are in that file (JSON lines; gzip it to commit it)
        out["runs_file"] = args.save_runs or args.runs
    else:
        out["runs"] = runs
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
