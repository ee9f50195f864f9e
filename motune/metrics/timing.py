"""Timing calls: timers, the timed loop, its statistics and intervals, and the thread pools it runs with.

- :class:`CpuTimer`: wall clock (``time.perf_counter_ns``) around one call;
- :class:`CudaTimer`: two CUDA events on the current stream around one call, the
  device drained before and the end event synchronised before reading. The two
  events are created and recorded once when the timer is made (torch creates an
  event lazily at its first record, which would otherwise land inside the first
  timed window), then reused;
- :class:`SyncTimer`: wall clock around the call and a synchronisation the
  model provides (``model.synchronize()``), for a GPU model that is not torch.

:func:`time_calls` warms up until both ``warmup`` calls and ``warmup_s``
seconds have passed, then, with Python's garbage collector off (as ``timeit``
and ``torch.utils.benchmark`` do), times calls until both ``min_count`` calls
and ``min_time_s`` seconds (or ``max_time_s`` passes with at least 3). Each run
keeps p50 / p90 / p95 / p99 with distribution-free intervals of p50, p95 and
p99 (:func:`quantile_ci`).

The host's speed: with a :class:`Reference` (a fixed kernel, a small matrix
product, repeated so that one reference call lasts about as long as one of
the model's), each timed call is followed by a timed reference call, so both
see the same host at the same moments. Each percentile of the model's calls
divided by the same percentile of one kernel's time is the model's latency
in kernel units: what stays put when other processes slow the host down
(milliseconds stay the unit people read; the units compare timings taken at
different moments, or on a busy and a quiet host). :func:`required_count` is how many samples a
percentile's interval needs inside the samples. :func:`throughput` runs calls
back to back with one synchronisation at the end: real throughput, not rows
divided by one call's latency.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from motune import devices
from motune.errors import SpecError

CONFIDENCE = 0.95
DEFAULT_THREADS = 1  # CPU threads a latency run uses unless the study says otherwise
# a timed run's defaults (motune.metrics.latency.LatencyOptions takes them from here): 72 calls, the fewest
# whose p95 interval lies inside the samples (required_count(0.95)), for at least 0.2 s, at most 10 s
WARMUP = 5
MIN_COUNT = 72
MIN_TIME_S = 0.2
MAX_TIME_S = 10.0


class Timer(Protocol):
    device: str
    method: str

    def time_ms(self, fn: Callable[[], Any]) -> float: ...

    def synchronize(self) -> None: ...


class CpuTimer:
    """Wall-clock time of one call with ``time.perf_counter_ns``."""

    method = "perf_counter_ns"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def time_ms(self, fn: Callable[[], Any]) -> float:
        start = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - start) / 1e6

    def synchronize(self) -> None:
        pass


class SyncTimer(CpuTimer):
    """Wall-clock time of one call and of the synchronisation ``sync()`` the model provides."""

    method = "perf_counter_ns+synchronize"

    def __init__(self, device: str, sync: Callable[[], Any]) -> None:
        super().__init__(device)
        self._sync = sync

    def time_ms(self, fn: Callable[[], Any]) -> float:
        self._sync()
        start = time.perf_counter_ns()
        fn()
        self._sync()
        return (time.perf_counter_ns() - start) / 1e6

    def synchronize(self) -> None:
        self._sync()


class CudaTimer:
    """GPU time of one call between two CUDA events on the device's current stream.

    Pending work is drained first (so it is not charged to this call), the events are recorded
    around the call, and the end event is synchronised before ``elapsed_time`` is read. The events
    are made and recorded once here, outside every timed window. ``cuda`` is the ``torch.cuda``
    module (injectable so that this logic is testable without a GPU).
    """

    method = "cuda_event"

    def __init__(self, device: str, *, cuda: Any = None) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.device = device
        self._cuda = cuda
        stream = cuda.current_stream(device)
        self._start = cuda.Event(enable_timing=True)
        self._end = cuda.Event(enable_timing=True)
        self._start.record(stream)  # the CUDA events exist from here on
        self._end.record(stream)
        self._end.synchronize()

    def time_ms(self, fn: Callable[[], Any]) -> float:
        cuda = self._cuda
        stream = cuda.current_stream(self.device)
        cuda.synchronize(self.device)
        self._start.record(stream)
        fn()
        self._end.record(stream)
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))

    def synchronize(self) -> None:
        self._cuda.synchronize(self.device)


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
    warmup_s: float = 0.0  # how long the untimed warm-up ran
    gc_disabled: bool = True  # Python's garbage collector was off during the timed calls
    reference: dict[str, Any] | None = None  # the host's speed beside the calls (:class:`Reference`), or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def in_units(self, quantile: str) -> float | None:
        """The run's ``quantile`` (``"p50"``, ``"p95"`` ...) in kernel units (``None`` without a reference)."""
        if not self.reference:
            return None
        unit = self.reference.get(f"unit_{quantile}_ms")
        return getattr(self, f"{quantile}_ms") / unit if unit else None


