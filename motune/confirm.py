"""Confirmation: the front re-measured after the sweep, from the kept models, never retrained.

``mt.confirm(result)`` loads each front trial's model from the artifact store
(its hash checked) and

- measures every objective, constraint and extra metric of the study on the
  held-out **test** split (text tasks: fairness on the held-out probe), with
  bootstrap intervals from fairlearn for the prediction-based metrics
  (:mod:`motune.metrics.intervals`);
- re-times latency quietly: only when no trial of the study is running (a
  running one is refused unless ``allow_running=True``, and then flagged), under
  its device's timing lock, in the study's latency mode, with more calls (``latency_min_count``,
  ``latency_min_time_s``), the study's thread settings and the host's load
  recorded; p50 / p95 / p99 get order-statistic intervals; a run whose median
  interval stays wider than ``max_ci_width`` is flagged ``noisy``;
- marks a trial "fails on test" when a test value breaks a constraint.

Each confirmation is stored with the study (``motune:confirmation:<trial>``)
and appears as ``record.confirmation``; it returns the refreshed result.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import Any

from motune import _schema
from motune.errors import SpecError
from motune.metrics.intervals import bootstrap_intervals
from motune.metrics.registry import group_for, measure
from motune.results import Result


def confirm(
    result: Result,
    *,
    trials: Sequence[int] | None = None,
    task: Any = None,
    n_boot: int = 100,
    confidence: float = 0.95,
    seed: int = 0,
    latency_min_count: int = 400,
    latency_min_time_s: float = 2.0,
    allow_running: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Re-measure front trials (or ``trials``) of a stored study; returns the refreshed result.

    ``task``: the study's task, needed because a stored study keeps only its summary; it must be the
    same data (its fingerprint is checked). ``progress(line)`` is told what is being confirmed.
    """
    task = _check_task(result, task)
    result.refresh()
    running = [r.number for r in result.records() if r.state == "RUNNING"]
    if running and not allow_running:
        raise SpecError(f"{len(running)} trial(s) of study {result.name!r} are running ({running[:5]}): latency is "
                        "re-timed with nothing else of the study running; wait for the run to end, or pass "
                        "allow_running=True (--allow-running) and the latency is flagged")
    numbers = [r.number for r in result.records() if r.on_front] if trials is None else list(trials)
    if not numbers:
        raise SpecError(f"study {result.name!r} has no trial on the front to confirm")
    names = result.info.get("measured_metrics") or result.metric_columns()
    options = {k: dict(v) for k, v in (result.info.get("metric_options") or {}).items()}
    for number in numbers:
        record = result.record(number)
        if record.state != "COMPLETE":
            raise SpecError(f"trial {number} of study {result.name!r} is {record.state}, not a completed trial")
        if progress is not None:
            progress(f"confirming trial {number}: test split with intervals, quiet latency")
        model = result.load_model(number)
        confirmation = confirm_one(result, record, model, task, names, options, n_boot=n_boot, confidence=confidence,
                                   seed=seed, latency_min_count=latency_min_count,
                                   latency_min_time_s=latency_min_time_s, others_running=bool(running))
        result.set_study_attrs(_schema.confirmation_attrs(number, confirmation))
    return result.refresh()


def confirm_one(result: Result, record: Any, model: Any, task: Any, names: Sequence[str],
                options: dict[str, dict[str, Any]], *, n_boot: int, confidence: float, seed: int,
                latency_min_count: int, latency_min_time_s: float, others_running: bool) -> dict[str, Any]:
    """The confirmation record of one trial (see the module docstring)."""
    quiet = dict(options)
    if "latency" in quiet or any(group_for(n).key == "latency" for n in names):
        latency = dict(quiet.get("latency", {}))
        latency["min_count"] = max(latency_min_count, latency.get("min_count", 0))
        latency["min_time_s"] = max(latency_min_time_s, latency.get("min_time_s", 0.0))
        latency["max_time_s"] = max(latency.get("max_time_s", 10.0), 3 * latency["min_time_s"])
        quiet["latency"] = latency
    measured = measure(model, task, names, options=quiet, split="test")
    intervals = bootstrap_intervals(model, task, names, split="test", n_boot=n_boot, confidence=confidence, seed=seed)
    values = {}
    for name, value in measured.values.items():
        low, high = intervals.get(name, (None, None))
        values[name] = {"value": value, "low": low, "high": high}
    latency = measured.details.get("latency")
    if latency:
        run = latency["batch_1"]
        for q in ("p50", "p95", "p99"):
            name = f"latency_{q}_ms"
            if name in values:
                values[name] |= {"low": run.get(f"{q}_ci_low_ms"), "high": run.get(f"{q}_ci_high_ms"),
                                 "coverage": run.get(f"{q}_ci_confidence")}
    constraints = {}
    for c in result.constraints:
        if c.metric not in values:
            continue
        entry = values[c.metric]
        worst = entry["high"] if c.op == "<=" else entry["low"]
        constraints[c.key] = {"value": c.violation(entry["value"]), "kept": c.violation(entry["value"]) <= 0,
                              "kept_at_interval_end": None if worst is None else c.violation(worst) <= 0}
    failed = [k for k, v in constraints.items() if not v["kept"]]
    noisy = bool(latency and latency.get("noisy"))
    return {
        "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "split": "test",
        "n_boot": n_boot,
        "confidence": confidence,
        "seed": seed,
        "values": values,
        "constraints": constraints,
        "fails_on_test": bool(failed),
        "failed_constraints": failed,
        "latency": None if not latency else {**latency, "others_running": others_running},
        "latency_flagged": noisy or others_running,
        "model": {k: (record.model or {}).get(k) for k in ("artifact_id", "sha256")},
        "fairness": measured.details.get("fairness"),
    }


def _check_task(result: Result, task: Any) -> Any:
    task = task if task is not None else result.task()
    expected = result.info.get("data_fingerprint")
    if expected and getattr(task, "fingerprint", None) != expected:
        raise SpecError(f"this task's data ({getattr(task, 'fingerprint', None)}) is not the data study "
                        f"{result.name!r} was run on ({expected}); confirm with the same task")
    return task
