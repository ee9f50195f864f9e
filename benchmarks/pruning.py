"""Does motune's pruning pay? Anytime hypervolume against the training compute, at equal budgets.

Per problem (benchmarks/pruning_problems.py: ``adult``, the shipped
studies/adult_mlp_pruned.py, and ``adult_wide``, a PyTorch MLP with a
fairness-penalised loss in a wide space where most configurations are poor)
and per seed, every arm tunes the same problem with the same training loop
and the same per-epoch measurements:

- ``none``: motune without pruning, ``--trials`` trials of 27 epochs; its
  epochs are the budget B;
- motune arms (``ARMS``), run until B epochs are spent: ``classic`` (the
  rules before issue 13: successive halving at every rung, the
  constraint-aware rule with patience, the sampler blind to pruned trials),
  ``classic_sees`` (the same rules, the sampler learning from pruned trials),
  ``constraint_aware`` (that rule alone), ``uncalibrated`` (the
  constraint-aware rule without patience | MO-ASHA rungs not calibrated),
  ``default`` (motune's default policy) and ``default_blind`` (it, with a blind sampler); in every arm a
  trial that reaches epoch 27 completes;
- ``moasha`` / ``moasha_fixed``: Syne Tune 0.16's MOASHA (random
  configurations, multi-objective successive halving at epochs 1, 3, 9)
  as published and with its ranking read as intended (benchmarks/pruning_moasha.py).

The measure is the hypervolume of the feasible front of the trials that
finished all 27 epochs (reference point: accuracy 0.5, demographic-parity
difference 0.5), after 12.5 / 25 / 50 / 100 % of B epochs (and of the
``none`` arm's seconds), as a ratio to the ``none`` arm's final
hypervolume (same seed); medians and ranges over seeds. ``epochs_to_98pct``
is the share of B after which an arm first holds 98 % of that hypervolume.
The replay runs each pruning rule over the ``none`` arm's recorded learning
curves (trials in their order, each rule deciding at each epoch on the
reports before it): of the trials that ended feasible and on that arm's
final front, the share the rule would have stopped (``false_prune_rate``),
and the epochs it would have saved.

    python benchmarks/pruning.py --seeds 5 --first-seed 10 --trials 16 --jobs 2 \
        --arms classic,classic_sees,uncalibrated,default_blind,default,moasha,moasha_fixed \
        --save-runs runs.jsonl > benchmarks/results/pruning.json   # about an hour on 2 cores
    gzip -9 -c runs.jsonl > benchmarks/results/pruning_runs.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
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

from pruning_problems import CONSTRAINTS, MAX_EPOCHS, OBJECTIVES, PROBLEMS, REFERENCE  # noqa: E402

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
METRICS = ["accuracy", "demographic_parity_difference", "equalized_odds_difference", "balanced_accuracy"]


# ---------------------------------------------------------------- the arms

def _classic_policy() -> Any:
    """motune's rules before issue 13: constraint-aware with patience 5 | successive halving at every rung."""
    from motune.pruning import ConstraintAware, SuccessiveHalving

    return ConstraintAware(patience=5) | SuccessiveHalving(min_resource=1, eta=3, min_agreement=None)


def _uncalibrated_policy() -> Any:
    """The constraint-aware rule without patience | classic MO-ASHA rungs (not calibrated on the study)."""
    from motune.pruning import ConstraintAware, SuccessiveHalving

    return ConstraintAware() | SuccessiveHalving(min_resource=1, eta=3, calibrate=False)


def _default_policy() -> Any:
    from motune.pruning import default_policy

    return default_policy()


def _constraint_aware() -> Any:
    from motune.pruning import ConstraintAware

    return ConstraintAware()


def _halving_only() -> Any:
    from motune.pruning import default_policy

    return default_policy().policies[1]


ARMS: dict[str, dict[str, Any]] = {  # motune arms: a pruning policy (a factory) and study options
    "none": {"policy": None},
    "classic": {"policy": _classic_policy, "study": {"sampler_sees_pruned": False}},
    "classic_sees": {"policy": _classic_policy},
    "constraint_aware": {"policy": _constraint_aware},
    "uncalibrated": {"policy": _uncalibrated_policy},
    "default_blind": {"policy": _default_policy, "study": {"sampler_sees_pruned": False}},
    "default": {"policy": _default_policy},
}
REPLAYS = {"classic": _classic_policy, "constraint_aware": _constraint_aware, "default": _default_policy,
           "halving_only": _halving_only, "uncalibrated": _uncalibrated_policy}