class Reference:
    """A fixed kernel (a ``size`` x ``size`` float64 matrix product on the CPU; on a CUDA device, the same in
    float32 on the device) repeated ``units`` times per call, timed beside a model's calls (see the module
    docstring). :meth:`matched` sizes ``units`` so that a reference call lasts about ``target_ms``."""

    def __init__(self, *, device: str = "cpu", size: int = 48, units: int = 1) -> None:
        self.device, self.size, self.units = device, size, max(1, int(units))
        if devices.is_cuda(device):
            import torch

            a = torch.ones((size, size), dtype=torch.float32, device=device) / size
            self._kernel = lambda: torch.mm(a, a)
            self.kernel = f"{size}x{size} float32 matrix product on {device}"
        else:
            a = np.random.default_rng(0).standard_normal((size, size))
            self._kernel = lambda: a @ a
            self.kernel = f"{size}x{size} float64 matrix product (numpy)"

    def __call__(self) -> None:
        kernel = self._kernel
        for _ in range(self.units):
            kernel()

    def matched(self, target_ms: float, timer: Timer) -> Reference:
        """This kernel repeated so that one call lasts about ``target_ms`` (measured with ``timer``)."""
        one = Reference(device=self.device, size=self.size, units=8)
        per_unit = float(np.median([timer.time_ms(one) for _ in range(15)])) / 8
        units = max(1, min(10**6, round(target_ms / per_unit))) if per_unit > 0 else 1
        return Reference(device=self.device, size=self.size, units=units)

    def summary(self, unit_ms: np.ndarray) -> dict[str, Any]:
        p50, p95, p99 = np.percentile(unit_ms, [50, 95, 99])
        return {"kernel": self.kernel, "units_per_call": self.units, "count": int(len(unit_ms)),
                "unit_p50_ms": float(p50), "unit_p95_ms": float(p95), "unit_p99_ms": float(p99)}


def time_calls(
    fn: Callable[[], Any] | list[Callable[[], Any]],
    *,
    timer: Timer,
    batch_size: int,
    warmup: int = WARMUP,
    warmup_s: float = 0.0,
    min_count: int = MIN_COUNT,
    min_time_s: float = MIN_TIME_S,
    max_time_s: float = MAX_TIME_S,
    reference: Reference | None = None,
) -> LatencyStats:
    """Warm up (``warmup`` calls and ``warmup_s`` seconds), then time until ``min_count`` calls and
    ``min_time_s`` are both reached. ``fn`` may be a list of calls (one per input), used in turn. With a
    ``reference``, sized after the warm-up to last as long as a call, a reference call follows each timed call
    (the time limits count the calls only)."""
    calls = fn if isinstance(fn, list) else [fn]
    if not calls or min_count < 1 or warmup < 0 or warmup_s < 0 or min_time_s < 0 or max_time_s <= 0:
        raise SpecError(f"need at least one call, min_count >= 1, warmup >= 0, warmup_s >= 0, min_time_s >= 0 and "
                        f"max_time_s > 0; got {len(calls)} call(s), min_count={min_count}, warmup={warmup}, "
                        f"warmup_s={warmup_s}, min_time_s={min_time_s}, max_time_s={max_time_s}")
    began = time.perf_counter()
    warmed = 0
    while warmed < warmup or time.perf_counter() - began < warmup_s:
        calls[warmed % len(calls)]()
        warmed += 1
    warmed_s = time.perf_counter() - began
    if reference is not None:
        reference = reference.matched(float(np.median([timer.time_ms(c) for c in calls[:8]])), timer)
    samples: list[float] = []
    units: list[float] = []
    stopped_by = "min_count_and_time"
    with gc_paused():  # no collection pause inside a sample
        gc_off = not gc.isenabled()
        began = time.perf_counter()
        spent = 0.0  # seconds of timed calls (the reference calls between them not counted)
        while True:
            samples.append(timer.time_ms(calls[len(samples) % len(calls)]))
            spent += samples[-1] / 1000
            if reference is not None:
                units.append(timer.time_ms(reference) / reference.units)
            elapsed = spent if reference is not None else time.perf_counter() - began
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
        batch_size=batch_size, count=len(arr), warmup=warmed,
        p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
        mean_ms=float(arr.mean()), min_ms=float(arr.min()), max_ms=float(arr.max()),
        total_s=float(time.perf_counter() - began), stopped_by=stopped_by, warmup_s=warmed_s,
        gc_disabled=gc_off, reference=reference.summary(np.asarray(units)) if reference is not None else None,
        **intervals,
    )


