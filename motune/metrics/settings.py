"""torch's process-wide settings that move latency: read them, and keep one trial from changing the next.

TF32 and reduced-precision float32 (torch >= 2.9's ``fp32_precision`` of
``torch.backends`` and of its cuda matmul, cuDNN conv / rnn and oneDNN
(mkldnn) children; the older ``allow_tf32`` flags and
``torch.get_float32_matmul_precision()``), ``cudnn.benchmark`` and
``cudnn.deterministic``, and the scaled-dot-product attention backends
(flash, memory-efficient, math, cuDNN) are global to a process: a Trainer
run with ``tf32=True`` switches TF32 on for every later trial in it.
:func:`torch_settings` reads them (for each latency record);
:class:`StudySettings` takes those in force when a run begins and puts them
back before and after each of its trials.

torch refuses to read an older flag when the two APIs have set it to
disagreeing values (a ``RuntimeError`` about a "mix of the legacy and new
APIs"); such a flag is recorded as ``None`` and the newer values, which are
what torch uses, are the record (and an older flag unreadable when the run
began cannot be put back by its old name: the newer values are).

The settings are process-wide, so they can be pinned per trial only when one
trial runs at a time in the process: with ``n_jobs`` threads they are
recorded, not pinned (use worker processes, ``--workers``), and a latency run
during which they changed says so.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import Any

# torch >= 2.9: where fp32_precision lives, parents before children ("none": the parent's)
PRECISION_PATHS = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn", "mkldnn", "mkldnn.matmul", "mkldnn.conv",
                   "mkldnn.rnn")
SDP_BACKENDS = ("flash", "mem_efficient", "math", "cudnn")


def _torch() -> Any:
    return sys.modules.get("torch")  # never import torch just to read its settings


def _node(backends: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        backends = getattr(backends, part, None)
    return backends


def _legacy(read: Any) -> Any:
    try:
        return read()
    except RuntimeError:  # both APIs were used: torch will not answer the old question
        return None


def torch_settings() -> dict[str, Any] | None:
    """The settings now in force (``None`` when torch is not loaded)."""
    torch = _torch()
    if torch is None:
        return None
    backends = torch.backends
    out: dict[str, Any] = {"torch": torch.__version__}
    for path in PRECISION_PATHS:
        node = _node(backends, path)
        if node is not None and hasattr(node, "fp32_precision"):
            out[f"fp32_precision:{path or 'all'}"] = node.fp32_precision
    out |= {
        "float32_matmul_precision": _legacy(torch.get_float32_matmul_precision),
        "cuda_matmul_allow_tf32": _legacy(lambda: bool(backends.cuda.matmul.allow_tf32)),
        "cudnn_allow_tf32": _legacy(lambda: bool(backends.cudnn.allow_tf32)),
        "cudnn_benchmark": bool(backends.cudnn.benchmark),
        "cudnn_deterministic": bool(backends.cudnn.deterministic),
    }
    for name in SDP_BACKENDS:
        reader = getattr(backends.cuda, f"{name}_sdp_enabled", None)
        if callable(reader):
            out[f"sdp_{name}"] = bool(reader())
    return out


def apply(settings: dict[str, Any] | None) -> None:
    """Put ``settings`` (from :func:`torch_settings`) back in force: the older flags first (which
    also clears torch's "mixed APIs" state), then each newer ``fp32_precision`` that differs."""
    torch = _torch()
    if torch is None or not settings:
        return
    backends = torch.backends
    if settings.get("float32_matmul_precision") is not None:
        torch.set_float32_matmul_precision(settings["float32_matmul_precision"])
    if settings.get("cuda_matmul_allow_tf32") is not None:
        backends.cuda.matmul.allow_tf32 = settings["cuda_matmul_allow_tf32"]
    if settings.get("cudnn_allow_tf32") is not None:
        backends.cudnn.allow_tf32 = settings["cudnn_allow_tf32"]
    for path in PRECISION_PATHS:
        node, value = _node(backends, path), settings.get(f"fp32_precision:{path or 'all'}")
        if node is not None and value is not None and getattr(node, "fp32_precision", value) != value:
            node.fp32_precision = value
    backends.cudnn.benchmark = settings["cudnn_benchmark"]
    backends.cudnn.deterministic = settings["cudnn_deterministic"]
    for name in SDP_BACKENDS:
        setter = getattr(backends.cuda, f"enable_{name}_sdp", None)
        if f"sdp_{name}" in settings and callable(setter):
            setter(settings[f"sdp_{name}"])


class StudySettings:
    """The settings a run's trials start and end with: those in force when the run began, or, when torch
    is installed but not loaded yet, those it has right after its import (a trial that imports torch
    and changes them is measured under what it set, and its latency record says so; the next trial
    is not). ``pin=False``: nothing is put back (several trials at once in one process)."""

    def __init__(self, *, pin: bool = True) -> None:
        self.pin = pin
        self.settings = torch_settings()
        if self.settings is None and importlib.util.find_spec("torch") is not None:
            _after_import("torch", self._capture)

    def _capture(self) -> None:
        if self.settings is None:
            self.settings = torch_settings()

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Run a trial under the study's settings, then put them back, whatever the trial changed."""
        if self.pin:
            apply(self.settings)
        try:
            yield
        finally:
            if self.pin:
                apply(self.settings)


class _AfterImport(importlib.abc.MetaPathFinder):
    """A one-shot import hook: ``callback()`` right after module ``name`` has been executed."""

    def __init__(self, name: str, callback: Callable[[], None]) -> None:
        self.name, self.callback = name, callback

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _CallbackLoader(spec.loader, self.callback)
        return spec


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, callback: Callable[[], None]) -> None:
        self.loader, self.callback = loader, callback

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        self.callback()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package ...
        return getattr(self.loader, name)


def _after_import(name: str, callback: Callable[[], None]) -> None:
    sys.meta_path.insert(0, _AfterImport(name, callback))
