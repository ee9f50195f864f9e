"""GPU checks for a CUDA machine (marked ``gpu``; skipped cleanly without CUDA).

Run on a GPU box:  pytest tests/gpu -m gpu   (set MOTUNE_GPU_RESULTS=benchmarks/results/gpu.json to keep the
numbers). What they check: motune's CUDA-event timing against ``torch.utils.benchmark`` on the same model
and input, half precision, NVML facts in the latency record, and two workers on two GPUs timing under their
own per-device locks (GPU UUIDs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import motune as mt  # noqa: E402
from conftest import make_frame  # noqa: E402
from motune.models.torch import TorchClassifier  # noqa: E402

pytestmark = pytest.mark.gpu
HERE = Path(__file__).parent
RESULTS: dict = {}


def _task():
    return mt.Task.from_frame(make_frame(4000), label="y", sensitive="group", seed=0)


def _mlp(task, width=1024, layers=4):
    n = task.numeric().X_train.shape[1]
    blocks = [torch.nn.Linear(n, width), torch.nn.ReLU()]
    for _ in range(layers - 1):
        blocks += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*blocks, torch.nn.Linear(width, 2)).cuda().eval()


def teardown_module(module):
    path = os.environ.get("MOTUNE_GPU_RESULTS")
    if path and RESULTS:
        RESULTS["device"] = torch.cuda.get_device_name(0)
        RESULTS["torch"] = torch.__version__
        Path(path).write_text(json.dumps(RESULTS, indent=2) + "\n")


def test_cuda_event_timing_agrees_with_torch_utils_benchmark():
    from torch.utils import benchmark

    task = _task()
    model = TorchClassifier.for_task(_mlp(task), task)
    latency = mt.metrics.measure(model, task, ["latency_p50_ms"],
                                 options={"latency": {"min_count": 300, "min_time_s": 2.0, "batch_size": 256}})
    details = latency.details["latency"]
    assert details["method"] == "cuda_event" and details["device"].startswith("cuda")
    inputs = model.inputs(task.X_valid.iloc[:1])
    with torch.inference_mode():
        timer = benchmark.Timer(stmt="model.forward(inputs); torch.cuda.synchronize()",
                                globals={"model": model, "inputs": inputs, "torch": torch})
        reference_ms = timer.blocked_autorange(min_run_time=2.0).median * 1000
    ours_ms = latency.values["latency_p50_ms"]
    RESULTS["mlp_batch1_p50_ms"] = {"motune_cuda_events": ours_ms, "torch_utils_benchmark": reference_ms}
    # events time the device work; blocked_autorange times host launch plus a synchronisation: close, not equal
    assert abs(ours_ms - reference_ms) / reference_ms < 0.25, (ours_ms, reference_ms)


def test_half_precision_serves_the_same_predictions():
    from motune.models.compress import cast

    task = _task()
    module = _mlp(task, width=256, layers=2)
    full = TorchClassifier.for_task(module, task)
    half = TorchClassifier.for_task(cast(_copy(module), "float16"), task)
    agree = (full.predict(task.X_valid) == half.predict(task.X_valid)).mean()
    times = {name: mt.metrics.measure(m, task, ["latency_p50_ms"], options={"latency": {"min_count": 200}}).values
             for name, m in (("float32", full), ("float16", half))}
    RESULTS["half_precision"] = {"agreement": float(agree), **{k: v["latency_p50_ms"] for k, v in times.items()}}
    assert agree > 0.98


def _copy(module):
    import copy

    return copy.deepcopy(module)


def test_nvml_facts_are_recorded():
    pytest.importorskip("pynvml")
    task = _task()
    details = mt.metrics.measure(TorchClassifier.for_task(_mlp(task, 128, 2), task), task, ["latency_p50_ms"]
                                 ).details["latency"]
    before = details["gpu"]["before"]
    assert "nvml_error" not in before, before
    assert before["sm_clock_mhz"] > 0 and before["temperature_c"] > 0 and details["lock"].startswith("gpu-")
    RESULTS["nvml"] = before


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_workers_on_two_gpus_time_under_their_own_device_locks(tmp_path):
    study_file = tmp_path / "gpu_study.py"
    study_file.write_text(f'''
import sys
sys.path.insert(0, {str(HERE.parent)!r})
import torch
import motune as mt
from conftest import make_frame
from motune.models.torch import TorchClassifier, fit

task = mt.Task.from_frame(make_frame(2000), label="y", sensitive="group", seed=0)

def space(trial):
    trial.suggest_int("width", 32, 256, log=True)

def train(params, task, ctx):
    data = task.numeric()
    module = torch.nn.Sequential(torch.nn.Linear(data.X_train.shape[1], params["width"]), torch.nn.ReLU(),
                                 torch.nn.Linear(params["width"], 2)).to(ctx.device)
    fit(module, torch.from_numpy(data.X_train), torch.from_numpy(data.y_train), epochs=2, seed=ctx.seed)
    return TorchClassifier.for_task(module, task)

study = mt.Study(name="two-gpus", task=task, space=space, train=train,
                 objectives=[mt.maximize("accuracy"), mt.minimize("latency_p50_ms")], pruning=None)
''')
    url = f"sqlite:///{tmp_path / 'gpus.db'}"
    ran = subprocess.run([sys.executable, "-m", "motune.cli", "run", str(study_file), "--trials", "6", "--gpus",
                          "0,1", "--storage", url, "-q"], capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stderr
    records = mt.load_study("two-gpus", storage=url).records()
    locks = {r.attrs["provenance"]["worker"]["cuda_visible_devices"]: r.attrs["latency"]["lock"] for r in records}
    assert set(locks) == {"0", "1"} and len(set(locks.values())) == 2  # one lock per physical GPU (its UUID)
    RESULTS["two_gpus"] = {"locks": locks, "trials": len(records)}
