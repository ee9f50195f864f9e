"""One trial: suggest, train, measure, store.

``space(trial) -> params``; the global random generators (Python's, numpy's,
torch's when it is loaded) are seeded with ``ctx.seed``, so the same params
and seed give the same model in any study; which process runs the trial and
the params ``train`` receives (derived and fixed values included) are stored
before training; ``train(params, task, ctx) -> model``; the study's metrics
are measured on the model; constraint values (Optuna's ``constraints:*``
keys, and the legacy list optuna-dashboard 0.21 reads), metrics, details and
provenance are stored in one transaction; the objective values go back to
Optuna. torch's process-wide settings (TF32, cuDNN flags, attention
backends; :mod:`motune.metrics.settings`) are the run's at the start and
the end of every trial, so one trial cannot change the next one's numbers.
A trial that raises (or whose objective or constraint metric is not
a finite number) fails with its reason under ``error`` and the study goes
on; an interrupted one fails with the reason and the run stops
(:mod:`motune.run.interrupt`).
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from motune import _schema, locks, provenance
from motune.errors import CallbackError, MetricError, MotuneError, SpecError, SpecTypeError
from motune.metrics.registry import measure, non_finite
from motune.metrics.settings import StudySettings
from motune.run import _optuna_compat as compat
from motune.run import artifacts
from motune.run.callbacks import Hooks, TrialStart
from motune.run.context import TrialContext
from motune.run.interrupt import Interrupts, TrialInterrupted
from motune.run.seeding import seed_everything, train_seed
from motune.spec import Study


def run_trial(study: Study, trial: optuna.Trial, hooks: Hooks, control: Interrupts,
              store: Any = None, settings: StudySettings | None = None) -> tuple[float, ...]:
    """One trial of ``study``: train, measure, record (and keep the model in ``store`` by the study's
    keep policy) under the run's torch ``settings`` (put back afterwards); returns the objective values."""
    inherited = compat.frozen_system_attrs(trial)
    settings = settings or StudySettings()
    try:
        with control.trial_scope(trial.number), compat.live_trial(trial), locks.study_timing(study.timing), \
                settings.pinned():
            # which process runs it, first: a pool fails a dead worker's trial by it, even one dead in space()
            compat.write_trial_attrs(trial, _schema.worker_attrs(host=platform.node(), pid=os.getpid()), {})
            params = suggested_params(study, trial)
            seed = train_seed(study.seed, trial.number)
            seed_everything(seed)
            compat.write_trial_attrs(trial, _schema.params_attrs(params), {})
            device = worker_device()
            memory = memory_at_start()
            ctx = TrialContext(trial.number, seed, params, study.name, device, trial, study, hooks, control)
            hooks("on_trial_start", TrialStart(trial.number, dict(params), seed, inherited.get("failed_trial")))
            began = time.perf_counter()
            with locks.training(device):
                model = study.train(params, study.task, ctx)
            trained = time.perf_counter()
            if ctx.pruned is not None:  # a report pruned the trial and its TrialPruned was caught (a Trainer callback)
                raise optuna.TrialPruned(ctx.pruned)
            if model is None:
                raise SpecTypeError("train() returned None; it must return the fitted model")
            measured = measure(model, study.task, study.measured_metrics, options=study.metric_options,
                               split=study.split)
            done = time.perf_counter()
            values = measured.values
            needed = [o.metric for o in study.objectives] + [c.metric for c in study.constraints]
            bad = non_finite(values, needed)
            if bad:
                raise MetricError("not a finite number: " + ", ".join(f"{n}={values[n]}" for n in bad))
            violations = [c.violation(values[c.metric]) for c in study.constraints]
            system = _schema.constraint_attrs([c.key for c in study.constraints], violations,
                                              legacy=study.legacy_constraints)
            objectives = [values[o.metric] for o in study.objectives]
            kept, not_kept = _keep_model(study, trial, model, objectives, violations, store)
            system |= kept
            timing = {"train_s": trained - began, "measure_s": done - trained, "save_s": time.perf_counter() - done}
            user = _schema.outcome_attrs(values=values, details=measured.details, timing=timing,
                                         provenance=provenance.collect(task=study.task, seed=seed)) | not_kept
            gpu_memory = memory_record(memory)
            if gpu_memory is not None:
                user[_schema.GPU_MEMORY_ATTR] = gpu_memory
            compat.write_trial_attrs(trial, user, system)
            return tuple(objectives)
    except optuna.TrialPruned as err:
        traceback.clear_frames(err.__traceback__)  # the pruned trial's tensors are not kept by its exception
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        # another worker failed this trial as stale (its heartbeat was late past the grace period) and
        # queued a retry; the storage already says why. Optuna's own bookkeeping of it then fails.
        control.took_over(trial.number)
        raise
    except TrialInterrupted as err:
        _record_failure(trial, err.reason)
        err.trial = trial.number
        raise
    except CallbackError as err:
        _record_failure(trial, str(err))
        raise TrialInterrupted(str(err), error=err, trial=trial.number) from None
    except SystemExit as err:
        reason = f"train() called sys.exit({'' if err.code is None else repr(err.code)})"
        _record_failure(trial, reason)
        raise TrialInterrupted(reason, exit_requested=True, exit_code=err.code, trial=trial.number) from None
    except KeyboardInterrupt:  # a KeyboardInterrupt raised by the user's own code
        _record_failure(trial, "interrupted (KeyboardInterrupt)")
        raise TrialInterrupted("interrupted (KeyboardInterrupt)", trial=trial.number) from None
    except Exception as err:
        _record_failure(trial, f"{type(err).__name__}: {err}", traceback.format_exc())
        traceback.clear_frames(err.__traceback__)  # whoever keeps the exception (a log handler) keeps no tensors
        if broken_cuda(err):  # every later CUDA call of this process would fail: end it after this trial
            reason = (f"trial {trial.number} broke this process's CUDA context ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); the process exits so that a fresh one takes "
                      "its place (a --gpus pool replaces it by itself)")
            raise TrialInterrupted(reason, exit_requested=True, exit_code=BROKEN_DEVICE_EXIT,
                                   trial=trial.number) from None
        raise


