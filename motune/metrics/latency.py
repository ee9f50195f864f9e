"""Measured prediction latency.

``latency(model, task, *, mode, split, batch_size, ...) -> Measurement`` with
``latency_p50_ms``, ``latency_p90_ms``, ``latency_p95_ms``, ``latency_p99_ms``
(one row at a time), ``batch_latency_p50_ms`` / ``batch_latency_p95_ms`` (one
call on ``batch_size`` rows, the deployment batch) and ``throughput_per_s``
(rows per second of calls at ``batch_size`` run back to back for
``throughput_s`` with one synchronisation at the end: real throughput, not
rows over one call's time; NaN with ``throughput_s=0``).

**What is timed** (``mode``, written in every record as ``mode`` and ``window``):

- ``"device"`` (default): a :class:`~motune.models.torch.TorchClassifier`'s
  forward pass on inputs already encoded and resident on its device, with the
  outputs left there. On a CUDA device the window is two CUDA events around the
  call, recorded after the device has drained: device time, including any gap
  while the host launches the kernels (a launch-bound model's host cost shows
  here); on a CPU the wall clock.
- ``"end_to_end"``: from encoded inputs in host memory (pinned, on a CUDA
  device) to the outputs in host memory: the non-blocking copy to the device,
  the forward pass and the copy back, on the wall clock, the current stream
  synchronised before and after (what MLPerf Inference times). Always at least
  the device time.

Any other model is timed on ``model.predict(rows)``, host rows to host
predictions, whatever the mode. A non-torch model that says it is on a CUDA
device is refused unless it has a ``synchronize()`` method, which is then
called around each call.

**How**: the calls cycle through ``n_inputs`` rows of the split drawn with
``seed`` (the policy is in the record; 1 repeats one row, which keeps the
weights hot in cache and hides length effects), each encoded once with fixed
shapes (texts padded to ``max_length``); untimed warm-up until both
``warmup`` calls and ``warmup_s`` seconds; then, with Python's garbage
collector off, timed calls until both ``min_count`` (72) calls at batch size 1
(``batch_min_count``, 36, at ``batch_size``) and ``min_time_s`` (or
``max_time_s`` with at least 3 calls). A percentile is not read from fewer
samples than its 95 % interval needs inside them (p50: 6, p90: 36, p95: 72,
p99: 368): when a study asks for one (``latency_p99_ms``,
``batch_latency_p95_ms`` ...), the run is extended to that count, and if
``max_time_s`` ends it first the measurement is refused with the reason; one
not asked for is NaN, with the reason under ``not_computed``. Each run keeps
p50 / p90 / p95 / p99 as seen, with distribution-free intervals of p50, p95
and p99 (coverage stated). Beside every timed call a reference kernel is timed
(:class:`~motune.metrics.timing.Reference`, ``reference=True``; not for a
non-torch GPU model): the record's ``speed`` holds the host's speed while
timing and every percentile in kernel units, which stay put when other
processes slow the host down. Every thread pool that decides the number (torch's intra-op threads,
the BLAS / OpenMP pools through threadpoolctl) is fixed to ``threads``
(default 1), on a CUDA device too (the host that launches the work).

**Recorded with each run**: the mode and window, the input policy and shapes,
the model's dtype and autocast, the library versions, torch's process-wide settings (TF32, matmul
precision, cuDNN flags, attention backends; :mod:`motune.metrics.settings`),
the thread counts, the host's load average before and after, the garbage
collector's state, the timing lock (:mod:`motune.locks`: one per physical
device), its wait and who trained meanwhile; on a CUDA device the GPU's
identity (name, UUID, versions), NVML readings before and after and sampled
during the run (clocks, temperature, power, throttle reasons, ECC, other
processes; :mod:`motune.metrics.gpu`) and peak memory. A run whose median's
interval is wider than ``max_ci_width`` (10 %) of the median is flagged
(``noisy``, ``flags``), not silently used; so is one during which torch's
settings changed (another thread's trial).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from motune import devices, provenance
from motune.errors import MetricError, SpecError
from motune.locks import timing_lock
from motune.metrics import settings as torch_settings
from motune.metrics import timing
from motune.metrics.gpu import GpuSampler, gpu_facts, gpu_state
from motune.metrics.registry import Measurement, register_metric
from motune.metrics.timing import (
    CONFIDENCE,
    DEFAULT_THREADS,
    CpuTimer,
    CudaTimer,
    LatencyStats,
    Reference,
    SyncTimer,
    Timer,
    fixed_threads,
    load_average,
    median_ci,
    quantile_ci,
    required_count,
    thread_counts,
    throughput,
    time_calls,
    wide_intervals,
)
from motune.models import device_of, unwrap

DEFAULT_MAX_CI_WIDTH = 0.10  # a run whose median's interval is wider than this share of the median is flagged
MODES = ("device", "end_to_end")
PERCENTILES = {  # metric: (run, quantile)
    "latency_p50_ms": ("batch_1", 0.5), "latency_p90_ms": ("batch_1", 0.9), "latency_p95_ms": ("batch_1", 0.95),
    "latency_p99_ms": ("batch_1", 0.99), "batch_latency_p50_ms": ("batch", 0.5), "batch_latency_p95_ms": ("batch", 0.95),
}
LATENCY_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
                   "batch_latency_p50_ms", "batch_latency_p95_ms", "throughput_per_s")
WINDOWS = {
    "device": "the forward pass on inputs already on the device; outputs left there (CUDA: events around "
              "the call)",
    "end_to_end": "encoded inputs in host memory (pinned on CUDA) copied to the device, the forward pass, "
                  "the outputs copied back to host memory (wall clock)",
    "predict": "model.predict on host rows to host predictions (wall clock)",
}

__all__ = ["CpuTimer", "CudaTimer", "LatencyOptions", "LatencyStats", "SyncTimer", "Timer", "fixed_threads", "gpu_state",
           "latency", "median_ci", "quantile_ci", "time_calls", "timer_for"]


def timer_for(device: str, *, cuda: Any = None) -> Timer:
    """A CUDA event timer for a ``cuda`` device, the CPU clock for anything else."""
    return CudaTimer(device, cuda=cuda) if devices.is_cuda(device) else CpuTimer(str(device))


@dataclass(frozen=True)
class LatencyOptions:
    """Every option of a latency run and its default, checked when made: the one place the metric
    (``metric_options={"latency": {...}}``), the timed loop and confirmation take them from. Field
    meanings are in the module docstring; ``min_count`` / ``min_time_s`` are the batch-1 run's (the batch
    run needs ``batch_min_count`` calls)."""

    mode: str = "device"
    batch_size: int = 256
    warmup: int = timing.WARMUP
    warmup_s: float = 0.1
    min_count: int = timing.MIN_COUNT
    batch_min_count: int = 36
    min_time_s: float = timing.MIN_TIME_S
    max_time_s: float = timing.MAX_TIME_S
    device: Any = None
    threads: int | None = None
    max_ci_width: float = DEFAULT_MAX_CI_WIDTH
    n_inputs: int = 32
    seed: int = 0
    throughput_s: float = 0.3
    reference: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.warmup < 0 or self.warmup_s < 0 or self.min_count < 1 \
                or self.batch_min_count < 1 or self.min_time_s < 0 or self.max_time_s <= 0:
            raise SpecError(
                "need batch_size >= 1, warmup >= 0, warmup_s >= 0, min_count >= 1, batch_min_count >= 1, "
                f"min_time_s >= 0 and max_time_s > 0; got batch_size={self.batch_size}, warmup={self.warmup}, "
                f"warmup_s={self.warmup_s}, min_count={self.min_count}, batch_min_count={self.batch_min_count}, "
                f"min_time_s={self.min_time_s}, max_time_s={self.max_time_s}"
            )
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise SpecError(f"threads must be a positive int or None, got {self.threads!r}")
        if isinstance(self.max_ci_width, bool) or not isinstance(self.max_ci_width, (int, float)) \
                or not self.max_ci_width > 0:
            raise SpecError(f"max_ci_width must be a positive fraction of the median, got {self.max_ci_width!r}")
        if self.mode not in MODES:
            raise SpecError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if isinstance(self.n_inputs, bool) or not isinstance(self.n_inputs, int) or self.n_inputs < 1:
            raise SpecError(f"n_inputs must be a positive int (the rows timed calls cycle through), got "
                            f"{self.n_inputs!r}")
        if not self.throughput_s >= 0:
            raise SpecError(f"throughput_s must be >= 0 (0: no throughput run), got {self.throughput_s!r}")
        if not isinstance(self.reference, bool):
            raise SpecError(f"reference must be True or False (time a fixed kernel beside the calls), got "
                            f"{self.reference!r}")

    @classmethod
    def of(cls, options: Any = None) -> LatencyOptions:
        """Options from a dict (a study's ``metric_options["latency"]``); an unknown name is a
        :class:`~motune.errors.SpecError` naming the ones there are."""
        if isinstance(options, LatencyOptions):
            return options
        options = dict(options or {})
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise SpecError(f"unknown latency option(s) {unknown}; the options are {[f.name for f in fields(cls)]}")
        return cls(**options)

    def at_least(self, *, min_count: int, min_time_s: float) -> LatencyOptions:
        """These options with at least ``min_count`` calls and ``min_time_s`` seconds (and room for them)."""
        time_s = max(self.min_time_s, min_time_s)
        return replace(self, min_count=max(self.min_count, min_count), min_time_s=time_s,
                       max_time_s=max(self.max_time_s, 3 * time_s))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_latency_options(**options: Any) -> None:
    """Raise :class:`~motune.errors.SpecError` for options :func:`latency` cannot use (:class:`LatencyOptions`)."""
    LatencyOptions.of(options)


def _check_device(model: Any, device: Any) -> str:
    """The device to time on: the model's own; ``device`` may only name it (for a model motune
    cannot place, e.g. one with no torch parameters, it is taken as given)."""
    actual = device_of(model)
    if device is None:
        return actual
    asked = str(device)
    torch = sys.modules.get("torch")
    placed = torch is not None and (isinstance(model, torch.nn.Module) or isinstance(getattr(model, "module", None),
                                                                                    torch.nn.Module))
    same = devices.same(asked, actual)
    if placed and not same:
        raise SpecError(f"latency device={asked!r}, but the model is on {actual!r}: move the model, "
                        "or leave device unset to time it where it is")
    return asked


def _rows(X: Any, n: int, seed: int) -> list[int]:
    """The row positions timed calls cycle through: ``n`` drawn with ``seed`` (all, when there are fewer)."""
    if n >= len(X):
        return list(range(len(X)))
    return sorted(np.random.default_rng(seed).choice(len(X), size=n, replace=False).tolist())


def _shapes(inputs: Any) -> dict[str, list[int]]:
    if isinstance(inputs, dict) or hasattr(inputs, "keys"):
        return {k: list(v.shape) for k, v in inputs.items()}
    return {"input": list(getattr(inputs, "shape", []))}


class _Calls:
    """The zero-argument calls latency times: one per input row, one on a batch, and what they are."""

    def __init__(self, model: Any, X: Any, rows: list[int], batch_size: int, mode: str) -> None:
        from motune.models.torch import TorchClassifier

        self.torch = isinstance(model, TorchClassifier)
        batch_rows = X.iloc[:batch_size]
        if not self.torch:
            self.single = [(lambda x=X.iloc[[i]]: model.predict(x)) for i in rows]
            self.batch = lambda: model.predict(batch_rows)
            self.timed, self.shapes = "predict", {"rows": [1, int(X.shape[1])]}
            return
        cuda = devices.is_cuda(model.device)
        if mode == "device":
            inputs = [model.inputs(X.iloc[[i]]) for i in rows]
            batch = model.inputs(batch_rows)
            self.single = [(lambda x=x: model.forward(x)) for x in inputs]
            self.batch = lambda: model.forward(batch)
        else:  # host memory in, host memory out
            inputs = [model.host_inputs(X.iloc[[i]], pin=cuda) for i in rows]
            batch = model.host_inputs(batch_rows, pin=cuda)

            def end_to_end(x: Any) -> Any:
                return model.forward(model.to_device(x, non_blocking=cuda)).cpu()

            self.single = [(lambda x=x: end_to_end(x)) for x in inputs]
            self.batch = lambda: end_to_end(batch)
        self.timed = "forward"
        self.shapes = _shapes(inputs[0])


def _timer(model: Any, device: str, mode: str, calls: _Calls) -> Timer:
    if not devices.is_cuda(device):
        return CpuTimer(device)
    if not calls.torch:
        sync = getattr(model, "synchronize", None)
        if not callable(sync):
            raise MetricError(f"{type(model).__name__} says it runs on {device}, but it is not a torch model motune "
                              "can synchronise: give it a synchronize() method (called around each timed call), or "
                              "time it on the CPU")
        return SyncTimer(device, sync)
    if mode == "end_to_end":
        import torch

        stream = torch.cuda.current_stream(device)  # this stream only: not other threads' work on the device
        return SyncTimer(device, stream.synchronize)
    return CudaTimer(device)


def _versions() -> dict[str, Any]:
    """Python, the packages provenance lists, and the BLAS / OpenMP libraries loaded (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    env = provenance.environment()
    pools = {f"{p.get('internal_api')}:{p.get('prefix')}": p.get("version") for p in threadpool_info()}
    return {"python": env["python"], **env["versions"], **pools}


@contextlib.contextmanager
def serving_mode(model: Any) -> Iterator[None]:
    """For a torch model: ``eval()`` and ``torch.inference_mode()`` around the whole timing run
    (entered once, so switching modes is not in any sample); nothing for other models."""
    from motune.models.torch import TorchClassifier, evaluating

    if not isinstance(model, TorchClassifier):
        yield
        return
    import torch

    with evaluating(model.module), torch.inference_mode():
        yield


def timed_call(model: Any, X: Any) -> tuple[Callable[[], Any], str]:
    """The call latency times for rows ``X`` (device mode), and what it is (kept for callers of one row)."""
    calls = _Calls(model, X, [0], len(X), "device")
    return calls.single[0], calls.timed


@register_metric(LATENCY_METRICS, key="latency", validate=check_latency_options, static=True)
def latency(model: Any, task: Any, *, split: str = "valid", asked: list[str] | None = None, **options: Any
            ) -> Measurement:
    """Latency percentiles at batch size 1 and at ``batch_size``, and throughput (see the module docstring);
    ``options``: :class:`LatencyOptions`."""
    o = LatencyOptions.of(options)
    mode, batch_size, device, threads = o.mode, o.batch_size, o.device, o.threads
    min_count, batch_min_count, max_time_s, seed = o.min_count, o.batch_min_count, o.max_time_s, o.seed
    raw = unwrap(model)
    device = _check_device(raw, device)
    X = task.split(split)[0]
    if len(X) == 0:
        raise SpecError(f"split {split!r} has no rows to time")
    asked = list(asked or [])
    count = max([min_count] + [required_count(q) for name, (run, q) in PERCENTILES.items()
                               if run == "batch_1" and name in asked])
    batch_count = max([batch_min_count] + [required_count(q) for name, (run, q) in PERCENTILES.items()
                                           if run == "batch" and name in asked])
    rows = _rows(X, o.n_inputs, seed)
    calls = _Calls(raw, X, rows, batch_size, mode)
    timer = _timer(raw, device, mode, calls)
    batch_rows = min(batch_size, len(X))
    kernel = Reference(device=device) if o.reference and (not devices.is_cuda(device) or calls.torch) else None
    options = dict(warmup=o.warmup, warmup_s=o.warmup_s, min_count=count, min_time_s=o.min_time_s,
                   max_time_s=max_time_s, reference=kernel)
    cuda = devices.is_cuda(device)
    torch = sys.modules.get("torch") if cuda and calls.torch else None  # peak memory: torch's allocator
    with timing_lock(device) as lock:
        settings_before = torch_settings.torch_settings()
        gpu_before = gpu_facts(device) if cuda else None
        load_before = load_average()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats(device)
        with fixed_threads(DEFAULT_THREADS if threads is None else threads) as thread_count, serving_mode(raw), \
                (GpuSampler(device) if cuda else contextlib.nullcontext()) as sampler:
            one = time_calls(calls.single, timer=timer, batch_size=1, **options)
            many = time_calls(calls.batch, timer=timer, batch_size=batch_rows, **{**options, "min_count": batch_count})
            flow = throughput(calls.batch, timer=timer, rows=batch_rows, min_time_s=o.throughput_s) \
                if o.throughput_s > 0 else None
            threads_seen = thread_counts()
        load_after = load_average()
        settings_after = torch_settings.torch_settings()
        gpu_after = gpu_facts(device) if cuda else None
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if torch is not None else None
    runs = {"batch_1": one, "batch": many}
    values: dict[str, float] = {}
    not_computed = {}
    for name, (run, q) in PERCENTILES.items():
        stats, needed = runs[run], required_count(q)
        if stats.count >= needed:
            values[name] = getattr(stats, f"p{round(100 * q)}_ms")
            continue
        why = (f"needs at least {needed} timed calls for its {CONFIDENCE:.0%} interval to lie inside the samples; "
               f"the {run} run had {stats.count}")
        if name in asked:
            raise MetricError(f"{name} {why} (max_time_s={max_time_s:g} ended it): raise max_time_s "
                              "(metric_options latency) or ask for a lower percentile")
        values[name] = float("nan")  # not read from too few samples; the run's statistics keep what was seen
        not_computed[name] = why
    flags = wide_intervals({"batch_1": one, "batch": many}, o.max_ci_width)
    if settings_after != settings_before:  # another thread of this process changed them meanwhile
        changed = sorted(k for k in {*(settings_before or {}), *(settings_after or {})}
                         if (settings_before or {}).get(k) != (settings_after or {}).get(k))
        flags.append(f"torch settings changed while timing: {', '.join(changed)} (trials in threads share them; "
                     "use worker processes)")
    values["throughput_per_s"] = flow["throughput_per_s"] if flow else float("nan")  # not measured: not estimated
    window = "predict" if calls.timed == "predict" else mode
    details = {
        "mode": "end_to_end" if window == "predict" else mode,
        "window": WINDOWS[window],
        "device": device,
        "method": timer.method,
        "timed": calls.timed,
        "inputs": {"policy": f"{len(rows)} rows of the {split} split drawn with seed {seed}, cycled; batch: its "
                             f"first {batch_rows} rows", "rows": len(rows), "shapes_batch_1": calls.shapes},
        "dtype": str(getattr(raw, "dtype", None)) if calls.torch else None,
        "autocast": _autocast_of(raw) if calls.torch else None,
        "env_overrides": {k: os.environ[k] for k in ENV_OVERRIDES if k in os.environ},
        "torch_settings": settings_before,
        "versions": _versions(),
        "threads": threads_seen,
        "threads_fixed": thread_count,
        "load_average_before": load_before,  # 1, 5, 15 minutes
        "load_average_after": load_after,
        "gc_disabled": one.gc_disabled,
        "count_asked": count,
        "batch_count_asked": batch_count,
        "not_computed": not_computed,  # percentiles left out (NaN): too few samples for their interval
        "noisy": bool(flags),
        "flags": flags,
        "throughput": flow,
        "gpu": None if not cuda else {"before": gpu_before, "after": gpu_after,
                                      "during": sampler.summary() if sampler is not None else None,
                                      "peak_memory_mb": peak_mb},
        "lock_wait_s": lock["lock_wait_s"],
        "lock": lock["lock"],  # the physical device serialised on: cpu-<host> or gpu-<UUID>
        "timing_mode": lock["mode"],
        "others_training": lock["others_training"],  # processes training on this host meanwhile
        "batch_1": one.to_dict(),
        "batch": many.to_dict(),
        "speed": speed_record(runs, values),
    }
    return Measurement(values, details)


ENV_OVERRIDES = ("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE", "TORCH_CUDNN_V8_API_DISABLED",
                 "CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF", "CUDA_LAUNCH_BLOCKING")  # move timings too


def _autocast_of(raw: Any) -> str | None:
    """What autocast the timed forward runs under: the classifier's own, or the mixed precision a Trainer's
    accelerate patched into the module's ``forward`` (it keeps the original as ``_original_forward``)."""
    if getattr(raw.module, "_original_forward", None) is not None:
        return f"accelerate mixed precision (forward patched){' + ' + raw.autocast if raw.autocast else ''}"
    return raw.autocast


def speed_record(runs: dict[str, LatencyStats], values: dict[str, float]) -> dict[str, Any] | None:
    """The host's speed while timing (the reference kernel's time per unit, each run's) and every percentile
    in kernel units: the numbers that compare timings taken on a busy and a quiet host."""
    if not all(run.reference for run in runs.values()):
        return None
    normalised = {}
    for name, (run, q) in PERCENTILES.items():
        units = runs[run].in_units(f"p{round(100 * q)}")
        if units is not None and np.isfinite(values.get(name, float("nan"))):
            normalised[name] = units
    first = runs["batch_1"].reference
    return {"kernel": first["kernel"], "reference_ms": first["unit_p50_ms"],
            "runs": {name: run.reference for name, run in runs.items()}, "normalised": normalised,
            "what": "each percentile divided by the same percentile of the reference kernel's time per unit, "
                    "timed between the calls: latency in kernel units, comparable across loads and moments"}
