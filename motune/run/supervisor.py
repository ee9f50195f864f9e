"""One supervisor for a study's workers, whether they are processes on this machine or actors on a Ray cluster.

What every pool of workers must decide the same way is decided here, once:

- **tickets**: a worker takes a ticket before each trial, so the pool runs
  exactly ``n_trials`` trials however fast each worker is; a retry of a
  trial whose worker died brings a ticket of its own (a death does not eat
  one) and adds one to the progress total;
- **stop**: Ctrl-C or SIGTERM to the supervising process stops every worker
  (each fails its running trial with the reason where it can; what a worker
  leaves behind is failed here), and is the run's ``interrupted``;
- **a worker that ended**: finished (exit 0); stopped by the stop; its CUDA
  context broke (a fresh worker takes its place); it asked to exit
  (``sys.exit(code)`` in ``train``: the pool stops and the code is passed
  on); its own error (its study file does not load there: the pool stops and
  the error is raised); or it died (``kill -9``, out of memory, a lost node):
  its running trial is failed at once ("worker died (...)") and retried, and
  a new worker takes its place, up to ``max_replacements``;
- **progress**: one display, seeded with the trials already stored, a line
  per finished trial.

A launcher does only what differs between places: how a worker starts, how
its news arrives, how a stop reaches it, and how it is ended at the close.
:class:`motune.run.pool.ProcessLauncher` (processes, a pipe each) and
:class:`motune.run.cluster.RayLauncher` (Ray actors, a tickets actor) are
the two.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import optuna

from motune import _schema
from motune.errors import SpecError
from motune.results import Result, record_of
from motune.run import _optuna_compat as compat
from motune.run.callbacks import TrialStart
from motune.run.progress import TrialProgress
from motune.run.trial import BROKEN_DEVICE_EXIT

STOPPED_CODES = (143, 130)  # a worker that announced SIGTERM / SIGINT as its exit stopped as it was told


class Tickets:
    """The trial count of a pool: ``left`` trials to hand out (``None``: no count, a timeout ends the run). A
    Ray cluster runs this same class as an actor."""

    def __init__(self, n: int | None) -> None:
        self.left = n

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def give_back(self, n: int = 1) -> None:
        if self.left is not None:
            self.left += n

    def close(self) -> None:
        self.left = 0

    def remaining(self) -> int | None:
        return self.left


@dataclass(frozen=True)
class Ended:
    """A worker that ended, as its launcher saw it."""

    index: int
    pid: int | None
    host: str
    code: Any = None  # the process's exit code (0: it finished); None where none is known (a lost Ray actor)
    announced: Any = None  # the exit code the worker said it ends with (sys.exit in train, a signal, a broken GPU)
    said: str = ""  # how its death is said in the progress: "with exit code -9", "on HOST (its Ray actor ...)"
    reason: str = ""  # how it is said in its trials' fail reason: "its process ended with exit code -9"


class Event(NamedTuple):
    """News from the workers: ``start`` (value: the trial number), ``end`` (value: the finished trial's
    record), ``retry`` (value: how many retries a worker queued), ``error`` (value: (text, exception or
    None): the worker's own error) or ``ended`` (value: :class:`Ended`). ``index`` is the worker's (``None``
    where the news came from the storage)."""

    kind: str
    index: int | None
    value: Any = None


class Launcher(Protocol):
    where: str  # "in 2 worker processes: w0 (CPU, 1 thread) ..." for the first line
    prefix: str | None  # the progress lines' prefix for news without a worker ("ray"), or None
    shows_states: bool  # whether the progress line shows each worker's state (it hears their trial starts)
    tickets: Any  # take() / give_back(n) / remaining() / close(), as :class:`Tickets`

    def label(self, index: int) -> str: ...

    def start(self, indices: Sequence[int], grant: Callable[[], bool]) -> list[int]:
        """Start workers ``indices`` (``grant()`` answers a worker's ticket request); returns those that could
        not be placed."""

    def events(self) -> Iterable[Event]:
        """The news since the last call (waiting a moment for some)."""

    def busy(self) -> bool:
        """Whether any worker is still to be heard from."""

    def stop(self, signal_name: str) -> None:
        """Pass a stop on to every worker (called from a signal handler: no waiting)."""

    def close(self, stopped_by: str | None) -> list[tuple[int, str, str]]:
        """End every worker still there; returns ``(pid, host, reason)`` of those ended here, whose running
        trials the supervisor fails."""


@dataclass
class Supervisor:
    """Runs ``launcher``'s ``workers`` on ``ostudy`` (see the module docstring); :meth:`run` returns the result
    read back, the signal that stopped it (``None``) and the exit code a worker's ``train`` asked for."""

    study: Any
    ostudy: optuna.Study
    launcher: Launcher
    workers: Sequence[int]
    n_trials: int | None
    timeout: float | None
    max_replacements: int = 3
    show_progress: bool = True
    states: dict[int, str] = field(default_factory=dict)
    stopping: list[str] = field(default_factory=list)
    errors: list[tuple[str, BaseException | None]] = field(default_factory=list)
    asked_exit: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = [c.key for c in self.study.constraints]
        self.replacements_left = self.max_replacements
        self.progress = TrialProgress(self.study, total=self.n_trials, enabled=self.show_progress)
        self.progress.seed(record_of(t, self.keys) for t in self.ostudy.get_trials(deepcopy=False))

    # ---------------------------------------------------------------- decisions

    def grant(self) -> bool:
        """A worker asks for a ticket: none once the pool is stopping."""
        return bool(self.launcher.tickets.take()) and not self.stopping

    def on_retry(self, n: int = 1) -> None:
        """A retry was queued (here or in a worker): it brings its own ticket and is one more to run."""
        self.launcher.tickets.give_back(n)
        self.progress.add_to_total(n)

    def stop(self, signum: int | None, _frame: Any = None) -> None:
        """Stop every worker: on a signal (passed on as it came), or for the pool's own reason (``None``: an
        error, an exit; passed on as the signal that stops the pool, SIGTERM if none did)."""
        if not self.stopping:
            self.stopping.append("SIGTERM" if signum is None else signal.Signals(signum).name)
        passed = "SIGINT" if signum == signal.SIGINT or signum is None and self.stopping[0] == "SIGINT" else "SIGTERM"
        self.launcher.stop(passed)

    def more_trials(self) -> bool:
        left = self.launcher.tickets.remaining()
        return left is None or left > 0

    def replace(self, index: int) -> None:
        """Start a worker in ``index``'s place, if the run wants more trials and a replacement is left."""
        if self.stopping or not self.more_trials() or self.replacements_left <= 0:
            return
        self.replacements_left -= 1
        if self.launcher.start([index], self.grant):
            self.progress.print(f"could not place a new {self.launcher.label(index)}; going on without it")
            self.states[index] = "unplaced"
        else:
            self.states[index] = "starting"

    def fail_left(self, pid: int | None, host: str, reason: str, *, retry: bool, label: str | None = None
                  ) -> list[int]:
        """Fail (and retry) the trials a worker left running; each is said in the progress."""
        if pid is None:
            return []
        failed = fail_trials_of(self.ostudy, pid, host, reason, retry=retry)
        for number in failed:
            t = next(t for t in self.ostudy.get_trials(deepcopy=False) if t.number == number)
            self.progress.on_trial_end(record_of(t, self.keys), prefix=label or self.launcher.prefix)
        return failed

    def on_ended(self, ended: Ended) -> None:
        index, label = ended.index, self.launcher.label(ended.index)
        if ended.code == 0:
            self.states[index] = "done"
            return
        if self.states.get(index) == "failed":  # its own error, said and handled when it came
            return
        failed = self.fail_left(ended.pid, ended.host, f"worker died ({ended.reason})", retry=not self.stopping,
                                label=label)
        if self.stopping or ended.announced in STOPPED_CODES:
            self.states[index] = "stopped"
            return
        can_replace = self.more_trials() and self.replacements_left > 0
        if ended.announced == BROKEN_DEVICE_EXIT:  # its CUDA context broke: a fresh worker takes its place
            self.states[index] = "replaced"
            self.progress.print(f"{label} (pid {ended.pid}) ended: a trial broke its CUDA context"
                                + ("; a new worker takes its place" if can_replace else ""))
            self.replace(index)
            return
        if ended.announced is not None:  # sys.exit(code) in train: the trial is stored FAIL; the pool stops with it
            self.states[index] = f"exited {ended.announced}"
            self.asked_exit.append(ended.announced)
            self.stop(None)
            return
        self.states[index] = "died"
        self.progress.print(f"{label} (pid {ended.pid}) died {ended.said}; its trial(s) {failed or 'none'} failed "
                            "and retried"
                            + (f"; a new worker takes its place ({self.replacements_left - 1} more allowed)"
                               if can_replace else ""))
        self.replace(index)

    def handle(self, event: Event) -> None:
        kind, index, value = event
        label = None if index is None else self.launcher.label(index)
        if kind == "start":
            self.states[index] = f"trial {value}"
            self.progress.on_trial_start(TrialStart(number=value, params={}, seed=0))
        elif kind == "end":
            if index is not None:
                self.states[index] = "idle"
            self.progress.on_trial_end(value, prefix=label if label is not None else self.launcher.prefix)
        elif kind == "retry":
            self.on_retry(value)
        elif kind == "error":  # the worker's own error (a study file that fails there ...): stop the pool
            text, exc = value
            self.progress.print(f"{label} stopped: {text}")
            self.errors.append((f"worker {label} failed: {text}", exc))
            self.states[index] = "failed"
            self.stop(None)
        elif kind == "ended":
            self.on_ended(value)

    # ---------------------------------------------------------------- the run

    def run(self, attach: Callable[[Result], Result]) -> tuple[Result, str | None, Any]:
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        compat.RETRY_CREATED.append(self.on_retry)
        self.progress.on_study_start(None)
        self.progress.print(f"running {self.n_trials or 'trials'}"
                            f"{'' if self.n_trials or self.timeout is None else f' for {self.timeout:g} s'} of study "
                            f"{self.study.name} {self.launcher.where}")
        try:
            for index in self.workers:
                self.states[index] = "starting"
            unplaced = self.launcher.start(list(self.workers), self.grant)
            for index in unplaced:
                self.states[index] = "unplaced"
            if unplaced:
                self.progress.print(f"placed {len(self.workers) - len(unplaced)} of {len(self.workers)} workers; "
                                    "going on with those")
            while self.launcher.busy():
                for event in self.launcher.events():
                    self.handle(event)
                if self.launcher.shows_states:
                    self.progress.worker_states = dict(sorted(self.states.items()))
        finally:
            if self.launcher.busy():
                self.stop(None)
            for pid, host, reason in self.launcher.close(self.stopping[0] if self.stopping else None):
                self.fail_left(pid, host, reason, retry=False)
            for s, handler in previous.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)
            compat.RETRY_CREATED.remove(self.on_retry)
            result = attach(Result(self.ostudy))
            result.spec = self.study
            result.interrupted = self.stopping[0] if self.stopping and not self.errors and not self.asked_exit \
                else None
            self.progress.on_study_end(result)
        if self.errors:
            text, exc = self.errors[0]
            raise exc if exc is not None else SpecError(text)
        return result, result.interrupted, (self.asked_exit[0] if self.asked_exit else None)


def fail_trials_of(ostudy: optuna.Study, pid: int, host: str, reason: str, *, retry: bool = True) -> list[int]:
    """Fail (and retry) the RUNNING trials a dead process left, at once: its supervisor saw it die."""
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


__all__ = ["Ended", "Event", "Launcher", "Supervisor", "Tickets", "fail_trials_of"]