_GC = threading.Lock()
_gc_state = {"holders": 0, "was_enabled": False}


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's garbage collector off for the block (a collection first), as ``timeit`` and
    ``torch.utils.benchmark`` do; overlapping blocks in several threads share one pause, and the
    collector comes back on (if it was on) when the last one ends."""
    gc.collect()
    with _GC:
        if _gc_state["holders"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
        _gc_state["holders"] += 1
        gc.disable()
    try:
        yield
    finally:
        with _GC:
            _gc_state["holders"] -= 1
            if _gc_state["holders"] == 0 and _gc_state["was_enabled"]:
                gc.enable()


def throughput(fn: Callable[[], Any], *, timer: Timer, rows: int, min_time_s: float = 0.5,
               min_count: int = 10) -> dict[str, float]:
    """Rows per second of calls run back to back, synchronised once at the end (what a server with a full
    queue sees), after one untimed call; ``{"throughput_per_s", "calls", "seconds"}``."""
    fn()
    timer.synchronize()
    calls = 0
    began = time.perf_counter()
    while calls < min_count or time.perf_counter() - began < min_time_s:
        fn()
        calls += 1
    timer.synchronize()
    seconds = time.perf_counter() - began
    return {"throughput_per_s": rows * calls / seconds, "calls": calls, "seconds": seconds}


def median_ci(samples: Any, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """A distribution-free confidence interval of the median and its exact coverage (:func:`quantile_ci`)."""
    return quantile_ci(samples, 0.5, confidence)


def quantile_ci(samples: Any, q: float, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """A distribution-free confidence interval of the ``q`` quantile and its exact coverage.

    Order statistics ``x(l) <= x(u)`` (ranks from 1) with ``B ~ binomial(n, q)``: ``l`` the largest rank
    with ``P(B <= l - 1) <= (1 - confidence) / 2`` and ``u`` the smallest with ``P(B >= u) <=
    (1 - confidence) / 2``; coverage ``P(l <= B <= u - 1)``. Where the samples are too few for a
    rank inside them (at 95 %: p95 below 72 samples, p99 below 368; :func:`required_count`), the end
    is the sample's minimum or maximum and the coverage stated is the lower one that end gives. The
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


def required_count(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples whose ``q`` quantile has its ``confidence`` interval inside them (p95: 72; p99: 368)."""
    from scipy.stats import binom

    n = 2
    while binom.sf(n - 1, n, q) > (1 - confidence) / 2:  # P(B >= n) = q ** n: the max must not be needed
        n += 1
    return n


# ---------------------------------------------------------------- the machine while timing

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


def busy_cpus(interval_s: float = 0.5) -> float | None:
    """How many CPUs the host kept busy over the next ``interval_s`` seconds, from ``/proc/stat`` (all
    processes; ``None`` where there is no ``/proc/stat``). Unlike the load average it sees the present."""
    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    first = read()
    if first is None:
        return None
    time.sleep(interval_s)
    second = read()
    total, idle = second[0] - first[0], second[1] - first[1]
    if total <= 0:
        return 0.0
    return round((1 - idle / total) * (os.cpu_count() or 1), 3)


def wait_for_quiet(max_busy_cpus: float, wait_s: float, *, interval_s: float = 0.5) -> dict[str, Any]:
    """Wait (at most ``wait_s`` seconds) until the host keeps at most ``max_busy_cpus`` CPUs busy; returns what
    was asked and seen: ``{"max_busy_cpus", "wait_s", "waited_s", "busy_cpus" (the last reading), "quiet"}``."""
    began = time.perf_counter()
    busy = busy_cpus(interval_s)
    while busy is not None and busy > max_busy_cpus and time.perf_counter() - began < wait_s:
        busy = busy_cpus(interval_s)
    return {"max_busy_cpus": max_busy_cpus, "wait_s": wait_s, "waited_s": round(time.perf_counter() - began, 2),
            "busy_cpus": busy, "quiet": busy is None or busy <= max_busy_cpus,
            "load_average": load_average()}


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
