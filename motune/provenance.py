"""What produced a trial: package versions, Python, platform, hardware, git
revision, the data's fingerprint and the trial's seed."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from typing import Any

PACKAGES = ("motune", "optuna", "scikit-learn", "fairlearn", "numpy", "pandas", "torch", "transformers", "plotly")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Facts that do not change within a process (computed once)."""
    info: dict[str, Any] = {
        "versions": {p: v for p in PACKAGES if (v := _version(p)) is not None},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "git_revision": git_revision(),
    }
    torch = sys.modules.get("torch")  # only when the study already uses torch
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def git_revision(path: str | None = None) -> str | None:
    """The git commit of the working directory (with ``+dirty`` when it has changes), if any."""
    try:
        cwd = path or os.getcwd()
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def collect(*, task: Any, seed: int) -> dict[str, Any]:
    """The provenance record stored on a trial."""
    return {**environment(), "seed": seed, "data": {"task": task.name, "fingerprint": task.fingerprint},
            "worker": worker()}


def worker() -> dict[str, Any]:
    """The process that ran the trial: its pid, the GPUs it was given (``CUDA_VISIBLE_DEVICES``), its thread
    counts, and the pool or scheduler slot (``$MOTUNE_WORKER``, set by a worker pool or ``motune worker``)."""
    import json

    info: dict[str, Any] = {"pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if os.environ.get("MOTUNE_WORKER"):
        try:
            info |= json.loads(os.environ["MOTUNE_WORKER"])
        except ValueError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    if os.environ.get("MOTUNE_GPU_DRY_RUN") == "1":
        info["gpu_dry_run"] = True  # given GPU ids, trained on the CPU (run.trial.require_cuda let it)
    return info
