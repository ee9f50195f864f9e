"""Does the reference kernel make latency comparable across loads? One model, timed on a quiet host and with
busy processes beside it, in alternation; milliseconds and kernel units side by side.

The model is the shipped studies/adult_fairness.py's kind (a scikit-learn pipeline: one-hot encoding and
a logistic regression; ``--model torch`` for a PyTorch MLP on the same encoded rows), timed with motune's
latency metric (batch size 1, 400 calls, 1 thread) as confirmation does. Arms alternate ``--rounds``
times: ``quiet`` (nothing else of this benchmark running) and ``busy`` (``--busy`` processes spinning a
core each beside it). For each arm the medians over rounds of p50 / p95 in milliseconds and in kernel
units (each percentile over the same percentile of the reference kernel's time per unit, timed between
the calls; :mod:`motune.metrics.timing`); ``agreement`` is the busy / quiet ratio of each.

    python benchmarks/speed.py --rounds 3 --busy 2 > benchmarks/results/speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any


def _model(kind: str, task: Any) -> Any:
    if kind == "torch":
        import torch

        from motune.models.torch import TorchClassifier

        torch.manual_seed(0)
        width = task.numeric().X_train.shape[1]
        module = torch.nn.Sequential(torch.nn.Linear(width, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
        return TorchClassifier.for_task(module, task)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(task.preprocessor(), LogisticRegression(max_iter=500)).fit(task.X_train, task.y_train)


def _time(model: Any, task: Any) -> dict[str, Any]:
    from motune.metrics import measure

    measured = measure(model, task, ["latency_p50_ms", "latency_p95_ms"], split="test",
                       options={"latency": {"min_count": 400, "min_time_s": 2.0, "max_time_s": 30.0}})
    details = measured.details["latency"]
    return {"ms": {k: measured.values[k] for k in ("latency_p50_ms", "latency_p95_ms")},
            "units": {k: details["speed"]["normalised"][k] for k in ("latency_p50_ms", "latency_p95_ms")},
            "reference_ms": details["speed"]["reference_ms"], "load_average_before": details["load_average_before"],
            "noisy": details["noisy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="spinning processes beside the busy arm")
    parser.add_argument("--model", choices=("sklearn", "torch"), default="sklearn")
    args = parser.parse_args()
    import motune as mt
    from motune.metrics.timing import busy_cpus

    task = mt.data.adult(sensitive="sex", max_rows=10000)
    model = _model(args.model, task)
    runs: dict[str, list[dict[str, Any]]] = {"quiet": [], "busy": []}
    began = time.perf_counter()
    for _ in range(args.rounds):
        for arm in ("quiet", "busy"):
            spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        for _ in range(args.busy if arm == "busy" else 0)]
            try:
                time.sleep(1.0 if spinners else 0.0)
                seen = busy_cpus(0.5)
                runs[arm].append({**_time(model, task), "busy_cpus_before": seen})
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()
            print(f"{arm}: {runs[arm][-1]['ms']}", file=sys.stderr, flush=True)
    summary = {}
    for arm, rows in runs.items():
        summary[arm] = {what: {k: statistics.median(r[what][k] for r in rows) for k in rows[0][what]}
                        for what in ("ms", "units")}
        summary[arm]["ranges"] = {what: {k: [min(r[what][k] for r in rows), max(r[what][k] for r in rows)]
                                         for k in rows[0][what]} for what in ("ms", "units")}
        summary[arm]["busy_cpus_before"] = statistics.median(r["busy_cpus_before"] for r in rows)
    agreement = {what: {k: summary["busy"][what][k] / summary["quiet"][what][k] for k in summary["quiet"][what]}
                 for what in ("ms", "units")}
    print(json.dumps({
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "model": args.model, "rounds": args.rounds, "busy_processes": args.busy,
        "machine": {"host": platform.node(), "cpus": os.cpu_count()},
        "wall_seconds": round(time.perf_counter() - began, 1),
        "summary": summary,
        "agreement_busy_over_quiet": agreement,
        "goal": "the kernel-unit values of the busy arm within 5 % of the quiet arm's (agreement 0.95-1.05)",
        "runs": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
