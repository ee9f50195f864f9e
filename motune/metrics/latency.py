"""Measured prediction latency.

``latency(model, task, *, split, batch_size, ...) -> Measurement`` with
``latency_p50_ms``, ``latency_p90_ms``, ``latency_p95_ms``, ``latency_p99_ms``
(one row at a time), ``batch_latency_p50_ms`` / ``batch_latency_p95_ms`` (one
call on ``batch_size`` rows, the deployment batch) and ``throughput_per_s``
(rows per second at ``batch_size``).

Latency is measured, never estimated: a fixed input, untimed warm-up calls,
then timed calls repeated until both ``min_count`` calls and ``min_time_s``
seconds are reached (or ``max_time_s`` passes with at least 3 calls). Each
run records its sample count and a distribution-free 95 % confidence
interval of the median (order statistics).

What is timed: for a :class:`motune.models.torch.TorchClassifier`, the
module's forward pass in ``eval()`` and ``torch.inference_mode()`` on inputs
encoded once with fixed shapes (tokenised and padded to ``max_length`` for
text), so encoding is not counted; for any other model, ``model.predict`` on
a fixed frame.

Every thread pool that decides the number (torch's intra-op threads, the
BLAS / OpenMP pools through threadpoolctl) is fixed to ``threads`` (default
1) for the run and the counts are recorded, with the host's load average
before and after (on a CUDA device too: the host side that launches the
work). A run whose median's confidence interval is wider than
``max_ci_width`` (default 10 %) of the median is flagged (``noisy`` and a
sentence in ``flags``), not silently used. On a CPU each call is timed with
:func:`time.perf_counter_ns`. On a CUDA device each call is timed with CUDA events on the
current stream and a synchronisation before reading them; the device name
and, when nvidia-ml-py is installed, SM / memory clocks and temperature
before and after the run are recorded. Timing runs hold the lock of their
physical device (:mod:`motune.locks`: the host's CPU, or a GPU by its UUID),
so workers do not time each other on one device; the wait is recorded and
not counted, and so are the processes training on the host meanwhile (or, with
``Study(timing="exclusive")``, none: training waits while one times).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from motune.errors import SpecError
from motune.locks import timing_lock
from motune.metrics.registry import Measurement, register_metric
from motune.models import device_of, unwrap

DEFAULT_THREADS = 1  # CPU threads a latency run uses unless the study says otherwise
DEFAULT_MAX_CI_WIDTH = 0.10  # a run whose median's interval is wider than this share of the median is flagged


LATENCY_METRICS = ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "latency_p99_ms",
                   "batch_latency_p50_ms", "batch_latency_p95_ms", "throughput_per_s")
CONFIDENCE = 0.95


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
    p50_ci_low_ms: float = float("nan")  # distribution-free interval of the median (within this run)
    p50_ci_high_ms: float = float("nan")
    p50_ci_confidence: float = float("nan")  # its coverage: CONFIDENCE or more, less with under 6 samples
    p95_ci_low_ms: float = float("nan")  # the same for p95 (less coverage with under 72 samples)
    p95_ci_high_ms: float = float("nan")
    p95_ci_confidence: float = float("nan")
    p99_ci_low_ms: float = float("nan")  # and p99 (less coverage with under 368 samples)
    p99_ci_high_ms: float = float("nan")
    p99_ci_confidence: float = float("nan")

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
    intervals = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        low, high, confidence = quantile_ci(arr, q)
        intervals |= {f"{name}_ci_low_ms": low, f"{name}_ci_high_ms": high, f"{name}_ci_confidence": confidence}
    return LatencyStats(
        batch_size=batch_size, count=len(arr), warmup=warmup,
        p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
        mean_ms=float(arr.mean()), min_ms=float(arr.min()), max_ms=float(arr.max()),
        total_s=float(time.perf_counter() - began), stopped_by=stopped_by, **intervals,
    )


def median_ci(samples: Any, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """A distribution-free confidence interval of the median and its exact coverage (:func:`quantile_ci`)."""
    return quantile_ci(samples, 0.5, confidence)


def quantile_ci(samples: Any, q: float, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """A distribution-free confidence interval of the ``q`` quantile and its exact coverage.

    Order statistics ``x(l) <= x(u)`` (ranks from 1) with ``B ~ binomial(n, q)``: ``l`` the largest rank
    with ``P(B <= l - 1) <= (1 - confidence) / 2`` and ``u`` the smallest with ``P(B >= u) <=
    (1 - confidence) / 2``; coverage ``P(l <= B <= u - 1)``. Where the samples are too few for a
    rank inside them (at 95 %: p95 below 72 samples, p99 below 368), the end is the sample's
    minimum or maximum and the coverage stated is the lower one that end gives. The
    samples are taken as independent: this is the precision of one run's quantile, not of the
    host's drift between runs.
    """
    from scipy.stats import binom

    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low_rank = max(1, int(binom.ppf(alpha, n, q)))  # ppf: the smallest k with P(B <= k) >= alpha; l - 1 < k
    high_rank = min(n, int(binom.ppf(1 - alpha, n, q)) + 1)  # P(B >= u) <= alpha
    coverage = binom.cdf(high_rank - 1, n, q) - binom.cdf(low_rank - 1, n, q)
    return float(x[low_rank - 1]), float(x[high_rank - 1]), float(coverage)


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
                          max_time_s: float = 10.0, device: Any = None, threads: int | None = None,
                          max_ci_width: float = DEFAULT_MAX_CI_WIDTH) -> None:
    """Raise ``ValueError`` for option values :func:`latency` cannot use."""
    if batch_size < 1 or warmup < 0 or min_count < 1 or min_time_s < 0 or max_time_s <= 0:
        raise SpecError(
            "need batch_size >= 1, warmup >= 0, min_count >= 1, min_time_s >= 0 and max_time_s > 0; got "
            f"batch_size={batch_size}, warmup={warmup}, min_count={min_count}, "
            f"min_time_s={min_time_s}, max_time_s={max_time_s}"
        )
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SpecError(f"threads must be a positive int or None, got {threads!r}")
    if isinstance(max_ci_width, bool) or not isinstance(max_ci_width, (int, float)) or not max_ci_width > 0:
        raise SpecError(f"max_ci_width must be a positive fraction of the median, got {max_ci_width!r}")


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[int]:
    """Fix torch's intra-op threads (when torch is loaded) and every BLAS / OpenMP pool
    (threadpoolctl) to ``threads`` for the block (``None``: torch's current count, or 1 without
    torch); restored afterwards. Yields the count.

    Unfixed pools are what made CPU latency noise under load: an OpenMP pool of every core
    spin-waits at each barrier, and with another process on the machine one of its threads is
    descheduled, so a 49 ms prediction took up to 1.5 s."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    threads = threads if threads is not None else (before or DEFAULT_THREADS)
    try:
        if torch is not None and threads != before:
            torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            yield threads
    finally:
        if torch is not None and before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def load_average() -> list[float] | None:
    """The host's 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    try:
        return [round(v, 3) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def wide_intervals(runs: dict[str, LatencyStats], max_ci_width: float) -> list[str]:
    """A sentence for each run whose median's confidence interval spans more than ``max_ci_width``
    of the median (a noisy measurement; it is flagged, not silently used)."""
    flags = []
    for name, run in runs.items():
        if not run.p50_ms > 0:
            continue
        width = (run.p50_ci_high_ms - run.p50_ci_low_ms) / run.p50_ms
        if width > max_ci_width:
            flags.append(f"{name}: the median's {100 * run.p50_ci_confidence:.0f} % interval spans "
                         f"{100 * width:.0f} % of the median (limit {100 * max_ci_width:.0f} %)")
    return flags


def gpu_state(device: str, *, cuda: Any = None, nvml: Any = None) -> dict[str, Any]:
    """Facts about a CUDA device that move latency: its name and, through NVML
    (nvidia-ml-py, if installed), SM and memory clocks (MHz) and temperature (C).

    ``cuda`` (``torch.cuda``) and ``nvml`` (the ``pynvml`` module) are injectable for tests.
    NVML trouble is recorded under ``nvml_error``, never raised: timing still counts.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda
    device = str(device)
    index = int(device.split(":")[1]) if ":" in device else cuda.current_device()
    state: dict[str, Any] = {"name": cuda.get_device_name(index)}
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            state["nvml_error"] = "nvidia-ml-py is not installed"
            return state
    try:
        nvml.nvmlInit()
        try:
            handle = _nvml_handle(nvml, str(getattr(cuda.get_device_properties(index), "uuid", "")))
            state["sm_clock_mhz"] = int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
            state["memory_clock_mhz"] = int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM))
            state["temperature_c"] = int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        finally:
            nvml.nvmlShutdown()
    except Exception as err:  # a driver without NVML, a permission problem: record it, keep timing
        state["nvml_error"] = f"{type(err).__name__}: {err}"
    return state