def _keep_model(study: Study, trial: optuna.Trial, model: Any, objectives: list[float], violations: list[float],
                store: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(system attributes naming the kept model, user attributes saying why it was not kept)``. A model that
    cannot be saved does not fail the trial: its measurements stand, and the reason is recorded."""
    keys = [c.key for c in study.constraints]
    feasible = _schema.is_feasible(dict(zip(keys, violations)), keys)
    if store is None or not artifacts.should_keep(study.keep_models, trial, objectives, study.directions, feasible,
                                                  keys):
        return {}, {}
    try:
        return artifacts.save_model(trial, model, store), {}
    except (MotuneError, OSError) as err:
        warnings.warn(f"trial {trial.number}'s model was not kept: {err}", stacklevel=2)
        return {}, {_schema.MODEL_NOT_KEPT_ATTR: str(err)}


BROKEN_DEVICE_EXIT = 75  # a worker whose CUDA context broke exits with this after its trial; the pool replaces it
BROKEN_CUDA = ("device-side assert triggered", "an illegal memory access was encountered", "unspecified launch failure",
               "misaligned address", "an illegal instruction was encountered", "cudaerrorlaunchfailure",
               "uncorrectable ecc error", "cuda error: unknown error")


def broken_cuda(err: BaseException) -> bool:
    """Whether ``err`` is a CUDA error that leaves the process's CUDA context unusable (a device-side assert,
    an illegal memory access ...): every later CUDA call of the process fails. An out-of-memory error is not
    one (the next trial may fit)."""
    text = f"{type(err).__name__}: {err}".lower()
    return any(sign in text for sign in BROKEN_CUDA)


def given_gpus() -> list[str]:
    """The GPUs a pool or Ray gave this worker (``$MOTUNE_WORKER``), ``[]`` for any other process."""
    import json

    try:
        gpus = json.loads(os.environ.get("MOTUNE_WORKER") or "{}").get("gpus") or []
    except ValueError:
        return []
    return [g for g in (gpus.split(",") if isinstance(gpus, str) else gpus) if str(g).strip()]


def require_cuda() -> None:
    """A worker given a GPU refuses to run without CUDA (a CPU build of torch, or no usable driver): its sweep
    would silently train on the CPU. A :class:`~motune.errors.SpecError` naming the torch build.
    ``MOTUNE_GPU_DRY_RUN=1`` lets it go on on the CPU (a GPU layout tried on a CPU machine; each trial's
    provenance records ``gpu_dry_run``)."""
    gpus = given_gpus()
    if not gpus or os.environ.get("MOTUNE_GPU_DRY_RUN") == "1":
        return
    try:
        import torch
    except ImportError:
        raise SpecError(f"this worker was given GPU(s) {gpus}, but torch is not installed; install a CUDA build of "
                        "torch, or run CPU workers (--workers N)") from None
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (a CPU build)'}"
        raise SpecError(f"this worker was given GPU(s) {gpus} (CUDA_VISIBLE_DEVICES="
                        f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}), but torch sees no usable GPU ({build}); "
                        "install a CUDA build of torch, check the driver (nvidia-smi), or run CPU workers "
                        "(--workers N)")


def worker_device() -> str:
    """Where this process's trials train: ``"cuda"`` when torch sees a GPU (a worker pinned to one sees only its
    own, as ``cuda:0``), else ``"cpu"``. A worker given a GPU asks torch even if the study has not imported it
    yet, and refuses to go on without CUDA (:func:`require_cuda`); elsewhere torch is not imported just to ask."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "cpu"  # a CPU worker of a pool: it sees no GPU
    require_cuda()
    torch = sys.modules.get("torch")
    if torch is None and os.environ.get("CUDA_VISIBLE_DEVICES"):
        try:
            import torch
        except ImportError:
            return "cpu"
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


