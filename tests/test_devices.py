"""Device strings and the GPUs a process may use (MIG instances, containers without nvidia-smi)."""

import pytest

import motune as mt
from motune import devices

SMI = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-aaaa-bbbb-cccc-000000000000)
  MIG 3g.40gb     Device  0: (UUID: MIG-22222222-aaaa-bbbb-cccc-000000000000)
  MIG 3g.40gb     Device  1: (UUID: MIG-33333333-aaaa-bbbb-cccc-000000000000)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-44444444-aaaa-bbbb-cccc-000000000000)
"""


def test_device_strings_are_read_in_one_place():
    assert devices.parse("cuda:1") == devices.Device("cuda", 1) and devices.parse("CPU").kind == "cpu"
    assert devices.is_cuda("cuda") and not devices.is_cuda("cpu") and not devices.is_cuda(None)
    assert devices.same("cuda", "cuda:0") and not devices.same("cuda:0", "cuda:1") and not devices.same("cpu", "cuda")
    with pytest.raises(mt.SpecError, match="'cuda:N'"):
        devices.parse("cuda:x")

    class Cuda:
        @staticmethod
        def current_device():
            return 3

    assert devices.cuda_index("cuda", Cuda) == 3 and devices.cuda_index("cuda:1", Cuda) == 1


def test_a_gpu_split_into_mig_instances_counts_as_its_instances():
    assert devices.gpus_from_listing(SMI) == ["MIG-22222222-aaaa-bbbb-cccc-000000000000",
                                             "MIG-33333333-aaaa-bbbb-cccc-000000000000", "1"]
    assert devices.gpus_from_listing("") == []


def test_without_nvidia_smi_the_count_comes_from_nvml_or_torch_in_a_child(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)  # a container without nvidia-smi
    import sys

    children = []
    real_run = devices.subprocess.run
    monkeypatch.setattr(devices.subprocess, "run", lambda *a, **k: children.append(a) or real_run(*a, **k))
    monkeypatch.setattr(devices, "no_nvidia_driver", lambda: False)  # a driver, as in a GPU container
    assert devices.visible_gpus() == []  # a CPU build of torch, counted in a child process
    assert len(children) == 1
    assert "torch" not in sys.modules or not sys.modules["torch"].cuda.is_initialized()  # this process started none
    monkeypatch.setattr(devices, "no_nvidia_driver", lambda: True)  # no driver at all: no child to ask
    assert devices.visible_gpus() == [] and len(children) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-2,MIG-3")
    assert devices.visible_gpus() == ["MIG-2", "MIG-3"]


def test_the_gpu_check_runs_to_the_end_on_a_machine_without_a_gpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: scripts/gpu-check runs its hardware steps")
    root = Path(__file__).parents[1]
    done = subprocess.run(["bash", str(root / "scripts" / "gpu-check")], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PY": sys.executable, "OUT": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("no GPU: skipped") == 4 and done.stdout.rstrip().endswith(f"done; files in {tmp_path}")
