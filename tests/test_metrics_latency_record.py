"""What a latency record says and what keeps it honest, on the CPU: the ten points of the latency review
(issue 12). The CUDA halves (events, device time against torch.utils.benchmark, TF32 on a GPU, two GPUs'
UUIDs) are in tests/gpu/test_gpu.py; the fakes of torch.cuda and NVML are in test_metrics.py and
test_metrics_latency.py; the per-device timing locks in test_run_pool.py."""

import gc
import time

import numpy as np
import pytest

import motune as mt
from conftest import FAST_LATENCY, make_study
from motune.errors import MetricError, SpecError
from motune.metrics import measure
from motune.metrics.latency import WINDOWS
from motune.metrics.settings import StudySettings, apply, torch_settings
from motune.metrics.timing import CpuTimer, throughput, time_calls

torch = pytest.importorskip("torch")

from motune.models.torch import TorchClassifier  # noqa: E402

FAST = {"warmup": 1, "warmup_s": 0.0, "min_count": 10, "min_time_s": 0.0, "batch_size": 16, "throughput_s": 0.05}


def mlp(task, **kwargs):
    torch.manual_seed(0)
    width = task.numeric().X_train.shape[1]
    module = torch.nn.Sequential(torch.nn.Linear(width, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    return TorchClassifier.for_task(module, task, **kwargs)


# 1. the timed window is stated, and end-to-end includes the copies

@pytest.mark.parametrize("mode", ["device", "end_to_end"])
def test_each_mode_says_what_it_times_and_end_to_end_copies_inside_every_call(task, mode):
    model = mlp(task)
    copies, forwards = [], []
    to_device = model.to_device
    model.to_device = lambda x, **kw: copies.append(1) or to_device(x, **kw)
    model.module.register_forward_hook(lambda *_: forwards.append(1))
    m = measure(model, task, ["latency_p50_ms"], options={"latency": {**FAST, "mode": mode, "n_inputs": 8}})
    d = m.details["latency"]
    assert d["mode"] == mode and d["window"] == WINDOWS[mode] and d["timed"] == "forward"
    if mode == "device":  # inputs placed once, before timing: 8 rows and the batch
        assert len(copies) == 8 + 1 and len(forwards) > 20
    else:  # every timed call copies its input to the device itself
        assert len(copies) == len(forwards) > 20


def test_an_unknown_mode_is_refused(task):
    with pytest.raises(SpecError, match="mode must be one of"):
        measure(mlp(task), task, ["latency_p50_ms"], options={"latency": {**FAST, "mode": "wall"}})


# 3 and 10. a GPU model that is not torch's: timed with its own synchronisation, threads fixed as asked

class GpuThing:
    """A model that says it runs on a GPU and is not a torch module (TensorRT, CuPy, ONNX Runtime ...)."""

    device = "cuda:0"

    def __init__(self):
        self.synced = 0

    def predict(self, X):
        time.sleep(0.0005)
        return np.zeros(len(X), dtype=int)


class SyncedGpuThing(GpuThing):
    def synchronize(self):
        self.synced += 1


def test_a_non_torch_gpu_model_without_synchronize_is_refused(task):
    with pytest.raises(MetricError, match="synchronize"):
        measure(GpuThing(), task, ["latency_p50_ms"], options={"latency": FAST})


def test_a_non_torch_gpu_model_is_timed_with_its_synchronize_and_the_threads_asked(task):
    model = SyncedGpuThing()
    before = torch.get_num_threads()
    m = measure(model, task, ["latency_p50_ms"], options={"latency": {**FAST, "threads": 2}})
    d = m.details["latency"]
    assert d["method"] == "perf_counter_ns+synchronize" and d["device"] == "cuda:0"
    assert model.synced >= 2 * (d["batch_1"]["count"] + d["batch"]["count"])  # around every timed call
    assert d["threads_fixed"] == 2 and d["threads"]["torch"] == 2  # honoured and recorded on a GPU device too
    assert torch.get_num_threads() == before
    assert d["gpu"] is not None and "before" in d["gpu"]  # what torch could say of the device (here: no CUDA)


# 6. warm-up by count and by time; no garbage collection inside a sample

def test_warm_up_lasts_until_both_its_count_and_its_time():
    stats = time_calls(lambda: None, timer=CpuTimer(), batch_size=1, warmup=2, warmup_s=0.05, min_count=5,
                       min_time_s=0.0)
    assert stats.warmup > 2 and stats.warmup_s >= 0.05
    slow = time_calls(lambda: time.sleep(0.002), timer=CpuTimer(), batch_size=1, warmup=10, warmup_s=0.0,
                      min_count=5, min_time_s=0.0)
    assert slow.warmup == 10


def test_the_garbage_collector_is_off_during_timed_calls_and_restored_after():
    seen = []
    stats = time_calls(lambda: seen.append(gc.isenabled()), timer=CpuTimer(), batch_size=1, warmup=3,
                       min_count=20, min_time_s=0.0)
    assert seen[:3] == [True] * 3 and seen[3:] == [False] * 20 and stats.gc_disabled
    assert gc.isenabled()
    gc.disable()  # a caller that had it off keeps it off
    try:
        time_calls(lambda: None, timer=CpuTimer(), batch_size=1, warmup=0, min_count=3, min_time_s=0.0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_bad_timing_options_are_refused():
    with pytest.raises(SpecError, match="min_count >= 1"):
        time_calls(lambda: None, timer=CpuTimer(), batch_size=1, min_count=0)
    with pytest.raises(SpecError, match="at least one call"):
        time_calls([], timer=CpuTimer(), batch_size=1)


# 7. tails with enough samples and intervals; throughput back to back

class Sleepy:
    def predict(self, X):
        time.sleep(0.001)
        return np.zeros(len(X), dtype=int)


def test_a_p99_from_too_few_samples_is_refused_with_the_reason(task):
    with pytest.raises(MetricError, match=r"latency_p99_ms needs at least 368 timed calls .* raise max_time_s"):
        measure(Sleepy(), task, ["latency_p99_ms"], options={"latency": {**FAST, "max_time_s": 0.05}})


def test_a_p99_asked_is_extended_to_the_samples_its_interval_needs(task):
    m = measure(mlp(task), task, ["latency_p99_ms"], options={"latency": {**FAST, "min_count": 20}})
    d = m.details["latency"]
    one = d["batch_1"]
    assert d["count_asked"] == 368 and one["count"] >= 368 and d["batch"]["count"] >= 20
    for q in ("p50", "p95", "p99"):  # each percentile with its order-statistic interval, inside the samples
        assert one[f"{q}_ci_low_ms"] <= one[f"{q}_ms"] <= one[f"{q}_ci_high_ms"]
        assert one[f"{q}_ci_confidence"] >= 0.95
    assert one["p99_ci_high_ms"] <= one["max_ms"]
    not_asked = measure(mlp(task), task, ["latency_p50_ms"], options={"latency": FAST}).details["latency"]
    assert not_asked["count_asked"] == 10  # only a p95 / p99 objective pays for the longer run


class CountingTimer(CpuTimer):
    def __init__(self):
        super().__init__()
        self.syncs = 0

    def synchronize(self):
        self.syncs += 1


def test_throughput_runs_calls_back_to_back_and_synchronises_once_at_the_end():
    timer, calls = CountingTimer(), []
    flow = throughput(lambda: calls.append(time.sleep(0.001)), timer=timer, rows=16, min_time_s=0.05, min_count=10)
    assert timer.syncs == 2  # after the untimed first call, and once after the timed ones
    assert flow["calls"] == len(calls) - 1 >= 10
    assert flow["throughput_per_s"] == pytest.approx(16 * flow["calls"] / flow["seconds"])
    assert flow["throughput_per_s"] <= 16 / 0.001  # every call sleeps 1 ms


def test_no_throughput_run_when_not_asked_for(task):
    d = measure(mlp(task), task, ["latency_p50_ms"], options={"latency": {**FAST, "throughput_s": 0}})
    assert d.details["latency"]["throughput"] is None and np.isnan(d.values["throughput_per_s"])  # not estimated


def test_a_batch_p95_asked_extends_the_batch_run_and_tails_not_asked_are_left_out(task):
    m = measure(mlp(task), task, ["batch_latency_p95_ms"], options={"latency": {**FAST, "min_count": 10}})
    d = m.details["latency"]
    assert d["batch_count_asked"] == 72 and d["batch"]["count"] >= 72 and m.values["batch_latency_p95_ms"] > 0
    assert d["batch"]["p95_ci_confidence"] >= 0.95
    # the batch-1 run kept its 10 calls: p50 (6 needed) is read, p90 (36), p95 (72) and p99 (368) are not
    assert m.values["latency_p50_ms"] > 0 and set(d["not_computed"]) == {"latency_p90_ms", "latency_p95_ms",
                                                                          "latency_p99_ms"}
    assert all(np.isnan(m.values[n]) for n in d["not_computed"])


def test_overlapping_timing_runs_leave_the_garbage_collector_as_they_found_it():
    import threading

    started = threading.Barrier(2)

    def run(delay):
        started.wait()
        time.sleep(delay)
        time_calls(lambda: time.sleep(0.001), timer=CpuTimer(), batch_size=1, warmup=0, min_count=40,
                   min_time_s=0.0)

    threads = [threading.Thread(target=run, args=(d,)) for d in (0.0, 0.01)]  # the second starts inside the first
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gc.isenabled()


class SettingsChanger:
    """A model whose prediction changes torch's process-wide settings (as another thread's trial would)."""

    def __init__(self):
        self.changed_to = not torch.backends.cudnn.benchmark  # every call sets the same other value

    def predict(self, X):
        torch.backends.cudnn.benchmark = self.changed_to
        return np.zeros(len(X), dtype=int)


def test_a_run_during_which_torch_settings_changed_is_flagged(task, fresh_settings):
    d = measure(SettingsChanger(), task, ["latency_p50_ms"], options={"latency": FAST}).details["latency"]
    assert d["noisy"] and any("torch settings changed while timing: cudnn_benchmark" in f for f in d["flags"])


def test_settings_are_taken_right_after_torch_is_imported_when_the_run_began_without_it(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "late_torch.py"
    script.write_text(
        "import sys\n"
        "from motune.metrics.settings import StudySettings, torch_settings\n"
        "assert 'torch' not in sys.modules\n"
        "pin = StudySettings()\n"
        "with pin.pinned():  # the first trial imports torch and changes its settings\n"
        "    import torch\n"
        "    torch.set_float32_matmul_precision('medium'); torch.backends.cudnn.benchmark = True\n"
        "assert pin.settings['float32_matmul_precision'] == 'highest' and not pin.settings['cudnn_benchmark']\n"
        "assert torch_settings() == pin.settings\n"
        "print('ok')\n")
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0 and ran.stdout.strip() == "ok", ran.stderr


# 8. what moves the number is recorded, and one trial cannot change the next one's settings

def test_the_record_states_mode_count_intervals_settings_dtype_shapes_versions_and_gc(task):
    width = task.numeric().X_train.shape[1]
    d = measure(mlp(task), task, ["latency_p95_ms"], options={"latency": FAST}).details["latency"]
    assert d["mode"] == "device" and d["batch_1"]["count"] >= 72 and d["gc_disabled"] is True
    assert d["dtype"] == "torch.float32" and d["autocast"] is None
    assert d["inputs"]["shapes_batch_1"] == {"input": [1, width]} and d["inputs"]["rows"] == 32
    settings = d["torch_settings"]
    assert settings["torch"] == torch.__version__ and settings["float32_matmul_precision"] == "highest"
    assert {"cudnn_benchmark", "cudnn_deterministic", "cuda_matmul_allow_tf32"} <= set(settings)
    assert d["versions"]["torch"] == torch.__version__
    assert d["versions"]["numpy"] == np.__version__ and d["versions"]["python"]
    assert d["threads"]["torch"] == 1 and d["threads_fixed"] == 1 and len(d["load_average_before"]) == 3


@pytest.fixture
def fresh_settings():
    before = torch_settings()
    yield before
    apply(before)


def test_settings_a_trial_changes_are_put_back_with_either_torch_api(fresh_settings):
    pin = StudySettings()
    with pin.pinned():
        torch.set_float32_matmul_precision("medium")
        torch.backends.cudnn.benchmark = True
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9: the newer API, mixed in
            torch.backends.cuda.matmul.fp32_precision = "tf32"
    assert torch_settings() == fresh_settings
    with pin.pinned():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = False
    assert torch_settings() == fresh_settings


def _tf32_space(trial):
    trial.suggest_int("width", 4, 8)


def _tf32_train(params, task, ctx):
    if ctx.trial_number == 0:  # what a Trainer with tf32=True does to the process
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    return mlp(task)


def test_a_trial_that_switches_tf32_on_does_not_change_the_next_trials_timing(task, sqlite_url, fresh_settings):
    study = mt.Study(name="tf32", task=task, space=_tf32_space, train=_tf32_train, storage=sqlite_url, seed=0,
                     objectives=[mt.maximize("accuracy"), mt.minimize("latency_p50_ms")],
                     metric_options={"latency": FAST}, keep_models="none")
    result = study.optimize(n_trials=2, show_progress=False)
    first, second = result.records()
    assert first.attrs["latency"]["torch_settings"]["float32_matmul_precision"] == "high"  # its own, recorded
    assert first.attrs["latency"]["torch_settings"]["cudnn_benchmark"] is True
    assert second.attrs["latency"]["torch_settings"] == fresh_settings  # the study's, not trial 0's
    assert torch_settings() == fresh_settings  # and the process is left as the run found it


# 9. the inputs: rows drawn by a stated policy, not one row repeated

def test_calls_cycle_through_the_drawn_rows(task):
    model = mlp(task)
    seen = set()
    model.module.register_forward_hook(
        lambda mod, args, out: seen.add(args[0].numpy().tobytes()) if args[0].shape[0] == 1 else None)
    d = measure(model, task, ["latency_p50_ms"], options={"latency": {**FAST, "n_inputs": 8, "seed": 3}})
    assert len(seen) == 8 and d.details["latency"]["inputs"]["rows"] == 8
    assert "8 rows of the valid split drawn with seed 3" in d.details["latency"]["inputs"]["policy"]
    everything = measure(mlp(task), task, ["latency_p50_ms"], options={"latency": {**FAST, "n_inputs": 10_000}})
    assert everything.details["latency"]["inputs"]["rows"] == len(task.X_valid)  # all rows, when fewer
    with pytest.raises(SpecError, match="n_inputs"):
        measure(mlp(task), task, ["latency_p50_ms"], options={"latency": {**FAST, "n_inputs": 0}})


# autocast beside whole-module half precision

def test_autocast_runs_the_forward_pass_in_bfloat16_and_is_recorded(task):
    model = mlp(task, autocast="bfloat16")
    with torch.inference_mode():
        assert model.forward(model.inputs(task.X_valid.iloc[:4])).dtype == torch.bfloat16
    assert model.dtype == torch.float32  # the weights stay in float32
    proba = model.predict_proba(task.X_valid)
    assert proba.dtype == np.float32 and np.allclose(proba.sum(axis=1), 1, atol=1e-3)
    d = measure(model, task, ["latency_p50_ms"], options={"latency": FAST}).details["latency"]
    assert d["autocast"] == "bfloat16" and d["dtype"] == "torch.float32"
    with pytest.raises(SpecError, match="autocast"):
        mlp(task, autocast="float8")


# ---------------------------------------------------------------- the host's speed and a quiet host

def _busy(n):
    import subprocess
    import sys

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_every_run_times_a_reference_kernel_beside_the_calls_and_states_latency_in_its_units(task):
    from motune.metrics.timing import Reference

    stats = time_calls(lambda: sum(range(3000)), timer=CpuTimer(), batch_size=1, warmup=3, min_count=40,
                       min_time_s=0.0, reference=Reference())
    ref = stats.reference
    assert ref["count"] == stats.count and ref["units_per_call"] >= 1 and ref["unit_p50_ms"] > 0
    assert stats.in_units("p50") == pytest.approx(stats.p50_ms / ref["unit_p50_ms"])
    assert stats.in_units("p95") == pytest.approx(stats.p95_ms / ref["unit_p95_ms"])
    # one reference call lasts about as long as one call: the kernel is repeated to match it
    assert 0.2 < ref["units_per_call"] * ref["unit_p50_ms"] / stats.p50_ms < 5
    from conftest import train

    model = train({"C": 1.0, "fit_intercept": True}, task, None)
    measured = mt.metrics.measure(model, task, ["latency_p50_ms"], options=FAST_LATENCY)
    speed = measured.details["latency"]["speed"]
    assert speed["normalised"]["latency_p50_ms"] == pytest.approx(
        measured.values["latency_p50_ms"] / speed["runs"]["batch_1"]["unit_p50_ms"])
    assert "kernel units" in speed["what"] and speed["reference_ms"] > 0
    off = mt.metrics.measure(model, task, ["latency_p50_ms"],
                             options={"latency": {**FAST_LATENCY["latency"], "reference": False}})
    assert off.details["latency"]["speed"] is None and off.details["latency"]["batch_1"]["reference"] is None


def test_busy_cpus_sees_processes_beside_it_and_waiting_for_quiet_gives_up_when_told():
    from motune.metrics.timing import busy_cpus, wait_for_quiet

    busy = _busy(2)
    try:
        seen = busy_cpus(0.5)
        assert seen is not None and seen >= 1.5  # two spinning processes
        began = time.perf_counter()
        waited = wait_for_quiet(0.5, 1.5, interval_s=0.25)
        assert not waited["quiet"] and waited["busy_cpus"] > 0.5 and 1.5 <= waited["waited_s"] < 4
        assert time.perf_counter() - began < 4
    finally:
        for p in busy:
            p.kill()


def test_confirmation_waits_for_a_quiet_host_retimes_a_noisy_run_and_records_what_it_saw(task, tmp_path):
    url = f"sqlite:///{tmp_path / 'quiet.db'}"
    study = make_study(task, url, objectives=[mt.maximize("accuracy"), mt.minimize("latency_p95_ms")],
                       metric_options={"latency": {**FAST_LATENCY["latency"], "max_ci_width": 1e-9}})
    result = study.optimize(n_trials=3, show_progress=False)
    number = result.front().trial.iloc[0]
    busy = _busy(2)
    try:
        confirmed = mt.confirm(result, n_boot=10, latency_min_count=20,
                               latency_min_time_s=0.05, quiet_cpus=0.5, quiet_wait_s=1.0, retime_s=1.0)
    finally:
        for p in busy:
            p.kill()
    c = confirmed.record(int(number)).confirmation
    waited = c["quiet"]
    assert waited["quiet_cpus"] == 0.5 and waited["quiet_wait_s"] == 1.0 and waited["retime_s"] == 1.0
    assert not waited["quiet"] and waited["busy_cpus"] > 0.5  # two spinning processes never let it get quiet
    assert len(waited["attempts"]) >= 2 and waited["retimed"] == len(waited["attempts"]) - 1  # flagged: re-timed
    assert all(a["noisy"] for a in waited["attempts"]) and all(a["reference_ms"] > 0 for a in waited["attempts"])
    kept = c["latency"]["batch_1"]
    narrowest = min(a["p50_interval_share"] for a in waited["attempts"])
    assert (kept["p50_ci_high_ms"] - kept["p50_ci_low_ms"]) / kept["p50_ms"] == pytest.approx(narrowest)
    assert c["latency_flagged"] and any("never got quiet" in f for f in c["latency"]["flags"])
    with pytest.raises(mt.SelectionError, match="never got quiet"):
        mt.decide(mt.select(confirmed, mt.rules.lexicographic(["latency_p95_ms"])), rationale="fast", decided_by="t")
    with pytest.raises(mt.SpecError, match="quiet_wait_s must be a number >= 0"):
        mt.confirm(result, quiet_wait_s=-1)


def test_tf32_overrides_and_a_forward_patched_by_accelerate_are_recorded(task, monkeypatch):
    monkeypatch.setenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1")
    model = mlp(task)
    details = measure(model, task, ["latency_p50_ms"], options={"latency": FAST}).details["latency"]
    assert details["env_overrides"] == {"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"} and details["autocast"] is None
    model.module._original_forward = model.module.forward  # what accelerate leaves after a bf16 Trainer run
    details = measure(model, task, ["latency_p50_ms"], options={"latency": FAST}).details["latency"]
    assert details["autocast"].startswith("accelerate mixed precision")


def test_running_out_of_gpu_memory_in_the_attack_is_said_as_such(task):
    model = mlp(task)

    def oom(x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    model.module.forward = oom
    with pytest.raises(MetricError, match="ran out of GPU memory at batch_size"):
        measure(model, task, ["adversarial_accuracy"], options={"adversarial": {"eps": 0.1}})
