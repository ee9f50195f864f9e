"""Running a study: check the arguments, open the study, run trials with Optuna, read the result back.

Everything the arguments can get wrong is checked before the study is
created or resumed. Trials run through ``optuna.Study.optimize`` (its
heartbeat thread, its ``n_jobs`` threads, its callbacks). On an RDB storage
with a heartbeat a watch thread fails heartbeat-stale trials of dead workers
every heartbeat interval, with the reason, and Optuna retries them
(:mod:`motune.run.storage`). Signals are handled as
:mod:`motune.run.interrupt` describes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import optuna

from motune.devices import visible_gpus
from motune.errors import SpecError
from motune.metrics.settings import StudySettings
from motune.results import Result, record_of
from motune.run import _optuna_compat as compat
from motune.run import artifacts
from motune.run.callbacks import Hooks, StudyStart, split_callbacks
from motune.run.interrupt import Interrupts, TrialInterrupted
from motune.run.location import locate
from motune.run.progress import TrialProgress
from motune.run.study import attach_store, open_study
from motune.run.trial import release_memory, run_trial
from motune.spec import Study


def check_run_arguments(n_trials: Any, timeout: Any, n_jobs: Any, budget: Any = None) -> None:
    """Raise :class:`~motune.errors.SpecError` for arguments ``optimize`` cannot use."""
    if n_trials is None and timeout is None and budget is None:
        raise SpecError("give n_trials or timeout (or both); otherwise the study would run forever")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise SpecError(f"n_trials must be a positive integer, got {n_trials!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise SpecError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or not (n_jobs >= 1 or n_jobs == -1):
        raise SpecError(f"n_jobs must be a positive integer (or -1 for one thread per CPU), got {n_jobs!r}")


def optimize(
    study: Study,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    n_jobs: int = 1,
    show_progress: bool | None = None,
    callbacks: Sequence[Any] | None = None,
    budget: Callable[[], bool] | None = None,
) -> Result:
    """Run trials of ``study``; see :meth:`motune.Study.optimize`.

    ``budget``: a worker pool's shared trial count; ``budget()`` takes a ticket (``False``: none left) before
    each trial, so the pool runs exactly its number of trials however fast each worker is."""
    check_run_arguments(n_trials, timeout, n_jobs, budget)
    pinned = pin_one_gpu()
    ours, theirs = split_callbacks(callbacks)
    progress = TrialProgress(study, total=n_trials, enabled=True if show_progress is None else show_progress)
    hooks = Hooks([progress, *ours])
    where = locate(study)  # storage, heartbeat and artifact store: resolved here, once
    store = where.artifact_store
    with _quiet_optuna(True):
        ostudy = open_study(study, where)
    progress.seed(record_of(t, [c.key for c in study.constraints]) for t in ostudy.get_trials(deepcopy=False))
    control = Interrupts(ostudy)
    # torch's process-wide settings (TF32, cuDNN, attention) each trial starts with; with n_jobs threads,
    # several trials share them at once, so they are recorded but cannot be pinned per trial
    settings = StudySettings(pin=n_jobs == 1)
    keys = [c.key for c in study.constraints]
    ended: set[int] = set()

    def trial_ended(_study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        ended.add(frozen.number)
        release_memory()  # before the next trial: the last one's leftovers (a failed trial's frames) freed
        hooks("on_trial_end", record_of(frozen, keys))

    stopped: TrialInterrupted | None = None
    try:
        if pinned:
            progress.print(pinned)
        hooks("on_study_start", StudyStart(
            study.name, [str(o) for o in study.objectives], [str(c) for c in study.constraints], n_trials, timeout,
            where.name, len(ostudy.get_trials(deepcopy=False))))
        began = time.monotonic()
        with _quiet_optuna(True), _no_interrupt_tracebacks(), control.installed(), \
                _stale_trial_watch(ostudy):
            while True:  # one pass, unless a trial of this run was taken over by another worker
                left = None if n_trials is None else n_trials - len(control.started)
                left_s = None if timeout is None else timeout - (time.monotonic() - began)
                if (left is not None and left <= 0) or (left_s is not None and left_s <= 0):
                    break
                taken = len(control.taken_over)
                if budget is not None and not budget():
                    break
                try:
                    ostudy.optimize(lambda trial: run_trial(study, trial, hooks, control, store, settings), n_trials=left,
                                    timeout=left_s, n_jobs=n_jobs, catch=(Exception,),
                                    callbacks=[trial_ended, *theirs, *([] if budget is None else [_Budget(budget)])])
                    break
                except TrialInterrupted as err:  # Optuna stored the trial FAIL, then re-raised
                    stopped = err
                    break
                except Exception as err:
                    if len(control.taken_over) == taken:
                        number = _failed_under_us(ostudy, control, ended, err)
                        if number is None:
                            raise
                        control.took_over(number)
                    progress.print(f"trial {control.taken_over[-1]} was failed by another worker while it ran (its "
                                   "heartbeat was late past the grace period: does train hold the GIL that long? "
                                   "see --heartbeat); it is retried; going on")
        for number in control.started:  # trials Optuna did not call back for (interrupted, taken over)
            if number not in ended:
                frozen = [t for t in ostudy.get_trials(deepcopy=False) if t.number == number]
                if frozen and frozen[0].state.is_finished():
                    trial_ended(ostudy, frozen[0])
        result = attach_store(Result(ostudy), where.named, store)
        result.spec = study
        removed = artifacts.apply_keep_policy(result, store, study.keep_models)
        if removed:
            result.refresh()
        if removed and progress.enabled:
            progress.print(f"removed the models of {len(removed)} trial(s) no longer on the front "
                           f"(keep_models={study.keep_models!r})")
        result.interrupted = control.signal or (stopped.reason if stopped is not None else None)
        hooks("on_study_end", result)
    finally:
        progress.close()
    if result.interrupted is not None and progress.enabled:
        progress.print(f"{result.interrupted}: finished trials are stored and the interrupted one failed with "
                       "its reason; run the same study again to resume")
    if stopped is not None and stopped.error is not None:
        raise stopped.error
    if stopped is not None and stopped.exit_requested:
        raise SystemExit(stopped.exit_code)
    if control.signal == "SIGTERM":
        raise SystemExit(143)
    return result


def pin_one_gpu() -> str | None:
    """A run that is not a pool's or Ray's worker, on a machine with several GPUs, uses one: the first
    (``CUDA_VISIBLE_DEVICES`` set before anything starts CUDA), so that a transformers Trainer inside ``train``
    does not wrap the model in ``DataParallel`` over all of them and multiply its batch size. Returns the note
    to print (``None``: nothing changed). ``MOTUNE_ALL_GPUS=1`` leaves every GPU visible (a train function that
    uses several itself); ``--gpus all`` runs one worker per GPU."""
    import os
    import sys

    if os.environ.get("MOTUNE_WORKER") or os.environ.get("MOTUNE_ALL_GPUS") == "1" \
            or "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # too late to hide GPUs from this process
        count = torch.cuda.device_count()
        if count > 1:
            warnings.warn(f"this process sees {count} GPUs and has started CUDA: a Trainer in train() would run "
                          "DataParallel over all of them; run with --gpus all (one worker per GPU) or set "
                          "CUDA_VISIBLE_DEVICES", stacklevel=3)
        return None
    gpus = visible_gpus()
    if len(gpus) <= 1:
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    return (f"this run uses GPU {gpus[0]} of the {len(gpus)} here (CUDA_VISIBLE_DEVICES={gpus[0]}); run with "
            "--gpus all for one worker per GPU, or set MOTUNE_ALL_GPUS=1 to keep them all visible")


class _Budget:
    """An Optuna callback: after each trial, take the next trial's ticket, or stop the study."""

    def __init__(self, take: Callable[[], bool]) -> None:
        self.take = take

    def __call__(self, study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if not self.take():
            compat.request_stop(study)


@contextlib.contextmanager
def _quiet_optuna(quiet: bool) -> Iterator[None]:
    """Optuna's per-trial log lines are hushed: motune prints its own progress, or nothing (``-q``)."""
    if not quiet:
        yield
        return
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


class _DropInterruptTraceback(logging.Filter):
    """An interrupted trial is logged by Optuna as failed; its traceback (the signal handler's frame) is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialInterrupted):
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def _no_interrupt_tracebacks() -> Iterator[None]:
    handlers = logging.getLogger("optuna").handlers
    dropper = _DropInterruptTraceback()
    for handler in handlers:
        handler.addFilter(dropper)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(dropper)


def _failed_under_us(ostudy: optuna.Study, control: Any, ended: Any, err: Exception) -> int | None:
    """The trial of this run another worker failed as stale after ``train`` returned and before Optuna
    stored the result (Optuna then raises "Cannot tell a FAIL trial"), or ``None``."""
    if not isinstance(err, ValueError) or "Cannot tell a FAIL trial" not in str(err):
        return None
    states = {t.number: t.state for t in ostudy.get_trials(deepcopy=False)}
    failed = [n for n in control.started if n not in ended and states.get(n) == optuna.trial.TrialState.FAIL]
    return failed[-1] if failed else None


@contextlib.contextmanager
def _stale_trial_watch(ostudy: optuna.Study) -> Iterator[None]:
    """Every heartbeat interval, fail (and so retry) the trials of workers that died, even while this
    worker's own trial runs (Optuna itself looks only when a trial starts)."""
    interval = compat.heartbeat_interval_s(compat.storage_of(ostudy))
    if not interval:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            try:
                compat.fail_stale_trials(ostudy)
            except Exception:  # noqa: BLE001  (a storage hiccup: the next round or the next trial start retries)
                pass

    thread = threading.Thread(target=watch, name="motune-stale-trial-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


__all__ = ["check_run_arguments", "optimize"]
