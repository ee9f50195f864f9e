"""Locks that keep latency measurements honest on a shared machine.

Timing is serialised **per device**: one lock file per physical device, a
CPU host (``cpu-<host>``) or a GPU (``gpu-<UUID>``, so two workers that each
see their GPU as ``cuda:0`` do not exclude each other, and two processes on
one GPU do), in a folder every job on the machine can reach:
``$MOTUNE_LOCK_DIR``, default ``~/.cache/motune/locks`` (not the temporary
folder, which schedulers often make private per job).

Every training (motune's ``train`` calls, in any study on the host) holds a
shared host lock and keeps a marker file in ``<lock folder>/training/``
naming its physical device (``cpu-<host>`` or ``gpu-<UUID>``); a training on
a GPU also holds that GPU's shared training lock. A timing run on a GPU takes
its GPU's training lock exclusively, writer first, in either mode: two
workers sharing a GPU (``--workers-per-gpu 2``, fractional Ray GPUs) never
time while the other trains there; the timer waits for the training under
way, and new training there waits for the timer. A study that times with
``Study(timing="exclusive")`` takes the host's training lock exclusively too,
so no training anywhere on the host runs while it times. On a CPU the
default, ``"per-device"``, lets others train while one times and records who
was training (``others_training`` in the latency record, with each one's
device). Trials in threads of one
process (``n_jobs > 1``) share the process's locks, so exclusive timing
there keeps out other processes only. Where the lock folder cannot be
written, the temporary folder is used, and training goes on without a marker.

:func:`timing_lock` is what :mod:`motune.metrics.latency` takes around a
timing run; :func:`training` is what a trial holds around ``train``.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from motune import devices

TIMING_MODES = ("per-device", "exclusive")
_mode: contextvars.ContextVar[str] = contextvars.ContextVar("motune_timing_mode", default="per-device")
_HELD: list[Any] = []  # the shared host training locks this process holds (its trials in train)
_HELD_GPU: list[Any] = []  # the shared GPU training locks it holds


def lock_folder() -> Path:
    """``$MOTUNE_LOCK_DIR``, else ``~/.cache/motune/locks``; the temporary folder where those cannot be written."""
    for folder in (Path(os.environ["MOTUNE_LOCK_DIR"]) if os.environ.get("MOTUNE_LOCK_DIR") else None,
                   Path.home() / ".cache" / "motune" / "locks", Path(tempfile.gettempdir()) / "motune-locks"):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "training").mkdir(exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    raise OSError("no folder for motune's timing locks can be written: set MOTUNE_LOCK_DIR")


def device_key(device: str) -> str:
    """The physical device a torch device string names: ``cpu-<host>`` or ``gpu-<UUID>``."""
    device = str(device)
    if not devices.is_cuda(device):
        return f"cpu-{platform.node()}"
    torch = sys.modules.get("torch")
    try:
        index = devices.cuda_index(device, torch.cuda)
        uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
        if uuid:
            return f"gpu-{uuid}"
    except Exception:  # noqa: BLE001  (an old torch without uuid: the host and the visible index)
        index = device
    return f"gpu-{platform.node()}-{os.environ.get('CUDA_VISIBLE_DEVICES', '')}-{index}"


class _Flock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, mode: int) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, mode)  # a signal here closes the descriptor; nothing is left locked
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def timing_lock(device: str) -> Iterator[dict[str, Any]]:
    """Hold the device's timing lock (and, in exclusive mode, keep the host's training off) for the block.

    Yields a record of the wait: ``lock`` (the device key), ``lock_wait_s``, ``mode`` and
    ``others_training`` (processes training on this host while this one timed, per-device mode)."""
    folder = lock_folder()
    key = device_key(device)
    asked = time.perf_counter()
    device_lock = _Flock(folder / f"{key}.lock")
    host = f"host-{platform.node()}"
    exclusive = _mode.get() == "exclusive"
    turnstile, training_lock = _Flock(folder / f"{host}.turnstile"), _Flock(folder / f"{host}.training")
    mine = list(_HELD) if exclusive else []
    for lock in mine:  # this process's own training locks (a report inside train): let the timer have the host
        lock.release()
    gpu = key.startswith("gpu-")
    gpu_turnstile, gpu_training = _Flock(folder / f"{key}.turnstile"), _Flock(folder / f"{key}.training")
    mine_gpu = [lock for lock in _HELD_GPU if lock.path == gpu_training.path] if gpu else []
    for lock in mine_gpu:  # a report inside this process's own training on the GPU: let its timer have the GPU
        lock.release()
    try:
        if exclusive:  # the host first, the device last: a training process may still time on the device meanwhile
            turnstile.acquire(fcntl.LOCK_EX)  # new training waits behind this timer
            training_lock.acquire(fcntl.LOCK_EX)  # training already under way finishes first
        elif gpu:  # a GPU is never timed while another process trains on it
            gpu_turnstile.acquire(fcntl.LOCK_EX)
            gpu_training.acquire(fcntl.LOCK_EX)
        device_lock.acquire(fcntl.LOCK_EX)
        info = {"lock": key, "lock_wait_s": time.perf_counter() - asked, "mode": _mode.get(),
                "training_excluded": "host" if exclusive else ("gpu" if gpu else "none"),
                "others_training": [] if exclusive else others_training()}
        yield info
    finally:
        device_lock.release()
        training_lock.release()
        turnstile.release()
        gpu_training.release()
        gpu_turnstile.release()
        for lock in mine:
            lock.acquire(fcntl.LOCK_SH)
        for lock in mine_gpu:
            lock.acquire(fcntl.LOCK_SH)


@contextlib.contextmanager
def study_timing(mode: str) -> Iterator[None]:
    """The study's timing mode for a trial (``"per-device"`` or ``"exclusive"``), read by :func:`timing_lock`
    and :func:`training`."""
    if mode not in TIMING_MODES:
        raise ValueError(f"timing must be one of {list(TIMING_MODES)}, got {mode!r}")
    token = _mode.set(mode)
    try:
        yield
    finally:
        _mode.reset(token)


@contextlib.contextmanager
def training(device: str) -> Iterator[None]:
    """This process trains on ``device`` in the block: the host's shared training lock (after any timer
    already waiting) and a marker file that other processes' latency records name."""
    folder = lock_folder()
    host = f"host-{platform.node()}"
    key = device_key(device)
    marker = folder / "training" / f"{platform.node()}-{os.getpid()}-{time.monotonic_ns()}.json"
    held = _Flock(folder / f"{host}.training")
    held_gpu = _Flock(folder / f"{key}.training") if key.startswith("gpu-") else None
    try:
        for gate, lock, holders in ((folder / f"{host}.turnstile", held, _HELD),
                                    *(((folder / f"{key}.turnstile", held_gpu, _HELD_GPU),) if held_gpu else ())):
            turnstile = _Flock(gate)
            turnstile.acquire(fcntl.LOCK_EX)  # behind a timer that is waiting
            turnstile.release()
            lock.acquire(fcntl.LOCK_SH)
            holders.append(lock)
        try:  # once training really starts: a process still waiting for a timer is not named as training
            marker.write_text(json.dumps({"pid": os.getpid(), "device": key, "torch_device": str(device),
                                          "since": time.time()}))
        except OSError:
            marker = None  # no marker: others' records will not name this training
        yield
    finally:
        for lock, holders in ((held, _HELD), (held_gpu, _HELD_GPU)):
            if lock is not None:
                if lock in holders:
                    holders.remove(lock)
                lock.release()
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink(missing_ok=True)


def others_training() -> list[dict[str, Any]]:
    """Other live processes training on this host now (from the marker files)."""
    out = []
    for path in (lock_folder() / "training").glob(f"{platform.node()}-*.json"):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("pid") == os.getpid():
            continue
        try:
            os.kill(int(info["pid"]), 0)
        except PermissionError:
            pass  # another user's live process
        except (OSError, ValueError, KeyError):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # a marker left by a process that died
            continue
        out.append({"pid": info["pid"], "device": info.get("device")})
    return out
