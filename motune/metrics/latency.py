"""Measured prediction latency.

``latency(model, task, *, split, batch_size, ...) -> Measurement`` with
``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms`` (one row at a
time) and ``throughput_per_s`` (rows per second at ``batch_size``).

Latency is measured, never estimated: a fixed input, untimed warm-up calls,
then timed calls repeated until both ``min_count`` calls and ``min_time_s``
seconds are reached (or ``max_time_s`` passes with at least 3 calls). On a
CPU each call is timed with :func:`time.perf_counter_ns` and the thread
counts are recorded; on a CUDA device with CUDA events around the call and a
synchronisation before reading them. Timing runs hold a host-wide file lock,
so trials running in parallel on one machine do not time each other; the
wait for the lock is recorded and not counted.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from filelock import FileLock

from motune.metrics.registry import Measurement, register_metric
from motune.models import device_of, unwrap

LATENCY_METRICS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_per_s")


class Timer(Protocol):
    device: str
    method: str

    def time_ms(self, fn: Callable[[], Any]) -> float: ...


class CpuTimer:
    """Wall-clock time of one call with ``time.perf_counter_ns``."""

    method = "perf_counter_ns"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def time_ms(self, fn: Callable[[], Any]) -> float:
        start = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - start) / 1e6


class CudaTimer:
    """GPU time of one call between two CUDA events on the device's current stream.

    Pending work is drained first (so it is not charged to this call), the
    events are recorded around the call, and the end event is synchronised
    before ``elapsed_time`` is read. ``cuda`` is the ``torch.cuda`` module
    (injectable so that this logic is testable without a GPU).
    """

    method = "cuda_event"

    def __init__(self, device: str, *, cuda: Any = None) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.device = device
        self._cuda = cuda

    def time_ms(self, fn: Callable[[], Any]) -> float:
        cuda = self._cuda
        stream = cuda.current_stream(self.device)
        start = cuda.Event(enable_timing=True)
        end = cuda.Event(enable_timing=True)
        cuda.synchronize(self.device)
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        return float(start.elapsed_time(end))


def timer_for(device: str, *, cuda: Any = None) -> Timer:
    """A CUDA event timer for a ``cuda`` device, the CPU clock for anything else."""
    return CudaTimer(device, cuda=cuda) if str(device).startswith("cuda") else CpuTimer(str(device))


@dataclass(frozen=True)
class LatencyStats:
    batch_size: int
    count: int
    warmup: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    total_s: float
    stopped_by: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_calls(
    fn: Callable[[], Any],
    *,
    timer: Timer,
    batch_size: int,
    warmup: int = 5,
    min_count: int = 30,
    min_time_s: float = 0.2,
    max_time_s: float = 10.0,
) -> LatencyStats:
    """Warm up, then time ``fn`` until ``min_count`` calls and ``min_time_s`` are both reached."""
    check_latency_options(batch_size=batch_size, warmup=warmup, min_count=min_count,
                          min_time_s=min_time_s, max_time_s=max_time_s)
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    began = time.perf_counter()
    stopped_by = "min_count_and_time"
    while True:
        samples.append(timer.time_ms(fn))
        elapsed = time.perf_counter() - began
        if len(samples) >= min_count and elapsed >= min_time_s:
            break
        if elapsed >= max_time_s and len(samples) >= 3:
            stopped_by = "max_time"
            break
    arr = np.asarray(samples)
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return LatencyStats(
        batch_size=batch_size, count=len(arr), warmup=warmup,
        p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
        mean_ms=float(arr.mean()), min_ms=float(arr.min()), max_ms=float(arr.max()),
        total_s=float(time.perf_counter() - began), stopped_by=stopped_by,
    )


def lock_path() -> str:
    """The host-wide lock file that serialises latency runs (``MOTUNE_LATENCY_LOCK`` overrides it)."""
    return os.environ.get("MOTUNE_LATENCY_LOCK") or os.path.join(tempfile.gettempdir(), "motune-latency.lock")


def thread_counts() -> dict[str, Any]:
    """The thread counts that decide CPU latency: BLAS / OpenMP pools, torch, and the CPUs."""
    from threadpoolctl import threadpool_info

    counts: dict[str, Any] = {"cpu_count": os.cpu_count()}
    for pool in threadpool_info():
        counts[f"{pool.get('user_api')}:{pool.get('internal_api')}"] = pool.get("num_threads")
    torch = sys.modules.get("torch")
    if torch is not None:
        counts["torch"] = torch.get_num_threads()
    return counts


def check_latency_options(*, batch_size: int = 256, warmup: int = 5, min_count: int = 30, min_time_s: float = 0.2,
                          max_time_s: float = 10.0, device: str | None = None) -> None:
    """Raise ``ValueError`` for option values :func:`latency` cannot use."""
    if batch_size < 1 or warmup < 0 or min_count < 1 or min_time_s < 0 or max_time_s <= 0:
        raise ValueError(
            "need batch_size >= 1, warmup >= 0, min_count >= 1, min_time_s >= 0 and max_time_s > 0; got "
            f"batch_size={batch_size}, warmup={warmup}, min_count={min_count}, "
            f"min_time_s={min_time_s}, max_time_s={max_time_s}"
        )


@register_metric(LATENCY_METRICS, key="latency", validate=check_latency_options, static=True)
def latency(
    model: Any,
    task: Any,
    *,
    split: str = "valid",
    batch_size: int = 256,
    warmup: int = 5,
    min_count: int = 30,
    min_time_s: float = 0.2,
    max_time_s: float = 10.0,
    device: str | None = None,
) -> Measurement:
    """Predict latency at batch size 1 (percentiles) and throughput at ``batch_size``."""
    raw = unwrap(model)
    device = device or device_of(raw)
    timer = timer_for(device)
    X = task.split(split)[0]
    single, batch = X.iloc[:1], X.iloc[:batch_size]
    options = dict(warmup=warmup, min_count=min_count, min_time_s=min_time_s, max_time_s=max_time_s)
    asked = time.perf_counter()
    with FileLock(lock_path()):
        waited_s = time.perf_counter() - asked
        one = time_calls(lambda: raw.predict(single), timer=timer, batch_size=1, **options)
        many = time_calls(lambda: raw.predict(batch), timer=timer, batch_size=len(batch), **options)
    values = {
        "latency_p50_ms": one.p50_ms,
        "latency_p95_ms": one.p95_ms,
        "latency_p99_ms": one.p99_ms,
        "throughput_per_s": len(batch) / (many.p50_ms / 1000.0),
    }
    details = {
        "device": device,
        "method": timer.method,
        "threads": thread_counts() if timer.method == "perf_counter_ns" else None,
        "lock_wait_s": waited_s,
        "batch_1": one.to_dict(),
        "batch": many.to_dict(),
    }
    return Measurement(values, details)
