"""A pool of worker processes for one study: CPU workers, or one (or more) per GPU.

``motune run FILE --workers 4`` or ``--gpus all|0,1 [--workers-per-gpu K]``
starts worker *processes* (not threads: each has its own interpreter, CUDA
context and thread pools), all on the study's storage:

- each worker sees only its GPU(s) (``CUDA_VISIBLE_DEVICES``, set before the
  worker starts, so before CUDA initialises; a CPU worker sees none) and trains
  on ``ctx.device`` (``"cuda"`` there, as ``cuda:0``);
- its thread pools (torch intra-op, OpenMP and BLAS through threadpoolctl, and
  the ``OMP_NUM_THREADS`` family for libraries that read them) are sized to its
  share of the cores (``--threads`` overrides), stated in each trial's
  provenance (``worker``);
- the run's trial count is shared: a worker takes a ticket before each trial,
  so the pool runs exactly ``--trials`` trials however fast each worker is;
  sampler seeds differ per trial (:mod:`motune.run.sampling`); workers start a
  moment apart;
- one progress display for the pool: a line per finished trial (``w2``: which
  worker), and the workers' states;
- Ctrl-C or SIGTERM stops every worker: each fails its running trial with the
  reason; nothing is left RUNNING;
- a worker that dies (``kill -9``, out of memory) is reported; its running
  trial is failed at once ("worker died (exit code -9)") and retried, and a
  new worker takes its place (up to ``max_replacements``).

:func:`worker_loop` is one worker's life, the same for ``motune worker`` (a
scheduler such as Slurm or Kubernetes starts one per job) and for Ray.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from motune import _schema
from motune.errors import SpecError
from motune.results import Result, record_of
from motune.run import _optuna_compat as compat
from motune.run.callbacks import Callback, TrialStart
from motune.run.progress import TrialProgress

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class WorkerSpec:
    """One worker's share of the machine."""

    index: int
    gpus: tuple[str, ...]  # CUDA_VISIBLE_DEVICES entries; () for a CPU worker (sees no GPU)
    threads: int

    def environment(self) -> dict[str, str]:
        env = {name: str(self.threads) for name in THREAD_VARIABLES}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        env["MOTUNE_WORKER"] = json.dumps({"index": self.index, "gpus": list(self.gpus), "threads": self.threads})
        return env


def visible_gpus() -> list[str]:
    """The GPUs this machine lets us use: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi``'s list."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                            text=True, timeout=30)
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()] if listed.returncode == 0 else []


def plan_workers(*, workers: int | None = None, gpus: str | None = None, workers_per_gpu: int = 1,
                 threads: int | None = None, cpu_count: int | None = None) -> list[WorkerSpec]:
    """The workers for ``--workers N`` (CPU) or ``--gpus all|0,1`` (``workers_per_gpu`` on each)."""
    cpu_count = cpu_count or os.cpu_count() or 1
    if gpus is not None:
        ids = visible_gpus() if gpus == "all" else [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids:
            raise SpecError("--gpus all: no GPU is visible here (CUDA_VISIBLE_DEVICES is empty or nvidia-smi "
                            "lists none); use --workers N for CPU workers")
        if isinstance(workers_per_gpu, bool) or not isinstance(workers_per_gpu, int) or workers_per_gpu < 1:
            raise SpecError(f"--workers-per-gpu must be a positive integer, got {workers_per_gpu!r}")
        assignment = [(g,) for g in ids for _ in range(workers_per_gpu)]
    else:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise SpecError(f"--workers must be a positive integer, got {workers!r}")
        assignment = [() for _ in range(workers)]
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SpecError(f"--threads must be a positive integer, got {threads!r}")
    share = threads or max(1, cpu_count // len(assignment))
    return [WorkerSpec(i, g, share) for i, g in enumerate(assignment)]


# ---------------------------------------------------------------- one worker

class Tickets:
    """The pool's trial budget, shared by its processes: a worker takes one before each trial."""

    def __init__(self, n: int, context: Any) -> None:
        self._left = context.Value("i", n)

    def take(self) -> bool:
        with self._left.get_lock():
            if self._left.value <= 0:
                return False
            self._left.value -= 1
            return True

    def give_back(self, n: int = 1) -> None:
        with self._left.get_lock():
            self._left.value += n

    @property
    def left(self) -> int:
        return self._left.value


