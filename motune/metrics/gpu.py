"""What a GPU was doing while it was timed: identity, clocks, temperature, power, throttling, ECC,
memory and the other processes on it, from torch and NVML (nvidia-ml-py, ``pip install "motune[gpu]"``).

- :func:`gpu_identity`: name, UUID (what tells apart workers that each see
  their GPU as ``cuda:0``), compute capability, memory, and the CUDA, cuDNN
  and driver versions;
- :func:`gpu_state`: one reading (the identity plus SM / memory clocks,
  temperature, power, throttle reasons, uncorrected ECC errors, memory used,
  other processes);
- :class:`GpuSampler`: readings every ``interval_s`` (50 ms) in a thread for
  the length of a timing run, summarised as min / median / max per quantity
  and the union of the throttle reasons seen (the thread takes the GIL about
  20 times a second, a few microseconds each: visible only in the tail of a
  microsecond-scale model).

The NVML handle is found by UUID (torch >= 2.1 reports it; a MIG slice's
clocks are its parent's), else by PCI bus id. Trouble with NVML is recorded
under ``nvml_error`` and never raised: timing still counts. ``cuda`` (torch's
module) and ``nvml`` (``pynvml``) are injectable for tests.
"""

from __future__ import annotations

import os
import statistics
import threading
from typing import Any

from motune import devices


def _cuda(cuda: Any) -> Any:
    if cuda is None:
        import torch

        cuda = torch.cuda
    return cuda


def _index(device: str, cuda: Any) -> int:
    return devices.cuda_index(device, cuda)