SYNE_ARMS = {"moasha": False, "moasha_fixed": True}  # Syne Tune's MOASHA: published / corrected ranking


def _measure(model: Any, task: Any) -> dict[str, float]:
    from motune.metrics import measure

    return dict(measure(model, task, METRICS, split="valid").values)


def run_motune_arm(problem_name: str, arm: str, seed: int, n_trials: int | None, budget_epochs: int | None
                   ) -> list[dict[str, Any]]:
    import optuna

    import motune as mt

    problem = PROBLEMS[problem_name]
    task = problem.task()
    spec = ARMS[arm]
    used = {"epochs": 0}

    def train(params: dict, task: Any, ctx: Any) -> Any:
        model = None
        for epoch, model in problem.epochs(params, task, ctx.seed):
            ctx.report(epoch, model)
        return model

    class Count(mt.Callback):
        def on_report(self, report: Any) -> None:
            used["epochs"] += report.step >= 1

    def stop_at_budget(ostudy: optuna.Study, _frozen: Any) -> None:
        if budget_epochs is not None and used["epochs"] >= budget_epochs:
            ostudy.stop()

    policy = spec["policy"]() if spec["policy"] is not None else None
    study = mt.Study(name=f"{problem_name}-{arm}-{seed}", task=task, space=problem.space, train=train,
                     objectives=OBJECTIVES, constraints=CONSTRAINTS, pruning=policy,
                     storage=optuna.storages.InMemoryStorage(), seed=seed, keep_models="none",
                     max_step=MAX_EPOCHS, **spec.get("study", {}))
    result = study.optimize(n_trials=n_trials if budget_epochs is None else 100_000, show_progress=False,
                            callbacks=[Count(), stop_at_budget])
    trials = []
    for r in sorted(result.records(), key=lambda r: r.number):  # one worker: number order is completion order
        trials.append({"trial": r.number, "state": r.state, "epochs": sum(1 for s in r.reports if s >= 1),
                       "seconds": r.duration_s or 0.0, "params": r.params,
                       "metrics": {m: r.metrics.get(m) for m in METRICS} if r.state == "COMPLETE" else None,
                       "pruned": (r.pruned or {}).get("rule"), "pruned_step": (r.pruned or {}).get("step"),
                       "reports": {s: v for s, v in r.reports.items() if s >= 1}})
    return trials


def run_syne_arm(problem_name: str, arm: str, seed: int, budget_epochs: int) -> list[dict[str, Any]]:
    from pruning_moasha import run_moasha

    problem = PROBLEMS[problem_name]
    return run_moasha(problem, problem.task(), seed=seed, budget_epochs=budget_epochs, corrected=SYNE_ARMS[arm],
                      max_epochs=MAX_EPOCHS, measure_metrics=_measure)


