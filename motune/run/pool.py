"""A pool of worker processes for one study: CPU workers, or one (or more) per GPU.

``motune run FILE --workers 4`` or ``--gpus all|0,1 [--workers-per-gpu K]``
starts worker *processes* (not threads: each has its own interpreter, CUDA
context and thread pools), all on the study's storage:

- each worker sees only its GPU(s): ``CUDA_VISIBLE_DEVICES`` (with
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) is in its environment from the moment it
  starts, so before CUDA initialises; ``--gpus 0,1`` counts the GPUs this
  process may use (a job given GPUs 2 and 3 by its scheduler has them as 0 and
  1); a CPU worker sees none. ``train`` finds where to put the model in
  ``ctx.device`` (``"cuda"`` there, as ``cuda:0``);
- its thread pools (torch intra-op, OpenMP and BLAS through threadpoolctl, and
  ``OMP_NUM_THREADS`` and its kin from its start) are sized to its share of
  the cores (``--threads`` overrides), stated in each trial's provenance;
- the trial count is the pool's: a worker asks the pool for a ticket before
  each trial, so the pool runs exactly ``--trials`` trials however fast each
  worker is; the retry of a trial whose worker died comes with a ticket of its
  own (a death does not eat one); ``--timeout`` is one deadline for the pool;
  sampler seeds differ per trial (:mod:`motune.run.sampling`); workers start
  a moment apart;
- each worker talks to the pool over its own pipe (tickets, trial starts and
  ends), so a worker killed mid-message harms no other;
- one progress display for the pool: a line per finished trial (``w2``: which
  worker) and the workers' states;
- Ctrl-C or SIGTERM stops every worker: each fails its running trial with the
  reason; a worker that does not stop within a minute is killed and its trial
  failed by the pool; workers stop when the pool's process dies;
- a worker that dies (``kill -9``, out of memory) is reported; its running
  trial is failed at once ("worker died (its process ended with exit code
  -9)") and retried, and a new worker takes its place (up to
  ``max_replacements``). A worker whose ``train`` calls ``sys.exit(code)``, or
  that fails on its own (its study file does not load there), stops the pool.

:func:`worker_loop` is one worker's life, the same for ``motune worker`` (a
scheduler such as Slurm or Kubernetes starts one per job) and for Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_messages
from typing import Any

import optuna

from motune import _schema
from motune.devices import visible_gpus
from motune.errors import SpecError
from motune.results import Result
from motune.run import _optuna_compat as compat
from motune.run.callbacks import Callback, TrialStart
from motune.run.location import locate
from motune.run.optimize import optimize
from motune.run.study import attach_store, open_study
from motune.run.supervisor import Ended, Event, Supervisor, Tickets
from motune.run.trial import require_cuda
from motune.studyfile import studies_in_file

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
STOP_GRACE_S = 60.0  # how long a stopping worker may take to fail its trial and exit before it is killed


@dataclass(frozen=True)
class WorkerSpec:
    """One worker's share of the machine."""

    index: int
    gpus: tuple[str, ...]  # CUDA_VISIBLE_DEVICES entries; () for a CPU worker (sees no GPU)
    threads: int

    def environment(self) -> dict[str, str]:
        env = {name: str(self.threads) for name in THREAD_VARIABLES}
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the numbering nvidia-smi and schedulers use
        env["MOTUNE_WORKER"] = json.dumps({"index": self.index, "gpus": list(self.gpus), "threads": self.threads})
        return env


def plan_workers(*, workers: int | None = None, gpus: str | None = None, workers_per_gpu: int = 1,
                 threads: int | None = None, cpu_count: int | None = None) -> list[WorkerSpec]:
    """The workers for ``--workers N`` (CPU) or ``--gpus all|0,1`` (``workers_per_gpu`` on each)."""
    cpu_count = cpu_count or os.cpu_count() or 1
    if gpus is not None:
        visible = visible_gpus()
        if gpus == "all":
            ids = visible
        else:
            try:
                wanted = [int(g) for g in gpus.split(",") if g.strip()]
            except ValueError:
                raise SpecError(f"--gpus must be 'all' or GPU numbers such as 0,1, got {gpus!r}") from None
            outside = [g for g in wanted if not 0 <= g < len(visible)]
            if outside and not visible:
                raise SpecError(f"--gpus {gpus}: no GPU is visible here (CUDA_VISIBLE_DEVICES is empty or nvidia-smi "
                                "lists none); use --workers N for CPU workers")
            if outside:
                raise SpecError(f"--gpus {gpus}: this process may use {len(visible)} GPU(s) (numbered 0 to "
                                f"{len(visible) - 1}, CUDA_VISIBLE_DEVICES={','.join(visible) or 'none'}); "
                                f"{outside} is not one of them")
            ids = [visible[g] for g in wanted]  # what a scheduler gave this job, not the machine's numbering
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