def _nvml_handle(nvml: Any, uuid: str) -> Any:
    """The NVML handle of the GPU torch calls ``uuid``. torch's index counts only visible devices
    (``CUDA_VISIBLE_DEVICES``), so the UUID, not the index, names the same GPU for NVML; a MIG
    slice's clocks and temperature are its parent GPU's."""
    if not uuid:
        raise LookupError("torch reports no UUID for this device, so NVML cannot be matched to it")
    if uuid.startswith(("GPU-", "MIG-")):
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    try:
        return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    except Exception:
        mig = nvml.nvmlDeviceGetHandleByUUID(f"MIG-{uuid}")
        return nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)


def timed_call(model: Any, X: Any) -> tuple[Callable[[], Any], str]:
    """The zero-argument call latency times for rows ``X``, and what it is.

    A :class:`~motune.models.torch.TorchClassifier`: its forward pass on inputs encoded
    here, once (fixed shapes); run it inside :func:`serving_mode`. Anything else:
    ``model.predict(X)``.
    """
    from motune.models.torch import TorchClassifier

    if isinstance(model, TorchClassifier):
        inputs = model.inputs(X)
        return (lambda: model.forward(inputs)), "forward"
    return (lambda: model.predict(X)), "predict"


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
    same = asked == actual or (asked == "cuda" and actual == "cuda:0") or (asked == "cuda:0" and actual == "cuda")
    if placed and not same:
        raise SpecError(f"latency device={asked!r}, but the model is on {actual!r}: move the model, "
                         "or leave device unset to time it where it is")
    return asked


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
    device: Any = None,
    threads: int | None = None,
    max_ci_width: float = DEFAULT_MAX_CI_WIDTH,
) -> Measurement:
    """Latency percentiles at batch size 1 and at ``batch_size``, and throughput."""
    check_latency_options(batch_size=batch_size, warmup=warmup, min_count=min_count, min_time_s=min_time_s,
                          max_time_s=max_time_s, device=device, threads=threads, max_ci_width=max_ci_width)
    raw = unwrap(model)
    device = _check_device(raw, device)
    timer = timer_for(device)
    X = task.split(split)[0]
    if len(X) == 0:
        raise SpecError(f"split {split!r} has no rows to time")
    single, what = timed_call(raw, X.iloc[:1])
    batch, _ = timed_call(raw, X.iloc[:batch_size])
    rows = min(batch_size, len(X))
    options = dict(warmup=warmup, min_count=min_count, min_time_s=min_time_s, max_time_s=max_time_s)
    cuda = timer.method == "cuda_event"
    with timing_lock(device) as lock:
        gpu_before = gpu_state(device) if cuda else None
        load_before = load_average()
        with fixed_threads(DEFAULT_THREADS if threads is None else threads) as thread_count, serving_mode(raw):
            one = time_calls(single, timer=timer, batch_size=1, **options)
            many = time_calls(batch, timer=timer, batch_size=rows, **options)
            threads_seen = thread_counts()
        load_after = load_average()
        gpu_after = gpu_state(device) if cuda else None
    flags = wide_intervals({"batch_1": one, "batch": many}, max_ci_width)
    values = {
        "latency_p50_ms": one.p50_ms,
        "latency_p90_ms": one.p90_ms,
        "latency_p95_ms": one.p95_ms,
        "latency_p99_ms": one.p99_ms,
        "batch_latency_p50_ms": many.p50_ms,
        "batch_latency_p95_ms": many.p95_ms,
        "throughput_per_s": rows / (many.p50_ms / 1000.0),
    }
    details = {
        "device": device,
        "method": timer.method,
        "timed": what,
        "threads": threads_seen,
        "threads_fixed": thread_count,
        "load_average_before": load_before,  # 1, 5, 15 minutes
        "load_average_after": load_after,
        "noisy": bool(flags),
        "flags": flags,
        "gpu": None if not cuda else {"before": gpu_before, "after": gpu_after},
        "lock_wait_s": lock["lock_wait_s"],
        "lock": lock["lock"],  # the physical device serialised on: cpu-<host> or gpu-<UUID>
        "timing_mode": lock["mode"],
        "others_training": lock["others_training"],  # processes training on this host meanwhile
        "batch_1": one.to_dict(),
        "batch": many.to_dict(),
    }
    return Measurement(values, details)