def run_unit(unit: tuple[str, str, int, int | None, int | None]) -> dict[str, Any]:
    problem, arm, seed, n_trials, budget = unit
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    began = time.perf_counter()
    trials = run_syne_arm(problem, arm, seed, budget) if arm in SYNE_ARMS else \
        run_motune_arm(problem, arm, seed, n_trials, budget)
    print(f"{problem} {arm} seed {seed}: {len(trials)} trials, {sum(t['epochs'] for t in trials)} epochs, "
          f"{time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return {"problem": problem, "arm": arm, "seed": seed, "trials": trials}


# ---------------------------------------------------------------- the measures

def feasible(metrics: dict[str, float]) -> bool:
    return all(c.violation(metrics[c.metric]) <= 0 for c in CONSTRAINTS)


def hypervolume(points: list[dict[str, float]]) -> float:
    from motune import _pareto

    good = [p for p in points if feasible(p)]
    if not good:
        return 0.0
    directions = [o.direction for o in OBJECTIVES]
    losses = _pareto.to_losses([[p[o.metric] for o in OBJECTIVES] for p in good], directions)
    ref = _pareto.to_losses([[REFERENCE[o.metric] for o in OBJECTIVES]], directions)[0]
    return _pareto.hypervolume(losses, ref)


def curve(trials: list[dict[str, Any]]) -> list[dict[str, float]]:
    """After each trial: cumulative epochs and seconds, and the hypervolume of what had completed."""
    points, epochs, seconds, done = [], 0, 0.0, []
    for t in trials:
        epochs += t["epochs"]
        seconds += t["seconds"]
        if t["state"] == "COMPLETE" and t["metrics"]:
            done.append(t["metrics"])
        points.append({"epochs": epochs, "seconds": round(seconds, 3), "hv": hypervolume(done)})
    return points


def hv_at(points: list[dict[str, float]], key: str, budget: float) -> float:
    """The hypervolume held once ``budget`` (epochs or seconds) was spent: trials finished within it."""
    held = 0.0
    for p in points:
        if p[key] > budget + 1e-9:
            break
        held = p["hv"]
    return held


def front_trials(trials: list[dict[str, Any]]) -> set[int]:
    """The completed feasible non-dominated trials."""
    from motune import _pareto

    good = [t for t in trials if t["state"] == "COMPLETE" and t["metrics"] and feasible(t["metrics"])]
    if not good:
        return set()
    losses = _pareto.to_losses([[t["metrics"][o.metric] for o in OBJECTIVES] for t in good],
                               [o.direction for o in OBJECTIVES])
    return {t["trial"] for t, keep in zip(good, _pareto.nondominated_mask(losses)) if keep}


def replay(policy: Any, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``policy`` over recorded full learning curves: which trials it stops, and where."""
    from motune.pruning import PeerReport, ReportContext

    decided: list[dict[str, Any]] = []  # the replayed trials so far: reports seen, state, final
    stopped: dict[int, int] = {}
    for t in trials:
        history: list[tuple[int, dict[str, float]]] = []
        state = "COMPLETE"
        for step in sorted(t["reports"]):
            metrics = t["reports"][step]
            peers = [PeerReport(d["trial"], d["state"], d["reports"][step], d["final"])
                     for d in decided if step in d["reports"]]
            decision = None if step >= MAX_EPOCHS else policy.decide(
                ReportContext(step, metrics, list(history), peers, OBJECTIVES, CONSTRAINTS, frozenset(), MAX_EPOCHS))
            history.append((step, metrics))
            if decision is not None:
                stopped[t["trial"]] = step
                state = "PRUNED"
                break
        seen = {s: v for s, v in t["reports"].items() if s <= (stopped.get(t["trial"]) or MAX_EPOCHS)}
        decided.append({"trial": t["trial"], "state": state, "reports": seen,
                        "final": t["metrics"] if state == "COMPLETE" else None})
    front = front_trials(trials)
    full = sum(len(t["reports"]) for t in trials)
    spent = sum(stopped.get(t["trial"], len(t["reports"])) for t in trials)
    return {"stopped": len(stopped), "front": len(front), "front_stopped": len(front & set(stopped)),
            "feasible_stopped": sum(1 for t in trials if t["trial"] in stopped and t["metrics"]
                                    and feasible(t["metrics"])),
            "epochs_saved_fraction": 1 - spent / full if full else 0.0}


def rank_agreement(trials: list[dict[str, Any]]) -> dict[int, float]:
    """Spearman correlation, per epoch, between the constrained non-dominated order of the trials'
    reports at that epoch and at the last one."""
    from scipy.stats import spearmanr

    from motune.pruning.halving import rank_order

    out = {}
    for step in range(1, MAX_EPOCHS):
        have = [t for t in trials if step in t["reports"] and MAX_EPOCHS in t["reports"]]
        if len(have) < 5:
            continue
        early = rank_order([t["reports"][step] for t in have], OBJECTIVES, CONSTRAINTS)
        final = rank_order([t["reports"][MAX_EPOCHS] for t in have], OBJECTIVES, CONSTRAINTS)
        place_early, place_final = [0] * len(have), [0] * len(have)
        for place, i in enumerate(early):
            place_early[i] = place
        for place, i in enumerate(final):
            place_final[i] = place
        out[step] = float(spearmanr(place_early, place_final).statistic)
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
    return runs


def _median_range(values: list[float | None]) -> dict[str, Any]:
    real = [v for v in values if v is not None]
    if not real:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(real), "min": min(real), "max": max(real), "n": len(real)}


def summarise(runs: list[dict[str, Any]], replays: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for problem in sorted({r["problem"] for r in runs}):
        mine = [r for r in runs if r["problem"] == problem]
        seeds = sorted({r["seed"] for r in mine})
        base = {r["seed"]: r for r in mine if r["arm"] == "none"}
        arms: dict[str, Any] = {}
        for arm in dict.fromkeys(r["arm"] for r in mine):
            ratios = {f: [] for f in FRACTIONS}
            seconds_ratios = {f: [] for f in FRACTIONS}
            to98, completed, trials_run = [], [], []
            for r in (r for r in mine if r["arm"] == arm):
                ref = base[r["seed"]]
                ref_points = curve(ref["trials"])
                final = ref_points[-1]["hv"]
                budget, budget_s = ref_points[-1]["epochs"], ref_points[-1]["seconds"]
                points = curve(r["trials"])
                for f in FRACTIONS:
                    ratios[f].append(hv_at(points, "epochs", f * budget) / final if final else None)
                    seconds_ratios[f].append(hv_at(points, "seconds", f * budget_s) / final if final else None)
                first = next((p["epochs"] / budget for p in points if final and p["hv"] >= 0.98 * final), None)
                to98.append(first)
                completed.append(sum(1 for t in r["trials"] if t["state"] == "COMPLETE"))
                trials_run.append(len(r["trials"]))
            arms[arm] = {
                "hv_ratio_at_epochs": {str(f): _median_range(v) for f, v in ratios.items()},
                "hv_ratio_at_seconds": {str(f): _median_range(v) for f, v in seconds_ratios.items()},
                "epochs_to_98pct": _median_range(to98),
                "epochs_to_98pct_reached": sum(v is not None for v in to98),
                "trials": _median_range(trials_run),
                "completed": _median_range(completed),
            }
        replayed = {}
        for name, make in replays.items():
            per_seed = [replay(make(), base[s]["trials"]) for s in seeds]
            front = sum(p["front"] for p in per_seed)
            replayed[name] = {"false_prune_rate": sum(p["front_stopped"] for p in per_seed) / front if front else None,
                              "front_trials": front, "front_stopped": sum(p["front_stopped"] for p in per_seed),
                              "feasible_stopped": sum(p["feasible_stopped"] for p in per_seed),
                              "epochs_saved_fraction": _median_range([p["epochs_saved_fraction"] for p in per_seed])}
        agreement = [rank_agreement(base[s]["trials"]) for s in seeds]
        out[problem] = {
            "arms": arms,
            "replay": replayed,
            "rank_agreement_with_final": {str(step): _median_range([a.get(step) for a in agreement])
                                          for step in range(1, MAX_EPOCHS)},
            "hv_ratio_at_25pct": arms.get("default", {}).get("hv_ratio_at_epochs", {}).get("0.25", {}).get("median"),
            "moasha_hv_ratio_at_25pct": max((arms[a]["hv_ratio_at_epochs"]["0.25"]["median"] or 0.0)
                                            for a in SYNE_ARMS if a in arms) if any(a in arms for a in SYNE_ARMS)
            else None,
            "epochs_to_98pct": arms.get("default", {}).get("epochs_to_98pct", {}).get("median"),
            "false_prune_rate": replayed.get("default", {}).get("false_prune_rate"),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--arms", default=",".join([*ARMS, *SYNE_ARMS]))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=24, help="trials of the unpruned arm (its epochs: the budget)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (each arm and seed runs in one, 1 thread)")
    parser.add_argument("--runs", help="read the runs from this file (a result or a --save-runs file) instead of "
                        "running them (re-summarise)")
    parser.add_argument("--save-runs", help="append each finished run to this JSON-lines file as it ends; runs "
                        "already in it are not run again (resume a benchmark that died, or add arms)")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    problems, arms = args.problems.split(","), args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS and a not in SYNE_ARMS] + [p for p in problems if p not in PROBLEMS]
    if unknown:
        parser.error(f"unknown arms or problems: {unknown}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    began = time.perf_counter()
    if args.runs:
        runs = load_runs(args.runs)
    else:
        budget = args.trials * MAX_EPOCHS
        units = [(p, "none", s, args.trials, None) for p in problems for s in seeds]
        units += [(p, a, s, None, budget) for p in problems for s in seeds for a in arms if a != "none"]
        units.sort(key=lambda u: (u[1] == "none", u[0] == "adult_wide"), reverse=True)  # the long ones first
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

    replays = REPLAYS
    out = {
        "command": "python benchmarks/pruning.py " + " ".join(sys.argv[1:]),
        "goal": "per problem: hv_ratio_at_25pct >= 0.98, motune's median hypervolume >= MOASHA's at every budget, "
                "false_prune_rate <= 0.05",
        "reference_point": REFERENCE,
        "budget": f"the none arm's epochs: {args.trials} trials x {MAX_EPOCHS} epochs",
        "fractions": list(FRACTIONS),
        "seeds": seeds,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "jobs": args.jobs,
                    "load_average_at_end": list(os.getloadavg())},
        "wall_seconds": round(time.perf_counter() - began, 1),
        "moasha_ranking_check": ranking_check(),
        "problems": summarise(runs, replays),
    }
    if args.save_runs:  # the runs are in that file (JSON lines; gzip it to commit it)
        out["runs_file"] = args.save_runs
    else:
        out["runs"] = runs
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
