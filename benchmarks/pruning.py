"""Does motune's pruning keep the front for a fraction of the training compute?

The same study (studies/adult_mlp_pruned.py: an MLP trained epoch by epoch,
up to 27 epochs, reporting after each; maximize accuracy, minimize
demographic-parity difference, under an equalized-odds and a
balanced-accuracy constraint), the same TPE sampler and the same seeds, run
with no pruning and with motune's default policy (constraint-aware rules |
multi-objective successive halving at epochs 1, 3, 9, 27), on Adult (10,000
rows) and on German Credit. Per run it records the final feasible
hypervolume against a fixed reference point (accuracy 0.5, demographic
parity difference 0.5), the training compute (epochs trained, and seconds of
trial time, which include the per-epoch measurements both arms make), and the
compute at which the pruned run first reached 95 % and 98 % of the unpruned
run's final hypervolume. The pruned arm runs ``--pruned-trials`` trials
(default twice ``--trials``): ``hv_ratio`` and ``compute_ratio`` compare the
two arms after the same number of trials, and the 95 % / 98 % marks are
looked for along the whole pruned run (the compute pruning saves buys more
trials).

    python benchmarks/pruning.py --seeds 5 --trials 24 > benchmarks/results/pruning.json
"""

from __future__ import annotations

import argparse
import json
import runpy
import statistics
import sys
import time
from pathlib import Path

import optuna

import motune as mt

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"accuracy": 0.5, "demographic_parity_difference": 0.5}


def tasks():
    return {
        "adult": (mt.data.adult(sensitive="sex", max_rows=10000), None),
        "german_credit": (mt.data.german_credit(sensitive="sex"),
                          [mt.at_most("equalized_odds_difference", 0.20), mt.at_least("balanced_accuracy", 0.60)]),
    }


def run_arm(make_study, task, constraints, *, pruned: bool, seed: int, n_trials: int) -> dict:
    study = make_study(task, name=f"bench-{'pruned' if pruned else 'unpruned'}-{seed}",
                       pruning="default" if pruned else None, constraints=constraints,
                       storage=optuna.storages.InMemoryStorage(), sampler=optuna.samplers.TPESampler(seed=seed),
                       seed=seed)
    began = time.perf_counter()
    result = study.optimize(n_trials=n_trials, show_progress=False)
    wall = time.perf_counter() - began
    trajectory, epochs_so_far, seconds_so_far, done = [], 0, 0.0, []
    for t in result.study.get_trials(deepcopy=False):  # sequential: trial order is completion order
        epochs = sum(1 for k in t.system_attrs if k.startswith(f"motune:report:{t.number}:"))
        epochs_so_far += epochs
        seconds_so_far += t.duration.total_seconds() if t.duration else 0.0
        done.append(t.number)
        trajectory.append({"trial": t.number, "state": t.state.name, "epochs": epochs,
                           "cumulative_epochs": epochs_so_far, "cumulative_seconds": seconds_so_far,
                           "feasible_hv": result.hypervolume(REFERENCE, trials=done)})
    summary = result.summary()
    return {
        "final_feasible_hv": trajectory[-1]["feasible_hv"] if trajectory else 0.0,
        "epochs": epochs_so_far,
        "seconds": seconds_so_far,
        "wall_seconds": wall,
        "trials": summary,
        "pruned_by_rule": _count_rules(result),
        "trajectory": trajectory,
    }


def _count_rules(result) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in result.records():
        if r.state == "PRUNED" and "pruned" in r.attrs:
            rule = r.attrs["pruned"]["rule"]
            counts[rule] = counts.get(rule, 0) + 1
    return counts


def first_reaching(trajectory, target: float) -> dict | None:
    for point in trajectory:
        if point["feasible_hv"] >= target:
            return {"epochs": point["cumulative_epochs"], "seconds": point["cumulative_seconds"],
                    "trial": point["trial"]}
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--pruned-trials", type=int, default=None, help="default: twice --trials")
    args = parser.parse_args()
    pruned_trials = args.pruned_trials or 2 * args.trials
    if pruned_trials < args.trials:
        parser.error("--pruned-trials must be at least --trials")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    make_study = runpy.run_path(str(ROOT / "studies" / "adult_mlp_pruned.py"))["make_study"]
    out: dict = {"reference_point": REFERENCE, "trials_unpruned": args.trials, "trials_pruned": pruned_trials,
                 "seeds": list(range(args.seeds)),
                 "fidelity": "epochs of MLPClassifier.partial_fit, at most 27 per trial", "tasks": {}}
    for name, (task, constraints) in tasks().items():
        runs = []
        for seed in range(args.seeds):
            unpruned = run_arm(make_study, task, constraints, pruned=False, seed=seed, n_trials=args.trials)
            pruned = run_arm(make_study, task, constraints, pruned=True, seed=seed, n_trials=pruned_trials)
            base = unpruned["final_feasible_hv"]
            same = pruned["trajectory"][args.trials - 1]  # the pruned arm after as many trials as the unpruned
            runs.append({
                "seed": seed,
                "hv_ratio": same["feasible_hv"] / base if base > 0 else None,
                "compute_ratio_epochs": same["cumulative_epochs"] / unpruned["epochs"],
                "compute_ratio_seconds": same["cumulative_seconds"] / unpruned["seconds"],
                "hv_ratio_after_all_pruned_trials": pruned["final_feasible_hv"] / base if base > 0 else None,
                "compute_ratio_after_all_pruned_trials": pruned["epochs"] / unpruned["epochs"],
                "pruned_reached_95pct": first_reaching(pruned["trajectory"], 0.95 * base),
                "pruned_reached_98pct": first_reaching(pruned["trajectory"], 0.98 * base),
                "unpruned": unpruned,
                "pruned": pruned,
            })
            print(f"{name} seed {seed}: hv ratio {runs[-1]['hv_ratio']}, "
                  f"epochs {pruned['epochs']}/{unpruned['epochs']}", file=sys.stderr)
        ratios = [r["hv_ratio"] for r in runs if r["hv_ratio"] is not None]
        out["tasks"][name] = {
            "constraints": [str(c) for c in (constraints or make_study(task).constraints)],
            "hv_ratio_median": statistics.median(ratios) if ratios else None,
            "compute_ratio_median": statistics.median(r["compute_ratio_epochs"] for r in runs),
            "compute_ratio_seconds_median": statistics.median(r["compute_ratio_seconds"] for r in runs),
            "runs": runs,
        }
    adult = out["tasks"]["adult"]
    out = {
        "hv_ratio": adult["hv_ratio_median"],
        "compute_ratio": adult["compute_ratio_median"],
        "goal": "hv_ratio >= 0.98 at compute_ratio <= 0.25",
        "command": f"python benchmarks/pruning.py --seeds {args.seeds} --trials {args.trials} "
                   f"--pruned-trials {pruned_trials} > benchmarks/results/pruning.json",
        **out,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
