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
  recorded; p50 / p95 / p99 get order-statistic intervals. Timing locks
  serialise motune's own processes but cannot quiet anyone else's, so before
  each timing run confirmation waits (at most ``quiet_wait_s``) until the host
  keeps at most ``quiet_cpus`` CPUs busy (other processes' work, read from
  ``/proc/stat``), and a run whose median interval is wider than
  ``max_ci_width`` is re-timed until it is narrow enough or ``retime_s`` has
  passed. What it asked, waited and saw (each attempt's median, interval and
  load) is recorded under ``quiet``; a value still flagged, or timed on a host
  that never got quiet, is flagged (``latency_flagged``), and decisions refuse
  to rest on it unless told. Each run's ``speed`` holds the host's speed and
  the values in kernel units (:mod:`motune.metrics.timing`), which compare a
  busy timing with a quiet one;
- marks a trial "fails on test" when a test value breaks a constraint.

Each confirmation is stored with the study (``motune:confirmation:<trial>``)
and appears as ``record.confirmation``; it returns the refreshed result.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from typing import Any

from motune import _schema, devices
from motune.errors import SpecError
from motune.metrics.intervals import bootstrap_intervals
from motune.metrics.latency import LatencyOptions
from motune.metrics.registry import group_for, measure
from motune.metrics.timing import wait_for_quiet
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
    quiet_cpus: float = 0.5,
    quiet_wait_s: float = 60.0,
    retime_s: float = 30.0,
    allow_running: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Result:
    """Re-measure front trials (or ``trials``) of a stored study; returns the refreshed result.

    ``task``: the study's task, needed because a stored study keeps only its summary; it must be the
    same data (its fingerprint is checked). ``quiet_cpus``, ``quiet_wait_s``, ``retime_s``: the quiet host
    latency waits for and how long, and how long a flagged timing is re-timed (see the module docstring).
    ``progress(line)`` is told what is being confirmed (trial k of n, and the time left by then).
    """
    for what, value in (("quiet_cpus", quiet_cpus), ("quiet_wait_s", quiet_wait_s), ("retime_s", retime_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise SpecError(f"{what} must be a number >= 0, got {value!r}")
    quiet = {"quiet_cpus": float(quiet_cpus), "quiet_wait_s": float(quiet_wait_s), "retime_s": float(retime_s)}
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
    began = time.monotonic()
    for k, number in enumerate(numbers, start=1):
        record = result.record(number)
        if progress is not None:
            left = "" if k == 1 else f"; about {(time.monotonic() - began) / (k - 1) * (len(numbers) - k + 1):.0f} s left"
            progress(f"confirming trial {number} ({k} of {len(numbers)}): test split with intervals, quiet latency"
                     f"{left}")
        device, moved = _device_for(record)
        model = result.load_model(number, device=device)
        confirmation = confirm_one(result, record, model, task, names, options, n_boot=n_boot, confidence=confidence,
                                   seed=seed, latency_min_count=latency_min_count,
                                   latency_min_time_s=latency_min_time_s, others_running=bool(running), quiet=quiet)
        if moved:
            confirmation["latency_flagged"] = True
            confirmation["device_moved"] = moved
        _schema.store_study_attrs(result.study, _schema.confirmation_attrs(number, confirmation))
    return result.refresh()


def confirm_one(result: Result, record: Any, model: Any, task: Any, names: Sequence[str],
                options: dict[str, dict[str, Any]], *, n_boot: int, confidence: float, seed: int,
                latency_min_count: int, latency_min_time_s: float, others_running: bool,
                quiet: dict[str, float] | None = None) -> dict[str, Any]:
    """The confirmation record of one trial (see the module docstring)."""
    quiet = {"quiet_cpus": 0.5, "quiet_wait_s": 60.0, "retime_s": 30.0, **(quiet or {})}
    timed = [n for n in names if group_for(n).key == "latency"]
    options = dict(options)
    if timed:  # the study's latency options, with more calls
        options["latency"] = LatencyOptions.of(options.get("latency")).at_least(
            min_count=latency_min_count, min_time_s=latency_min_time_s).to_dict()
    measured = measure(model, task, [n for n in names if n not in timed], options=options, split="test")
    waited = None
    if timed:
        timing, waited = _quiet_timing(model, task, timed, options, quiet)
        measured = type(measured)({**measured.values, **timing.values}, {**measured.details, **timing.details})
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
        constraints[c.key] = {"value": c.violation(entry["value"]), "kept": bool(c.kept(entry["value"])),
                              "kept_at_interval_end": c.kept_at_interval_end(entry["low"], entry["high"])}
    failed = [k for k, v in constraints.items() if not v["kept"]]
    noisy = bool(latency and latency.get("noisy"))
    loud = bool(waited and not waited["quiet"])
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
        "latency": None if not latency else {**latency, "others_running": others_running, "flags": [
            *latency.get("flags", []),
            *([f"the host never got quiet: {waited['busy_cpus']} CPUs busy at the end, {quiet['quiet_cpus']:g} "
               f"allowed, after {waited['waited_s']:g} s"] if loud else [])], "noisy": noisy or loud},
        "latency_flagged": noisy or others_running or loud,
        "quiet": waited,
        "model": {k: (record.model or {}).get(k) for k in ("artifact_id", "sha256")},
        "fairness": measured.details.get("fairness"),
    }


def _device_for(record: Any) -> tuple[str | None, str | None]:
    """Where a trial's model is confirmed: the device its latency was timed on during the sweep (a GPU front
    is re-timed on its GPU), or the CPU where that device is not here, with the reason (its latency is then
    not comparable and is flagged)."""
    timed = ((record.attrs or {}).get("latency") or {}).get("device")
    if timed is None or not devices.is_cuda(timed):
        return None, None
    try:
        import torch  # a model timed on a GPU is a torch model: loading it imports torch anyway
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        return timed, None
    return None, (f"trial {record.number} was timed on {timed} during the sweep; no GPU is usable here, so it was "
                  "re-timed on the CPU")


def _quiet_timing(model: Any, task: Any, names: Sequence[str], options: dict[str, dict[str, Any]],
                  quiet: dict[str, float]) -> tuple[Any, dict[str, Any]]:
    """Latency on the test split on a host as quiet as it gets: wait for ``quiet_cpus`` (at most
    ``quiet_wait_s``), time, and re-time while the run is flagged and ``retime_s`` has not passed; returns
    the measurement kept (the last unflagged one, else the one with the narrowest median interval) and the
    record of what was asked, waited and seen."""
    deadline = None  # re-timing's limit counts from the first flagged run
    attempts, kept, best = [], None, None
    while True:
        waited = wait_for_quiet(quiet["quiet_cpus"], quiet["quiet_wait_s"] if deadline is None
                                else max(0.0, min(quiet["quiet_wait_s"], deadline - time.monotonic())))
        timing = measure(model, task, names, options=options, split="test")
        details = timing.details["latency"]
        run = details["batch_1"]
        width = (run["p50_ci_high_ms"] - run["p50_ci_low_ms"]) / run["p50_ms"] if run["p50_ms"] > 0 else None
        attempts.append({"p50_ms": run["p50_ms"], "p50_interval_share": width, "noisy": details["noisy"],
                         "busy_cpus_before": waited["busy_cpus"], "waited_s": waited["waited_s"],
                         "load_average_before": details["load_average_before"],
                         "reference_ms": (details.get("speed") or {}).get("reference_ms")})
        if best is None or (width is not None and width < best[0]):
            best = (width if width is not None else float("inf"), timing, waited)
        if not details["noisy"]:
            kept = (timing, waited)
            break
        deadline = deadline if deadline is not None else time.monotonic() + quiet["retime_s"]
        if time.monotonic() >= deadline:
            break
    timing, waited = kept if kept is not None else best[1:]
    return timing, {**waited, **quiet, "attempts": attempts, "retimed": len(attempts) - 1}


def _check_task(result: Result, task: Any) -> Any:
    task = task if task is not None else result.task()
    expected = result.info.get("data_fingerprint")
    if expected and getattr(task, "fingerprint", None) != expected:
        raise SpecError(f"this task's data ({getattr(task, 'fingerprint', None)}) is not the data study "
                        f"{result.name!r} was run on ({expected}); confirm with the same task")
    return task