def apply_threads(threads: int) -> Any:
    """Size this process's thread pools to ``threads`` for its lifetime (keep the returned object)."""
    from threadpoolctl import threadpool_limits

    limits = threadpool_limits(limits=threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return limits


def worker_loop(study_file: str, name: str, changes: dict[str, Any], *, n_trials: int | None = None,
                timeout: float | None = None, budget: Callable[[], bool] | None = None,
                callbacks: Sequence[Any] = (), show_progress: bool = False, threads: int | None = None) -> Result:
    """One worker: load the study from its file, size its thread pools, run trials until its budget
    (``budget()``: take a ticket), ``n_trials`` or ``timeout`` ends."""
    found = [s for s in studies_in_file(study_file) if s.name == name]
    if not found:
        raise SpecError(f"{study_file} defines no motune.Study named {name!r}")
    study = dataclasses.replace(found[0], **changes)
    if threads is None and os.environ.get("MOTUNE_WORKER"):
        threads = json.loads(os.environ["MOTUNE_WORKER"]).get("threads")
    limits = apply_threads(threads) if threads else contextlib.nullcontext()
    with limits:
        return optimize(study, n_trials=n_trials, timeout=timeout, show_progress=show_progress,
                        callbacks=list(callbacks), budget=budget)


class _PoolLink(Callback):
    """A worker's pipe to the pool: tickets, trial starts and ends (plain records), its exit."""

    def __init__(self, conn: Any, index: int) -> None:
        self.conn, self.index = conn, index
        self._lock = threading.Lock()

    def send(self, *message: Any) -> None:
        with self._lock:
            self.conn.send((message[0], self.index, os.getpid(), *message[1:]))

    def take(self) -> bool:
        with self._lock:
            self.conn.send(("ticket", self.index, os.getpid()))
            return bool(self.conn.recv())

    def give_back(self, n: int = 1) -> None:
        self.send("give_back", n)

    def on_trial_start(self, trial: TrialStart) -> None:
        self.send("start", trial.number)

    def on_trial_end(self, record: Any) -> None:
        self.send("end", record)


def _stop_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the pool's process dies (``kill -9`` included)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_process(study_file: str, name: str, changes: dict[str, Any], spec: WorkerSpec, deadline: float | None,
                    limited: bool, conn: Any, delay_s: float) -> None:
    """The body of a pool's worker process (``spawn``: a fresh interpreter whose environment the pool set). It
    leaves the terminal's process group, so that Ctrl-C reaches the pool's process alone, which passes it on
    once (a worker that got it twice would stop without recording why). A worker given a GPU without CUDA
    refuses to start."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpgrp()
    _stop_with_parent()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the pool's process shows progress for all of them
    link = _PoolLink(conn, spec.index)
    compat.RETRY_CREATED.append(link.give_back)  # a dead trial's retry brings its own ticket
    time.sleep(delay_s)
    timeout = None if deadline is None else max(0.001, deadline - time.time())
    try:
        require_cuda()
        worker_loop(study_file, name, changes, timeout=timeout, budget=link.take if limited else None,
                    callbacks=[link], threads=spec.threads)
    except SystemExit as err:  # SIGTERM (143), or sys.exit in train: the pool hears the code
        link.send("exit", err.code)
        raise
    except BaseException as err:
        link.send("error", f"{type(err).__name__}: {err}")
        raise
    link.send("exit", 0)


# ---------------------------------------------------------------- the pool

@contextlib.contextmanager
def _environment(env: dict[str, str]):
    """``env`` in this process's environment while a worker starts (a spawned process copies it)."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class ProcessLauncher:
    """Workers as processes on this machine (``spawn``), a pipe each: what :class:`~motune.run.supervisor.Supervisor`
    needs of them (see the module docstring)."""

    prefix = None
    shows_states = True

    def __init__(self, study_file: str, name: str, changes: dict[str, Any], specs: Sequence[WorkerSpec], *,
                 n_trials: int | None, deadline: float | None, stagger_s: float = 0.3) -> None:
        self.study_file, self.name, self.changes, self.deadline = study_file, name, changes, deadline
        self.limited = n_trials is not None
        self.specs = {s.index: s for s in specs}
        self.stagger_s = stagger_s
        self.tickets = Tickets(n_trials)
        self.host = platform.node()
        self.context = multiprocessing.get_context("spawn")
        self.processes: dict[int, Any] = {}
        self.links: dict[int, Any] = {}
        self.exits: dict[int, Any] = {}  # index -> the exit code a worker announced
        self.reaped: set[int] = set()
        self.stopped: str | None = None
        self.grant: Callable[[], bool] = lambda: False
        self.where = f"in {len(specs)} worker processes: " + ", ".join(
            f"w{s.index} ({'GPU ' + ','.join(s.gpus) if s.gpus else 'CPU'}, {s.threads} thread"
            f"{'s' if s.threads > 1 else ''})" for s in specs)

    def label(self, index: int) -> str:
        return f"w{index}"

    def start(self, indices: Sequence[int], grant: Callable[[], bool]) -> list[int]:
        self.grant = grant
        for k, index in enumerate(indices):
            self._start(self.specs[index], self.stagger_s * k)
        return []

    def _start(self, spec: WorkerSpec, delay_s: float) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=_worker_process, name=f"motune-worker-{spec.index}",
                                       args=(self.study_file, self.name, self.changes, spec, self.deadline,
                                             self.limited, theirs, delay_s))
        with _environment(spec.environment()):
            process.start()
        theirs.close()
        self.processes[spec.index], self.links[spec.index] = process, ours
        self.exits.pop(spec.index, None)
        self.reaped.discard(spec.index)
        if self.stopped:  # a signal came while it started
            os.kill(process.pid, signal.SIGINT if self.stopped == "SIGINT" else signal.SIGTERM)

    def events(self) -> list[Event]:
        out = []
        for conn in wait_for_messages(list(self.links.values()), timeout=0.2):
            index = next(i for i, c in self.links.items() if c is conn)
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the worker is gone (or died mid-message): only its pipe is lost
                self.links.pop(index).close()
                continue
            kind = message[0]
            if kind == "ticket":
                with contextlib.suppress(OSError):  # it died after asking
                    conn.send(self.grant())
            elif kind == "give_back":
                out.append(Event("retry", index, message[3]))
            elif kind in ("start", "end"):
                out.append(Event(kind, index, message[3]))
            elif kind == "exit":
                self.exits[index] = message[3]
            elif kind == "error":
                out.append(Event("error", index, (message[3], None)))
        for index, process in list(self.processes.items()):
            if not process.is_alive() and index in self.links and not self.links[index].poll():
                self.links.pop(index).close()
            if not process.is_alive() and index not in self.links and index not in self.reaped:
                process.join()
                self.reaped.add(index)
                code = process.exitcode
                out.append(Event("ended", index, Ended(index, process.pid, self.host, code, self.exits.get(index),
                                                       f"with exit code {code}",
                                                       f"its process ended with exit code {code}")))
        return out

    def busy(self) -> bool:
        return bool(self.links) or any(i not in self.reaped for i in self.processes)

    def stop(self, signal_name: str) -> None:
        self.stopped = self.stopped or signal_name
        passed = signal.SIGINT if signal_name == "SIGINT" else signal.SIGTERM
        for process in self.processes.values():  # every worker fails its running trial with the reason, then exits
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, passed)

    def close(self, stopped_by: str | None) -> list[tuple[int, str, str]]:
        left = []
        for process in self.processes.values():
            process.join(timeout=STOP_GRACE_S)
            if process.is_alive():  # it did not stop: kill it, and fail its trial
                process.kill()
                process.join()
                left.append((process.pid, self.host, f"worker killed: it did not stop within {STOP_GRACE_S:g} s of "
                                                     f"{stopped_by or 'the end'}"))
        return left