class _Events(Callback):
    """A worker's trial starts and ends, sent to the pool's process as plain records."""

    def __init__(self, events: Any, index: int) -> None:
        self.events, self.index = events, index

    def on_trial_start(self, trial: TrialStart) -> None:
        self.events.put(("start", self.index, os.getpid(), trial.number))

    def on_trial_end(self, record: Any) -> None:
        self.events.put(("end", self.index, os.getpid(), record))


def apply_threads(threads: int) -> Any:
    """Size this process's thread pools to ``threads`` for its lifetime (keep the returned object)."""
    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return limits


def worker_loop(study_file: str, name: str, changes: dict[str, Any], *, n_trials: int | None = None,
                timeout: float | None = None, budget: Any = None, callbacks: Sequence[Any] = (),
                show_progress: bool = False, threads: int | None = None) -> Result:
    """One worker: load the study from its file, size its thread pools, run trials until its budget
    (``budget()``: take a ticket), ``n_trials`` or ``timeout`` ends."""
    from motune.run.optimize import optimize
    from motune.spec import studies_in_file

    studies = studies_in_file(study_file)
    found = [s for s in studies if s.name == name] or (studies if len(studies) == 1 and "name" in changes else [])
    if not found:
        raise SpecError(f"{study_file} defines no motune.Study named {name!r}")
    study = dataclasses.replace(found[0], **changes)
    if threads is None and os.environ.get("MOTUNE_WORKER"):
        threads = json.loads(os.environ["MOTUNE_WORKER"]).get("threads")
    limits = apply_threads(threads) if threads else None
    try:
        return optimize(study, n_trials=n_trials, timeout=timeout, show_progress=show_progress,
                        callbacks=list(callbacks), budget=budget)
    finally:
        del limits


def _worker_process(study_file: str, name: str, changes: dict[str, Any], spec: WorkerSpec, timeout: float | None,
                    budget: Tickets | None, events: Any, delay_s: float) -> None:
    """The body of a pool's worker process (``spawn``: a fresh interpreter)."""
    os.environ.update(spec.environment())  # before the study file imports torch, so before CUDA initialises
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the pool's process shows progress for all of them
    time.sleep(delay_s)
    try:
        worker_loop(study_file, name, changes, timeout=timeout, budget=None if budget is None else budget.take,
                    callbacks=[_Events(events, spec.index)], threads=spec.threads)
    except SystemExit as err:  # SIGTERM (143) and sys.exit in train end the process with their code
        events.put(("exit", spec.index, os.getpid(), err.code))
        raise
    except BaseException as err:
        events.put(("error", spec.index, os.getpid(), f"{type(err).__name__}: {err}"))
        raise
    events.put(("exit", spec.index, os.getpid(), 0))


# ---------------------------------------------------------------- the pool

def fail_trials_of(ostudy: optuna.Study, pid: int, host: str, reason: str) -> list[int]:
    """Fail (and retry) the RUNNING trials a dead process left, at once: the pool saw it die."""
    failed = []
    storage = compat.storage_of(ostudy)
    for t in ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get(_schema.WORKER_ATTR) or {}
        if worker.get("pid") != pid or worker.get("host") != host:
            continue
        tid = compat.trial_id(t)
        try:
            storage.set_trial_system_attr(tid, _schema.FAIL_REASON_ATTR, reason)
            if storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL):
                failed.append(t.number)
                compat.RetryStaleTrial()(ostudy, storage.get_trial(tid))
        except optuna.exceptions.UpdateFinishedTrialError:  # its heartbeat was seen stale first
            pass
    return failed