def gpu_identity(device: str, *, cuda: Any = None) -> dict[str, Any]:
    """Name, UUID, capability, memory and versions of the CUDA device torch calls ``device``."""
    cuda = _cuda(cuda)
    index = _index(device, cuda)
    props = cuda.get_device_properties(index)
    info: dict[str, Any] = {"name": cuda.get_device_name(index), "index_visible": index,
                            "uuid": str(getattr(props, "uuid", "") or "") or None,
                            "total_memory_mb": round(getattr(props, "total_memory", 0) / 2**20, 1) or None,
                            "capability": f"{getattr(props, 'major', '?')}.{getattr(props, 'minor', '?')}"}
    try:
        import torch

        info["cuda_version"] = torch.version.cuda
        info["cudnn_version"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001  (a fake cuda module in tests)
        pass
    return info


def _nvml_handle(nvml: Any, props: Any) -> Any:
    """The NVML handle of the GPU torch describes by ``props``: by UUID (torch's index counts only visible
    devices, so the UUID, not the index, names the same GPU; a MIG slice's clocks and temperature are its
    parent GPU's), else by PCI bus id (a torch too old to report a UUID)."""
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        if uuid.startswith(("GPU-", "MIG-")):
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        try:
            return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        except Exception:  # noqa: BLE001
            mig = nvml.nvmlDeviceGetHandleByUUID(f"MIG-{uuid}")
            return nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    if getattr(props, "pci_bus_id", None) is not None:
        bus = f"{getattr(props, 'pci_domain_id', 0):08x}:{props.pci_bus_id:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
        return nvml.nvmlDeviceGetHandleByPciBusId(bus)
    raise LookupError("torch reports neither a UUID nor a PCI bus id for this device, so NVML cannot be matched")


def _reading(nvml: Any, handle: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sm_clock_mhz": int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "memory_clock_mhz": int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        "temperature_c": int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
    }
    optional = {
        "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        "throttle_reasons": lambda: _throttle_names(nvml, _throttle_mask(nvml, handle)),
        "ecc_uncorrected_volatile": lambda: int(nvml.nvmlDeviceGetTotalEccErrors(
            handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)),
        "memory_used_mb": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
        "other_processes": lambda: [{"pid": p.pid, "used_mb": (p.usedGpuMemory or 0) / 2**20}
                                    for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                                    if p.pid != os.getpid()],  # (a container's pid namespace may hide the match)
    }
    for key, read in optional.items():
        try:
            out[key] = read()
        except Exception:  # noqa: BLE001  (not supported on this GPU or driver: left out)
            pass
    return out


def _throttle_mask(nvml: Any, handle: Any) -> int:
    reader = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        nvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(reader(handle))


def _throttle_names(nvml: Any, mask: int) -> list[str]:
    """One name per reason bit set (NVML has two names for some bits: the first in sorted order is kept).
    ``GpuIdle`` is the GPU waiting for work (between synchronised calls), not a slowdown."""
    by_bit: dict[int, str] = {}
    for name in sorted(dir(nvml)):
        if name.startswith(("nvmlClocksThrottleReason", "nvmlClocksEventReason")) and not name.endswith(("All", "None")):
            bit = getattr(nvml, name)
            if isinstance(bit, int) and bit and mask & bit:
                by_bit.setdefault(bit, name.replace("nvmlClocksThrottleReason", "").replace("nvmlClocksEventReason", ""))
    return sorted(set(by_bit.values()))


def gpu_facts(device: str) -> dict[str, Any]:
    """:func:`gpu_state`, or why torch could not describe the device (a GPU model that is not torch's,
    with a torch built without CUDA): the timing still counts."""
    try:
        return gpu_state(device)
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"}


def gpu_state(device: str, *, cuda: Any = None, nvml: Any = None) -> dict[str, Any]:
    """One reading of the device: its identity, and through NVML its clocks, temperature, power, throttle
    reasons, ECC errors, memory used and the other processes on it."""
    cuda = _cuda(cuda)
    state = gpu_identity(device, cuda=cuda)
    props = cuda.get_device_properties(_index(device, cuda))
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            state["nvml_error"] = "nvidia-ml-py is not installed"
            return state
    try:
        nvml.nvmlInit()
        try:
            handle = _nvml_handle(nvml, props)
            state |= _reading(nvml, handle)
            try:
                state["driver_version"] = str(nvml.nvmlSystemGetDriverVersion())
            except Exception:  # noqa: BLE001
                pass
        finally:
            nvml.nvmlShutdown()
    except Exception as err:  # noqa: BLE001  (a driver without NVML, a permission problem: record it, keep timing)
        state["nvml_error"] = f"{type(err).__name__}: {err}"
    return state


class GpuSampler:
    """NVML readings every ``interval_s`` while a timing run lasts (a context manager); :meth:`summary`."""

    def __init__(self, device: str, *, interval_s: float = 0.05, cuda: Any = None, nvml: Any = None) -> None:
        self.device, self.interval_s = device, interval_s
        self._cuda, self._nvml = cuda, nvml
        self.readings: list[dict[str, Any]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        nvml = self._nvml
        try:
            cuda = _cuda(self._cuda)
            props = cuda.get_device_properties(_index(self.device, cuda))
            if nvml is None:
                import pynvml as nvml
            nvml.nvmlInit()
        except Exception as err:  # noqa: BLE001
            self.error = f"{type(err).__name__}: {err}"
            return self
        try:
            handle = _nvml_handle(nvml, props)
        except Exception as err:  # noqa: BLE001
            self.error = f"{type(err).__name__}: {err}"
            nvml.nvmlShutdown()
            return self

        def sample() -> None:
            try:
                while True:
                    self.readings.append(_reading(nvml, handle))
                    if self._stop.wait(self.interval_s):
                        return
            except Exception as err:  # noqa: BLE001
                self.error = f"{type(err).__name__}: {err}"
            finally:
                nvml.nvmlShutdown()

        self._thread = threading.Thread(target=sample, name="motune-gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        """Per quantity min / median / max over the run, the throttle reasons seen, the most other processes."""
        if not self.readings:
            return {"samples": 0, "nvml_error": self.error or "no reading"}
        out: dict[str, Any] = {"samples": len(self.readings), "interval_s": self.interval_s}
        for key in ("sm_clock_mhz", "memory_clock_mhz", "temperature_c", "power_w", "memory_used_mb"):
            values = [r[key] for r in self.readings if key in r]
            if values:
                out[key] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
        out["throttle_reasons"] = sorted({n for r in self.readings for n in r.get("throttle_reasons", [])})
        ecc = [r["ecc_uncorrected_volatile"] for r in self.readings if "ecc_uncorrected_volatile" in r]
        if ecc:
            out["ecc_uncorrected_new"] = max(ecc) - min(ecc)
        others = [r.get("other_processes", []) for r in self.readings]
        out["other_processes_max"] = max(others, key=len) if others else []
        if self.error:
            out["nvml_error"] = self.error
        return out