def run_pool(study: Any, study_file: str, specs: Sequence[WorkerSpec], *, n_trials: int | None,
             timeout: float | None, changes: dict[str, Any], show_progress: bool = True,
             max_replacements: int = 3, stagger_s: float = 0.3) -> tuple[Result, str | None, Any]:
    """Run ``study`` in worker processes; returns the result read back, the signal that stopped the pool
    (``None``) and the exit code a worker's ``train`` asked for with ``sys.exit`` (``None``)."""
    where = locate(study)
    where.shared_url("worker processes")
    ostudy = open_study(study, where)  # the spec is checked once, here, before any worker starts
    deadline = None if timeout is None else time.time() + timeout
    launcher = ProcessLauncher(study_file, study.name, changes, specs, n_trials=n_trials, deadline=deadline,
                               stagger_s=stagger_s)
    supervisor = Supervisor(study, ostudy, launcher, [s.index for s in specs], n_trials, timeout,
                            max_replacements=max_replacements, show_progress=show_progress)
    supervisor.progress.last_report = lambda number: last_report(ostudy, number)
    return supervisor.run(lambda result: attach_store(result, where.named, where.artifact_store))


def last_report(ostudy: optuna.Study, number: int) -> tuple[int, dict[str, float]] | None:
    """Trial ``number``'s last stored report (step, values), read from the storage: the pool's parent sees
    its workers' trials only there."""
    running = ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    trial = next((t for t in running if t.number == number), None)
    reports = {} if trial is None else _schema.read_reports(trial.system_attrs, number)
    return None if not reports else (max(reports), reports[max(reports)])


__all__ = ["ProcessLauncher", "WorkerSpec", "plan_workers", "run_pool", "visible_gpus",
           "worker_loop"]
