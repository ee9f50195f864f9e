"""Latency: order-statistic CI of the median, torch forward timing, fixed threads, the GPU
facts recorded, and serialisation of timing runs across processes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from motune.metrics import measure
from motune.metrics.latency import fixed_threads, gpu_state, median_ci, time_calls, CpuTimer

torch = pytest.importorskip("torch")

from motune.models.torch import TorchClassifier  # noqa: E402

FAST = {"warmup": 2, "min_count": 20, "min_time_s": 0.0, "batch_size": 16}


def test_median_ci_is_the_binomial_order_statistic_interval():
    x = np.arange(1, 31, dtype=float)  # n = 30: ranks 10 and 21 (P(B <= 9) = 0.021 <= 0.025 < P(B <= 10))
    assert median_ci(np.random.default_rng(0).permutation(x))[:2] == (10.0, 21.0)
    assert median_ci([3.0, 1.0, 2.0])[:2] == (1.0, 3.0)  # too few samples for 95 %: the range
    rng = np.random.default_rng(1)  # coverage: the true median of an exponential is ln 2
    hits = sum(lo <= np.log(2) <= hi for lo, hi, _ in (median_ci(rng.exponential(size=50)) for _ in range(400)))
    assert 0.92 <= hits / 400 <= 0.995


def test_time_calls_reports_the_median_interval():
    stats = time_calls(lambda: sum(range(200)), timer=CpuTimer(), batch_size=1, warmup=3, min_count=40,
                       min_time_s=0.0)
    assert stats.count == 40 and stats.p50_ci_low_ms <= stats.p50_ms <= stats.p50_ci_high_ms
    assert stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms


def test_a_torch_module_is_timed_on_fixed_inputs_in_eval_mode_with_fixed_threads(task):
    torch.manual_seed(0)
    width = task.numeric().X_train.shape[1]
    module = torch.nn.Sequential(torch.nn.Linear(width, 64), torch.nn.Dropout(0.5), torch.nn.Linear(64, 2))
    seen = []
    module.register_forward_hook(lambda mod, args, out: seen.append((mod.training, torch.is_inference_mode_enabled(),
                                                                      tuple(args[0].shape))))
    module.train()
    module[1].eval()  # a submodule kept in eval mode on purpose stays so
    before = 3 if torch.get_num_threads() != 3 else 2  # a count the run must change and restore
    torch.set_num_threads(before)
    m = measure(TorchClassifier.for_task(module, task), task, ["latency_p95_ms"], options={"latency": {**FAST, "threads": 1}})
    d = m.details["latency"]
    assert d["timed"] == "forward" and d["method"] == "perf_counter_ns" and d["threads_fixed"] == 1
    assert d["threads"]["torch"] == 1  # recorded while fixed
    assert torch.get_num_threads() == before and module.training and not module[1].training  # all restored
    assert {s for s in seen} == {(False, True, (1, width)), (False, True, (16, width))}
    assert d["batch_1"]["count"] >= 20 and d["batch"]["batch_size"] == 16
    for name in ("latency_p50_ms", "latency_p90_ms", "latency_p95_ms", "batch_latency_p50_ms"):
        assert m.values[name] > 0
    # not asked for, and too few samples for their intervals: left out, with the reason
    assert np.isnan(m.values["latency_p99_ms"]) and np.isnan(m.values["batch_latency_p95_ms"])
    assert "needs at least 368 timed calls" in d["not_computed"]["latency_p99_ms"]
    flow = d["throughput"]
    assert m.values["throughput_per_s"] == pytest.approx(16 * flow["calls"] / flow["seconds"])


def test_fixed_threads_restores_the_count():
    before = 3 if torch.get_num_threads() != 3 else 2
    torch.set_num_threads(before)
    with fixed_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with fixed_threads(None) as count:
        assert count == before


class FakeProps:
    uuid = "5f1c0d2e-aaaa-bbbb-cccc-000000000001"


class FakeTorchCuda:
    def current_device(self):
        return 0

    def get_device_name(self, index):
        return f"Fake GPU {index}"

    def get_device_properties(self, index):
        return FakeProps()


class FakeNvml:
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC = 1, 0
    nvmlClocksEventReasonGpuIdle, nvmlClocksEventReasonSwPowerCap, nvmlClocksEventReasonHwSlowdown = 1, 4, 8
    nvmlClocksEventReasonNone = 0
    nvmlClocksEventReasonApplicationsClocksSetting = nvmlClocksEventReasonUserDefinedClocks = 2  # one bit, two names

    def __init__(self, fail=False):
        self.fail, self.calls, self.reads = fail, [], 0

    def nvmlInit(self):
        self.calls.append("init")
        if self.fail:
            raise RuntimeError("NVML driver not loaded")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.calls.append(("uuid", uuid))
        return "handle"

    def nvmlDeviceGetClockInfo(self, handle, kind):
        self.reads += 1
        return {1: 1980 - (self.reads % 3) * 10, 2: 2619}[kind]

    def nvmlDeviceGetTemperature(self, handle, kind):
        return 41

    def nvmlDeviceGetPowerUsage(self, handle):
        return 250_500  # mW

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return 2 | 4 | 8

    def nvmlDeviceGetTotalEccErrors(self, handle, kind, counter):
        return 0

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Mem", (), {"used": 3 * 2**30})()

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [type("Proc", (), {"pid": 4242, "usedGpuMemory": 2**30})(),
                type("Proc", (), {"pid": os.getpid(), "usedGpuMemory": 2**31})()]  # this process: not "other"

    def nvmlSystemGetDriverVersion(self):
        return "580.65"


def test_gpu_state_records_identity_clocks_power_throttling_ecc_and_other_processes_by_uuid():
    nvml = FakeNvml()
    state = gpu_state("cuda:2", cuda=FakeTorchCuda(), nvml=nvml)
    assert state["name"] == "Fake GPU 2" and state["index_visible"] == 2
    assert state["uuid"] == FakeProps.uuid  # what tells apart workers that each see their GPU as cuda:0
    assert state["memory_clock_mhz"] == 2619 and state["temperature_c"] == 41 and state["power_w"] == 250.5
    assert state["throttle_reasons"] == ["ApplicationsClocksSetting", "HwSlowdown", "SwPowerCap"]
    assert state["ecc_uncorrected_volatile"] == 0
    assert state["memory_used_mb"] == 3072 and state["other_processes"] == [{"pid": 4242, "used_mb": 1024}]
    assert state["driver_version"] == "580.65"
    assert ("uuid", "GPU-" + FakeProps.uuid) in nvml.calls and nvml.calls[-1] == "shutdown"
    failing = gpu_state("cuda", cuda=FakeTorchCuda(), nvml=FakeNvml(fail=True))
    assert failing["name"] == "Fake GPU 0" and "NVML driver not loaded" in failing["nvml_error"]


class OldProps:  # a torch that reports no UUID: NVML is matched by PCI bus id
    pci_domain_id, pci_bus_id, pci_device_id = 0, 0x41, 0


class OldTorchCuda(FakeTorchCuda):
    def get_device_properties(self, index):
        return OldProps()


class PciNvml(FakeNvml):
    def nvmlDeviceGetHandleByPciBusId(self, bus):
        self.calls.append(("pci", bus))
        return "handle"


def test_gpu_state_without_a_uuid_from_torch_finds_the_gpu_by_pci_bus_id():
    nvml = PciNvml()
    state = gpu_state("cuda:0", cuda=OldTorchCuda(), nvml=nvml)
    assert ("pci", "00000000:41:00.0") in nvml.calls and state["uuid"] is None and state["temperature_c"] == 41


def test_the_gpu_is_sampled_during_the_run_not_only_before_and_after():
    from motune.metrics.gpu import GpuSampler

    nvml = FakeNvml()
    with GpuSampler("cuda:0", interval_s=0.01, cuda=FakeTorchCuda(), nvml=nvml) as sampler:
        time.sleep(0.15)
    summary = sampler.summary()
    assert summary["samples"] >= 5 and summary["sm_clock_mhz"]["min"] == 1960 and summary["sm_clock_mhz"]["max"] == 1980
    assert summary["power_w"]["median"] == 250.5
    assert summary["throttle_reasons"] == ["ApplicationsClocksSetting", "HwSlowdown", "SwPowerCap"]
    assert summary["ecc_uncorrected_new"] == 0 and summary["other_processes_max"][0]["pid"] == 4242
    assert nvml.calls[-1] == "shutdown"
    broken = GpuSampler("cuda:0", cuda=FakeTorchCuda(), nvml=FakeNvml(fail=True))
    with broken:
        pass
    assert broken.summary()["samples"] == 0 and "NVML driver not loaded" in broken.summary()["nvml_error"]


def test_timing_runs_are_serialised_across_processes(tmp_path):
    env = {**os.environ, "MOTUNE_LOCK_DIR": str(tmp_path / "locks")}
    worker = Path(__file__).with_name("latency_worker.py")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(worker), str(worker.parent), str(go), str(tmp_path / f"ready{i}")],
                              stdout=subprocess.PIPE, env=env, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "a worker did not start"
        time.sleep(0.02)
    go.touch()
    runs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    a, b = sorted(runs, key=lambda r: r["first"])
    assert a["last"] < b["first"], "the two processes' timed calls interleaved"
    assert b["lock_wait_s"] > 0.2  # the later one waited for the whole of the earlier run; not in its samples


def test_the_device_option_must_name_where_the_model_is(task):
    module = torch.nn.Linear(task.numeric().X_train.shape[1], 2)
    with pytest.raises(ValueError, match="the model is on 'cpu'"):
        measure(TorchClassifier.for_task(module, task), task, ["latency_p50_ms"],
                options={"latency": {**FAST, "device": "cuda:0"}})
    m = measure(TorchClassifier.for_task(module, task), task, ["latency_p50_ms"],
                options={"latency": {**FAST, "device": torch.device("cpu")}})
    assert m.details["latency"]["device"] == "cpu"


def test_median_ci_reports_its_coverage():
    assert median_ci(np.arange(30.0))[2] == pytest.approx(1 - 2 * 0.021387, abs=1e-4)
    low, high, coverage = median_ci([5.0, 1.0, 3.0])
    assert (low, high) == (1.0, 5.0) and coverage == pytest.approx(0.75)


class FakeMigNvml(FakeNvml):
    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.calls.append(("uuid", uuid))
        if uuid.startswith("GPU-"):
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return "mig-slice"

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        assert handle == "mig-slice"
        return "parent"

    def nvmlDeviceGetTemperature(self, handle, kind):
        assert handle == "parent"  # a MIG slice's temperature is its GPU's
        return 55


def test_gpu_state_under_mig_reads_the_parent_gpu():
    nvml = FakeMigNvml()
    state = gpu_state("cuda:0", cuda=FakeTorchCuda(), nvml=nvml)
    assert state["temperature_c"] == 55 and ("uuid", "MIG-" + FakeProps.uuid) in nvml.calls


def test_quantile_intervals_use_the_ranks_the_binomial_gives_and_say_their_coverage():
    from scipy.stats import binom

    from motune.metrics.latency import quantile_ci

    for q in (0.5, 0.95, 0.99):
        for n in (5, 30, 71, 72, 367, 368, 1000):
            low, high, coverage = quantile_ci(np.arange(1, n + 1), q)
            lows = [r for r in range(1, n + 1) if binom.cdf(r - 1, n, q) <= 0.025] or [1]
            highs = [r for r in range(1, n + 1) if binom.sf(r - 1, n, q) <= 0.025] or [n]
            assert (low, high) == (max(lows), min(highs)), (q, n)
            assert coverage == pytest.approx(binom.cdf(high - 1, n, q) - binom.cdf(low - 1, n, q))
    assert quantile_ci(np.arange(1, 400), 0.99)[2] >= 0.95  # confirmation's 400 calls: a p99 interval inside
    assert quantile_ci(np.arange(1, 200), 0.99)[2] < 0.9  # 200 would not be
    rng = np.random.default_rng(0)  # and the stated coverage is what happens
    hits = [lo <= np.log(100) <= hi for lo, hi, _ in (quantile_ci(rng.exponential(size=100), 0.99) for _ in range(400))]
    assert 0.55 < np.mean(hits) < 0.7  # stated about 0.63 at n = 100
