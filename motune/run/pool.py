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
from motune.results import Result, record_of
from motune.run import _optuna_compat as compat
from motune.run.callbacks import Callback, TrialStart
from motune.run.progress import TrialProgress
from motune.run.trial import BROKEN_DEVICE_EXIT, require_cuda

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
    from motune.run.optimize import optimize
    from motune.studyfile import studies_in_file

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

def fail_trials_of(ostudy: optuna.Study, pid: int, host: str, reason: str, *, retry: bool = True) -> list[int]:
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
                if retry:
                    compat.RetryStaleTrial()(ostudy, storage.get_trial(tid))
        except optuna.exceptions.UpdateFinishedTrialError:  # its heartbeat was seen stale first
            pass
    return failed


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


def run_pool(study: Any, study_file: str, specs: Sequence[WorkerSpec], *, n_trials: int | None,
             timeout: float | None, changes: dict[str, Any], show_progress: bool = True,
             max_replacements: int = 3, stagger_s: float = 0.3) -> tuple[Result, str | None, Any]:
    """Run ``study`` in worker processes; returns the result read back, the signal that stopped the pool
    (``None``) and the exit code a worker's ``train`` asked for with ``sys.exit`` (``None``)."""
    from motune.run.location import locate
    from motune.run.study import attach_store, open_study

    where = locate(study)
    where.shared_url("worker processes")
    context = multiprocessing.get_context("spawn")
    store = where.artifact_store
    ostudy = open_study(study, where)  # the spec is checked once, here, before any worker starts
    keys = [c.key for c in study.constraints]
    host = platform.node()
    deadline = None if timeout is None else time.time() + timeout
    tickets = {"left": n_trials}
    progress = TrialProgress(study, total=n_trials, enabled=show_progress)
    progress.seed(record_of(t, keys) for t in ostudy.get_trials(deepcopy=False))
    progress.last_report = lambda number: last_report(ostudy, number)
    states: dict[int, str] = {}
    processes: dict[int, Any] = {}
    links: dict[int, Any] = {}
    exits: dict[int, Any] = {}  # index -> the exit code a worker announced
    replacements = {"left": max_replacements}
    stopping: list[str] = []
    errors: list[str] = []
    asked_exit: list[Any] = []

    def on_retry(n: int = 1) -> None:
        if tickets["left"] is not None:
            tickets["left"] += n
        progress.add_to_total(n)  # "done 31/26" no more: a retried trial is one more to run

    def start(spec: WorkerSpec, delay_s: float) -> None:
        if stopping:
            return
        ours, theirs = context.Pipe()
        process = context.Process(target=_worker_process, name=f"motune-worker-{spec.index}",
                                  args=(study_file, study.name, changes, spec, deadline, n_trials is not None, theirs,
                                        delay_s))
        with _environment(spec.environment()):
            process.start()
        theirs.close()
        processes[spec.index], links[spec.index], states[spec.index] = process, ours, "starting"
        exits.pop(spec.index, None)
        if stopping:  # a signal came while it started
            os.kill(process.pid, signal.SIGINT if stopping[0] == "SIGINT" else signal.SIGTERM)

    def stop(signum: int | None, _frame: Any) -> None:
        """Stop every worker: on a signal (passed on as it came), or for the pool's own reason (``None``: an
        error, an exit, the end; passed on as the signal that stops the pool, SIGTERM if none did)."""
        if not stopping:
            stopping.append("SIGTERM" if signum is None else signal.Signals(signum).name)
        passed = signal.SIGINT if (signum == signal.SIGINT or signum is None and stopping[0] == "SIGINT") \
            else signal.SIGTERM
        for process in processes.values():  # every worker fails its running trial with the reason, then exits
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, passed)

    def handle(index: int, message: tuple) -> None:
        kind = message[0]
        if kind == "ticket":
            granted = tickets["left"] is None or tickets["left"] > 0
            if granted and tickets["left"] is not None:
                tickets["left"] -= 1
            with contextlib.suppress(OSError):  # it died after asking
                links[index].send(granted and not stopping)
        elif kind == "give_back":
            on_retry(message[3])
        elif kind == "start":
            states[index] = f"trial {message[3]}"
            progress.on_trial_start(TrialStart(number=message[3], params={}, seed=0))
        elif kind == "end":
            states[index] = "idle"
            progress.on_trial_end(message[3], prefix=f"w{index}")
        elif kind == "exit":
            exits[index] = message[3]
        elif kind == "error":  # the worker's own error (a study file that fails there ...): stop the pool
            progress.print(f"w{index} stopped: {message[3]}")
            errors.append(f"worker w{index} failed: {message[3]}")
            states[index] = "failed"
            stop(None, None)

    def reap(index: int, process: Any) -> None:
        code = process.exitcode
        announced = exits.get(index)
        if code == 0 or states.get(index) == "failed":
            states[index] = "done" if code == 0 else states[index]
            return
        failed = fail_trials_of(ostudy, process.pid, host, f"worker died (its process ended with exit code {code})",
                                retry=not stopping)
        for number in failed:
            t = next(t for t in ostudy.get_trials(deepcopy=False) if t.number == number)
            progress.on_trial_end(record_of(t, keys), prefix=f"w{index}")
        if stopping or announced in (143, 130):
            states[index] = "stopped"
            return
        more = tickets["left"] is None or tickets["left"] > 0
        if announced == BROKEN_DEVICE_EXIT:  # its CUDA context broke: a fresh process takes its place
            states[index] = "replaced"
            progress.print(f"w{index} (pid {process.pid}) ended: a trial broke its CUDA context" + (
                "; a new worker takes its place" if more and replacements["left"] > 0 else ""))
            if more and replacements["left"] > 0:
                replacements["left"] -= 1
                start(by_index[index], 0.0)
            return
        if announced is not None:  # sys.exit(code) in train: the trial is stored FAIL; the pool stops with it
            states[index] = f"exited {announced}"
            asked_exit.append(announced)
            stop(None, None)
            return
        states[index] = "died"
        progress.print(f"w{index} (pid {process.pid}) died with exit code {code}; its trial(s) {failed or 'none'} "
                       "failed and retried" + (f"; a new worker takes its place ({replacements['left'] - 1} more "
                                               "allowed)" if more and replacements["left"] > 0 else ""))
        if more and replacements["left"] > 0:
            replacements["left"] -= 1
            start(by_index[index], 0.0)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    compat.RETRY_CREATED.append(on_retry)
    progress.on_study_start(None)
    progress.print(f"running {n_trials or 'trials'}{'' if n_trials else f' for {timeout:g} s'} of study "
                   f"{study.name} in {len(specs)} worker processes: " + ", ".join(
                       f"w{s.index} ({'GPU ' + ','.join(s.gpus) if s.gpus else 'CPU'}, {s.threads} thread"
                       f"{'s' if s.threads > 1 else ''})" for s in specs))
    by_index = {s.index: s for s in specs}
    try:
        for k, spec in enumerate(specs):
            start(spec, stagger_s * k)
        while links or any(not _final(states.get(i, "")) for i in processes):
            for conn in wait_for_messages(list(links.values()), timeout=0.2):
                index = next(i for i, c in links.items() if c is conn)
                try:
                    message = conn.recv()
                except (EOFError, OSError):  # the worker is gone (or died mid-message): only its pipe is lost
                    links.pop(index).close()
                    continue
                handle(index, message)
            for index, process in list(processes.items()):
                if not process.is_alive() and index in links and not links[index].poll():
                    links.pop(index).close()
                if not process.is_alive() and index not in links and not _final(states.get(index, "")):
                    process.join()
                    reap(index, process)
            progress.worker_states = dict(sorted(states.items()))
    finally:
        if any(p.is_alive() for p in processes.values()):
            stop(None, None)
        for index, process in processes.items():
            process.join(timeout=STOP_GRACE_S)
            if process.is_alive():  # it did not stop: kill it, and fail its trial here
                process.kill()
                process.join()
                fail_trials_of(ostudy, process.pid, host, f"worker killed: it did not stop within {STOP_GRACE_S:g} s "
                               f"of {stopping[0] if stopping else 'the end'}", retry=False)
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        compat.RETRY_CREATED.remove(on_retry)
        result = attach_store(Result(ostudy), where.named, store)
        result.spec = study
        result.interrupted = stopping[0] if stopping and not errors and not asked_exit else None
        progress.on_study_end(result)
    if errors:
        raise SpecError(errors[0])
    return result, result.interrupted, (asked_exit[0] if asked_exit else None)


def last_report(ostudy: optuna.Study, number: int) -> tuple[int, dict[str, float]] | None:
    """Trial ``number``'s last stored report (step, values), read from the storage: the pool's parent sees
    its workers' trials only there."""
    running = ostudy.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    trial = next((t for t in running if t.number == number), None)
    reports = {} if trial is None else _schema.read_reports(trial.system_attrs, number)
    return None if not reports else (max(reports), reports[max(reports)])


def _final(state: str) -> bool:
    return state in ("done", "died", "failed", "stopped", "replaced") or state.startswith("exited")


__all__ = ["WorkerSpec", "fail_trials_of", "plan_workers", "run_pool", "visible_gpus", "worker_loop"]