def run_pool(study: Any, study_file: str, specs: Sequence[WorkerSpec], *, n_trials: int | None,
             timeout: float | None, changes: dict[str, Any], show_progress: bool = True,
             max_replacements: int = 3, stagger_s: float = 0.3) -> tuple[Result, str | None]:
    """Run ``study`` (already checked and opened) in worker processes; returns the result read back and the
    signal that stopped the pool (``None``)."""
    import platform

    from motune.run import artifacts
    from motune.run.study import attach_store, open_study

    context = multiprocessing.get_context("spawn")
    tickets = None if n_trials is None else Tickets(n_trials, context)
    events = context.Queue()
    store = None if study.keep_models == "none" else artifacts.store_for(study.artifact_store, study.storage)
    ostudy = open_study(study, artifact_store=store)  # the spec is checked once, here, before any worker starts
    keys = [c.key for c in study.constraints]
    progress = TrialProgress(study, total=n_trials, enabled=show_progress)
    states: dict[int, str] = {}
    processes: dict[int, Any] = {}
    replacements = {"left": max_replacements}
    stopping: list[str] = []
    errors: list[str] = []

    def start(spec: WorkerSpec, delay_s: float) -> None:
        process = context.Process(target=_worker_process, name=f"motune-worker-{spec.index}",
                                  args=(study_file, study.name, changes, spec, timeout, tickets, events, delay_s),
                                  daemon=False)
        process.start()
        processes[spec.index] = process
        states[spec.index] = "starting"

    def stop(signum: int, _frame: Any) -> None:
        if not stopping:
            stopping.append(signal.Signals(signum).name)
        for process in processes.values():  # every worker fails its running trial with the reason, then exits
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    progress.on_study_start(None)
    progress.print(f"running {n_trials or 'trials'}{'' if n_trials else f' for {timeout:g} s'} of study "
                   f"{study.name} in {len(specs)} worker processes: " + ", ".join(
                       f"w{s.index} ({'GPU ' + ','.join(s.gpus) if s.gpus else 'CPU'}, {s.threads} thread"
                       f"{'s' if s.threads > 1 else ''})" for s in specs))
    by_index = {s.index: s for s in specs}
    try:
        for k, spec in enumerate(specs):
            start(spec, stagger_s * k)
        while any(p.is_alive() for p in processes.values()) or not _drained(events):
            try:
                kind, index, pid, payload = events.get(timeout=0.2)
            except queue.Empty:
                kind = None
            if kind == "start":
                states[index] = f"trial {payload}"
            elif kind == "end":
                states[index] = "idle"
                progress.on_trial_end(payload, prefix=f"w{index}")
            elif kind == "error":  # the worker's own error (a study file that fails there ...): stop the pool
                progress.print(f"w{index} stopped: {payload}")
                errors.append(f"worker w{index} failed: {payload}")
                states[index] = "failed"
                stop(signal.SIGTERM, None)
            for index, process in list(processes.items()):
                if process.is_alive() or states.get(index) in ("done", "died", "failed"):
                    continue
                code = process.exitcode
                if code == 0 or stopping:
                    states[index] = "done"
                    continue
                states[index] = "died"
                failed = fail_trials_of(ostudy, process.pid, platform.node(),
                                        f"worker died (its process ended with exit code {code})")
                if tickets is not None and failed:
                    tickets.give_back(len(failed))  # the retry runs in the dead trial's place
                for number in failed:
                    t = next(t for t in ostudy.get_trials(deepcopy=False) if t.number == number)
                    progress.on_trial_end(record_of(t, keys), prefix=f"w{index}")
                more = tickets is None or tickets.left > 0
                progress.print(f"w{index} (pid {process.pid}) died with exit code {code}; its trial(s) "
                               f"{failed or 'none'} failed and retried"
                               + (f"; a new worker takes its place ({replacements['left'] - 1} more allowed)"
                                  if more and replacements["left"] > 0 else ""))
                if more and replacements["left"] > 0:
                    replacements["left"] -= 1
                    start(by_index[index], 0.0)
            progress.worker_states = dict(sorted(states.items()))
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for process in processes.values():
            process.join(timeout=60)
        result = attach_store(Result(ostudy), study.storage, store)
        result.spec = study
        result.interrupted = stopping[0] if stopping and not errors else None
        progress.on_study_end(result)
    if errors:
        raise SpecError(errors[0])
    return result, result.interrupted


def _drained(events: Any) -> bool:
    try:
        return events.empty()
    except (OSError, ValueError):
        return True


__all__ = ["Tickets", "WorkerSpec", "fail_trials_of", "plan_workers", "run_pool", "visible_gpus", "worker_loop"]