def _cuda() -> Any:
    """torch.cuda when torch is loaded and this process has started CUDA (nothing is started to ask)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_initialized() else None
    except Exception:  # noqa: BLE001
        return None


def memory_at_start() -> dict[str, Any] | None:
    """GPU memory as a trial starts (reserved by this process's caching allocator), peaks reset."""
    cuda = _cuda()
    if cuda is None:
        return None
    cuda.reset_peak_memory_stats()
    return {"reserved_mb_at_start": cuda.memory_reserved() / 2**20, "allocated_mb_at_start": cuda.memory_allocated() / 2**20}


def memory_record(start: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the trial held on the GPU: memory at its start and its peaks (``None`` without CUDA)."""
    cuda = _cuda()
    if cuda is None:
        return start
    return {**(start or {}), "peak_allocated_mb": cuda.max_memory_allocated() / 2**20,
            "peak_reserved_mb": cuda.max_memory_reserved() / 2**20}


def release_memory() -> None:
    """After a trial: what it left unreferenced is freed (a failed or pruned trial's exception keeps its
    frames, and their tensors, alive until a collection) and the CUDA caching allocator gives its blocks back,
    so workers sharing a GPU do not each keep their peak."""
    cuda = _cuda()
    if cuda is None:
        return
    gc.collect()
    cuda.empty_cache()


def suggested_params(study: Study, trial: optuna.Trial) -> dict[str, Any]:
    """``space(trial)``'s params (``None``: Optuna's suggested ``trial.params``)."""
    params = study.space(trial)
    if params is not None and not isinstance(params, Mapping):
        raise SpecTypeError(f"space(trial) must return a dict of params or None (to use trial.params), "
                            f"got {type(params).__name__}")
    return dict(trial.params) if params is None else dict(params)


def _record_failure(trial: optuna.Trial, error: str, traceback_text: str | None = None) -> None:
    """Store why the trial failed; a storage that fails now must not hide the original error."""
    try:
        compat.write_trial_attrs(trial, _schema.failure_attrs(error, traceback_text or error), {})
    except Exception:  # noqa: BLE001
        pass
