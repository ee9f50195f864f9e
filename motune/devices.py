"""Device strings, read in one place: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` (torch's spelling), or anything
else a model says it runs on (``"mps"``, ``"xpu:0"``); and the GPUs a process may use
(:func:`visible_gpus`, found without starting CUDA in this process).

:func:`parse` splits one into its kind and index (``None``: the kind's current device); :func:`is_cuda`
says whether it names an NVIDIA GPU; :func:`cuda_index` resolves the index torch means by it. Nothing
here imports torch: a caller passes ``torch.cuda`` where an index must be resolved.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from typing import Any, NamedTuple

from motune.errors import SpecError


class Device(NamedTuple):
    kind: str  # "cpu", "cuda", or another backend's name
    index: int | None  # None: the kind's current device (and always for "cpu")

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse(device: Any) -> Device:
    """``device`` (a string or a ``torch.device``) as its kind and index; a malformed one is a
    :class:`~motune.errors.SpecError`."""
    text = str(device).strip().lower()
    kind, sep, index = text.partition(":")
    if not kind or (sep and not index.isdigit()):
        raise SpecError(f"a device is 'cpu', 'cuda' or 'cuda:N' (N a GPU index), got {device!r}")
    return Device(kind, int(index) if sep else None)


def is_cuda(device: Any) -> bool:
    """Whether ``device`` names an NVIDIA GPU (``"cuda"`` or ``"cuda:N"``)."""
    return device is not None and parse(device).kind == "cuda"


def cuda_index(device: Any, cuda: Any) -> int:
    """The GPU index torch means by ``device`` (``"cuda"``: ``cuda.current_device()``)."""
    index = parse(device).index
    return cuda.current_device() if index is None else index


def same(a: Any, b: Any) -> bool:
    """Whether two device strings name the same device (``"cuda"`` is ``"cuda:0"`` where 0 is current)."""
    first, second = parse(a), parse(b)
    if first.kind != second.kind:
        return False
    return first.index == second.index or {first.index, second.index} == {None, 0}


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them: that variable when set (GPU
    indices, GPU-... or MIG-... UUIDs); else ``nvidia-smi -L``'s list, where a GPU split into MIG instances
    counts as its instances (each a ``MIG-<UUID>``, what CUDA takes for one); else, in a container without
    ``nvidia-smi``, NVML's count, or torch's counted in a child process (this one starts no CUDA), unless no
    NVIDIA driver is there at all (:func:`no_nvidia_driver`: none, without a child)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is not None:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        if listed.returncode == 0:
            return gpus_from_listing(listed.stdout)
    return _gpus_without_smi()


def gpus_from_listing(text: str) -> list[str]:
    """The CUDA devices in ``nvidia-smi -L`` output: each GPU's index, or its MIG instances' UUIDs."""
    import re

    gpus: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        gpu = re.match(r"\s*GPU (\d+):", line)
        mig = re.search(r"\(UUID: (MIG-[^)]+)\)", line)
        if gpu:
            gpus.append((gpu.group(1), []))
        elif mig and gpus:
            gpus[-1][1].append(mig.group(1))
    return [device for index, migs in gpus for device in (migs or [index])]


def _gpus_without_smi() -> list[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001  (no NVML: ask torch, in a child, so this process starts no CUDA)
        pass
    if no_nvidia_driver():  # no GPU can be there: no child (it imports torch: a second or more per run)
        return []
    try:
        counted = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                                 capture_output=True, text=True, timeout=120)
        return [str(i) for i in range(int(counted.stdout.strip() or 0))] if counted.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []


def no_nvidia_driver() -> bool:
    """Linux with no NVIDIA driver loaded and no NVIDIA device node (``/proc/driver/nvidia``,
    ``/dev/nvidia0`` ...): no CUDA GPU can be used here. ``False`` where that cannot be told (another OS)."""
    if not sys.platform.startswith("linux"):
        return False
    return not os.path.exists("/proc/driver/nvidia") and not glob.glob("/dev/nvidia[0-9]*")


__all__ = ["Device", "cuda_index", "gpus_from_listing", "is_cuda", "no_nvidia_driver", "parse", "same",
           "visible_gpus"]
