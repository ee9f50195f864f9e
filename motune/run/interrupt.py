"""Stopping a run on SIGINT / SIGTERM (or ``sys.exit()`` in ``train``) with no trial left RUNNING.

While a study runs in the main thread, motune handles SIGINT (Ctrl-C) and
SIGTERM itself:

- inside a trial (``space``, ``train``, measuring, storing) the signal raises
  :class:`TrialInterrupted` there; the trial ends FAIL with the reason
  (``interrupted by SIGTERM``) stored under ``error``;
- between trials (the sampler, Optuna's bookkeeping) it only asks the study
  to start no further trial, so Optuna's own writes are never cut in half; a
  trial Optuna had already created then ends FAIL with "not started: the run
  was interrupted by SIGINT";
- trials running in other threads (``n_jobs > 1`` runs every trial in a
  thread) end at their next ``ctx.report`` (or finish, if they do not report);
- a second Ctrl-C raises ``KeyboardInterrupt`` at once (for a train function
  that never returns; a trial in another thread is then left to the
  heartbeat); a SIGTERM after a Ctrl-C still ends the process with 143.

``sys.exit(code)`` inside ``train`` ends the trial FAIL ("train() called
sys.exit(code)") and then exits with that code. After a signal,
:func:`motune.run.optimize` returns the result read back from storage with
``result.interrupted`` set (SIGINT) or exits with status 143 (SIGTERM, what
a scheduler sends to stop a job).

:class:`Interrupts` also keeps what this run started (trial numbers) and which
of its trials another worker failed as stale while they ran ("taken over":
a train function that held Python's GIL past the heartbeat grace period),
so the run can report them and go on.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from motune.run._optuna_compat import request_stop


class TrialInterrupted(KeyboardInterrupt):
    """A trial stopped by a signal or by ``sys.exit`` in ``train``. A ``KeyboardInterrupt``, so that
    Optuna ends the trial FAIL and re-raises it instead of going on."""

    def __init__(self, reason: str, *, exit_requested: bool = False, exit_code: Any = None,
                 error: BaseException | None = None, trial: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_requested = exit_requested  # sys.exit in train: exit with exit_code after the trial is stored
        self.exit_code = exit_code
        self.error = error  # an error to raise once the trial is stored (a callback that failed)
        self.trial = trial


class Interrupts:
    """The signal state of one run of a study."""

    def __init__(self, study: Any) -> None:
        self.study = study  # the optuna.Study
        self.signal: str | None = None  # the signal that stops the run (SIGTERM wins over SIGINT)
        self._in_trial = False  # the main thread is inside a trial
        self._previous: dict[int, Any] = {}
        self.started: list[int] = []  # trial numbers this run started
        self.taken_over: list[int] = []  # trials another worker failed as stale while this one ran them
        self._lock = threading.Lock()

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def check(self) -> None:
        """Raise :class:`TrialInterrupted` if a signal asked the run to stop (at each report, in any thread)."""
        if self.signal is not None:
            raise TrialInterrupted(f"interrupted by {self.signal}")

    @contextlib.contextmanager
    def trial_scope(self, number: int) -> Iterator[None]:
        """Trial ``number`` runs in the block; in the main thread a signal may raise inside it."""
        main = threading.current_thread() is threading.main_thread()
        with self._lock:
            self.started.append(number)
        if self.signal is not None:
            raise TrialInterrupted(f"not started: the run was interrupted by {self.signal}")
        if main:
            self._in_trial = True
        try:
            yield
        finally:
            if main:
                self._in_trial = False

    def took_over(self, number: int) -> None:
        with self._lock:
            self.taken_over.append(number)

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.signal is None or signum == signal.SIGTERM:
            self.signal = name
        request_stop(self.study)
        if self._in_trial:
            self._in_trial = False  # raise once; recording the failure must not be cut
            raise TrialInterrupted(f"interrupted by {name}")

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Handle SIGINT and SIGTERM for the block (only from the main thread; elsewhere nothing)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set from C
            self._previous.clear()
