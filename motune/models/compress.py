"""Compression knobs that move latency, usable as hyperparameters.

- :func:`quantize_int8`: dynamic int8 quantization of ``nn.Linear`` layers
  (weights stored as int8, activations quantized on the fly); CPU only, via
  ``torch.ao.quantization.quantize_dynamic``. Returns a new module; the
  float one is left as it was. Quantized modules have no gradient: train
  first, quantize the model you serve.
- :func:`keep_layers`: keep ``n`` transformer blocks of a BERT-like encoder
  (truncation), before fine-tuning.
- :func:`cast`: ``"float32"``, or on a CUDA device ``"float16"`` /
  ``"bfloat16"`` (half precision is not a CPU serving option here).

Shorter sequences are a tokenizer option (``max_length`` of
:class:`motune.models.transformers.TextClassifier`); smaller hidden sizes
are a model-construction choice.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from motune import devices
from motune.errors import SpecError, SpecTypeError
from motune.models import device_of

PRECISIONS = ("float32", "float16", "bfloat16")


def quantize_int8(module: Any) -> Any:
    """A dynamically int8-quantized copy of ``module`` (its ``nn.Linear`` layers)."""
    import torch

    device = device_of(module)
    if device != "cpu":
        raise SpecError(f"dynamic int8 quantization runs on the CPU; this module is on {device}. "
                         "On a GPU use cast(module, 'float16') or 'bfloat16' instead")
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao; it still works
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(module).eval(), {torch.nn.Linear}, dtype=torch.qint8)


def keep_layers(model: Any, n: int, *, which: str = "spread") -> Any:
    """Keep ``n`` encoder blocks of a transformers model (in place); returns it.

    ``which="spread"`` keeps blocks evenly spaced from the first to the last (as DistilBERT
    was initialised from every other BERT block), so the kept stack still ends in the block
    the pretrained pooler and [CLS] representation were trained after; ``"first"`` keeps the
    first ``n``. Works for models whose encoder keeps its blocks in ``<base>.encoder.layer``
    (BERT, MiniLM, RoBERTa, ...); ``config.num_hidden_layers`` is updated to match.
    """
    import numpy as np
    import torch

    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise SpecTypeError(f"{type(model).__name__} has no encoder.layer list to truncate")
    if which not in ("spread", "first"):
        raise SpecError(f"which must be 'spread' or 'first', got {which!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(layers):
        raise SpecError(f"can keep 1 to {len(layers)} layers of this model, got {n!r}")
    total = len(layers)
    if which == "first":
        keep = list(range(n))
    else:
        keep = [total - 1] if n == 1 else [int(i) for i in np.round(np.linspace(0, total - 1, n))]
    encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])
    for index, block in enumerate(encoder.layer):  # attention caches index blocks by position
        attention = getattr(getattr(block, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):
            attention.layer_idx = index
    model.config.num_hidden_layers = n
    return model


def cast(module: Any, precision: str) -> Any:
    """``module`` in ``precision`` (in place); half precision only on a CUDA device."""
    import torch

    if precision not in PRECISIONS:
        raise SpecError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    device = device_of(module)
    if precision != "float32" and not devices.is_cuda(device):
        raise SpecError(f"{precision} is a GPU serving option; this module is on {device}")
    return module.to(getattr(torch, precision))
