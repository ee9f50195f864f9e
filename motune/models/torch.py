"""PyTorch models as motune sees them.

:class:`TorchClassifier` wraps an ``nn.Module`` that maps encoded inputs to
class logits, plus the function that encodes a split's rows into those
inputs. motune then predicts with it (``predict``, ``predict_proba`` in
``eval()`` and ``torch.inference_mode()``, in batches, on the module's
device), times its forward pass on fixed-shape inputs (latency), and attacks
its continuous inputs (FGSM / PGD). :func:`fit` is the small training loop
that reports each epoch to motune so pruning can act.

Nothing here imports torch until it is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from motune import devices
from motune.errors import SpecError
from motune.models import device_of


@contextlib.contextmanager
def evaluating(module: Any) -> Iterator[Any]:
    """``module.eval()`` for the block, then every submodule's mode as it was (Trainer callbacks
    measure a model mid-training; a submodule deliberately kept in eval mode stays there)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


class NumericEncoder:
    """Rows -> a float32 tensor through a fitted scikit-learn encoder (picklable, so the model can be saved)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    def __call__(self, X: Any) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.encoder.transform(X), dtype=np.float32))


class TorchClassifier:
    """A classifier ``module`` (inputs -> logits) with ``encode(X)`` (task rows -> inputs).

    ``encode`` returns a tensor or a dict of tensors (a tokenizer's output); it is moved to
    the module's device. ``continuous`` is a boolean mask over the input features that an
    adversarial attack may perturb (``None``: the inputs are not continuous, e.g. token ids).
    A module whose output has ``.logits`` (transformers) is read through it. ``autocast``
    (``"bfloat16"`` or ``"float16"``) runs the forward pass under ``torch.autocast`` (mixed
    precision), beside whole-module half precision (:func:`motune.models.compress.cast`).
    """

    predict_from_proba = True  # predict is the argmax of predict_proba (motune then runs one pass)

    def __init__(self, module: Any, encode: Callable[[Any], Any], *, batch_size: int = 512,
                 continuous: np.ndarray | None = None, autocast: str | None = None) -> None:
        if batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {batch_size}")
        if autocast not in (None, "bfloat16", "float16"):
            raise SpecError(f"autocast must be None, 'bfloat16' or 'float16', got {autocast!r}")
        self.module = module
        self.encode = encode
        self.batch_size = batch_size
        self.continuous = continuous
        self.autocast = autocast

    @classmethod
    def for_task(cls, module: Any, task: Any, **kwargs: Any) -> TorchClassifier:
        """For a tabular task: rows are encoded with ``task.numeric()``'s train-fitted encoder;
        the standardised numeric columns are the continuous ones."""
        numeric = task.numeric()
        names = set(task.numeric_columns)
        continuous = np.array([name in names for name in numeric.feature_names], dtype=bool)
        kwargs.setdefault("continuous", continuous)
        return cls(module, NumericEncoder(numeric.encoder), **kwargs)

    @property
    def device(self) -> str:
        """The module's device, from its first parameter (or buffer): one lookup, not a walk over every
        parameter (this sits inside timed windows)."""
        return device_of(self.module)

    @property
    def dtype(self) -> Any:
        """The module's floating-point dtype (``None`` when it has no floating-point parameter)."""
        return next((p.dtype for p in self.module.parameters() if p.is_floating_point()), None)

    def inputs(self, X: Any) -> Any:
        """Encoded inputs for rows ``X`` on the module's device; floating-point inputs in the
        module's floating-point dtype (a module cast to half precision gets half inputs)."""
        return self.to_device(self.host_inputs(X))

    def host_inputs(self, X: Any, *, pin: bool = False) -> Any:
        """Encoded inputs for rows ``X`` in host memory (pinned when ``pin``, for non-blocking copies)."""
        encoded = self.encode(X)
        dtype = self.dtype

        def host(t: Any) -> Any:
            t = t.cpu()
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            return t.pin_memory() if pin else t

        return {k: host(v) for k, v in encoded.items()} if _is_mapping(encoded) else host(encoded)

    def to_device(self, inputs: Any, *, non_blocking: bool = False) -> Any:
        device = self.device
        if _is_mapping(inputs):
            return {k: v.to(device, non_blocking=non_blocking) for k, v in inputs.items()}
        return inputs.to(device, non_blocking=non_blocking)

    def forward(self, inputs: Any) -> Any:
        """Logits for encoded ``inputs`` (no mode or grad handling: callers decide; ``autocast`` applies)."""
        with self._autocast():
            out = self.module(**inputs) if isinstance(inputs, dict) else self.module(inputs)
        return getattr(out, "logits", out)

    def _autocast(self) -> Any:
        if getattr(self, "autocast", None) is None:  # (archives saved before autocast existed have none)
            return contextlib.nullcontext()
        import torch

        device_type = "cuda" if devices.is_cuda(self.device) else "cpu"
        return torch.autocast(device_type, dtype=getattr(torch, self.autocast))

    def predict_proba(self, X: Any) -> np.ndarray:
        import torch

        chunks = []
        with evaluating(self.module), torch.inference_mode():
            for start in range(0, len(X), self.batch_size):
                logits = self.forward(self.inputs(X.iloc[start:start + self.batch_size]))
                chunks.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        n_classes = chunks[0].shape[1] if chunks else 2
        return np.concatenate(chunks) if chunks else np.empty((0, n_classes), dtype=np.float32)

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def adversarial_delta(forward: Callable[[Any], Any], x0: Any, target: Any, mask: Any, *, eps: float, steps: int = 1,
                      generator: Any = None) -> Any:
    """The L-infinity perturbation (radius ``eps``, only where ``mask`` is 1) that raises the
    cross-entropy of ``forward(x0 + delta)`` against ``target``: FGSM for ``steps=1`` (Goodfellow
    et al., 2015), PGD from a random start of the ball otherwise (Madry et al., 2018), step size
    ``2.5 * eps / steps``. Returned detached; ``forward``'s parameters get no gradient. Used by the
    adversarial-accuracy metric and by :func:`motune.training.adversarial`."""
    import torch

    step_size = eps if steps == 1 else 2.5 * eps / steps
    delta = torch.zeros_like(x0)
    if steps > 1:
        delta = (torch.rand(x0.shape, generator=generator).to(x0) * 2 - 1) * eps * mask
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(forward(x0.detach() + delta), target)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step_size * grad.sign() * mask).clamp(-eps, eps)
    return delta.detach()


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict) or hasattr(value, "keys")


def check_fit_arguments(X: Any, y: Any, groups: Any, *, epochs: int, batch_size: int, ctx: Any, model: Any) -> None:
    """What every training loop here needs of its arguments (``fit``, ``motune.training.fit_conditioned``)."""
    if epochs < 0 or batch_size < 1:
        raise SpecError(f"need epochs >= 0 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}")
    if (ctx is None) != (model is None):
        raise SpecError("pass ctx and model together: motune measures model at each epoch's report")
    if len(X) != len(y) or (groups is not None and len(groups) != len(y)):
        raise SpecError(f"X, y (and groups) need the same number of rows, got {len(X)}, {len(y)}"
                        + ("" if groups is None else f", {len(groups)}"))


def fit(
    module: Any,
    X: Any,
    y: Any,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    loss: Callable[..., Any] | None = None,
    groups: Any = None,
    seed: int = 0,
    ctx: Any = None,
    model: Any = None,
    first_epoch: int = 1,
) -> Any:
    """Train ``module`` on tensors ``X``, ``y`` with Adam; report each epoch to motune.

    ``loss(logits, y)`` defaults to cross-entropy; with ``groups`` (integer group codes per
    row) it is called as ``loss(logits, y, groups)``. A multi-objective loss from
    :mod:`motune.training` (it has ``attach``) is attached to ``module`` first (Pareto-gradient
    combiners need its parameters), gets the minibatch's inputs too (the adversarial surrogate
    attacks them), and ends each epoch with ``end_epoch()`` (constrained losses record their
    multipliers); its per-epoch history is stored with the trial as the ``training`` attribute.
    With ``ctx`` (the trial context) and
    ``model`` (the :class:`TorchClassifier` around ``module``), each epoch ends with
    ``ctx.report(epoch, model)``: motune measures the study's metrics on it and pruning may
    end the trial there (``optuna.TrialPruned`` propagates). Minibatches are shuffled by a
    generator seeded with ``seed``. Returns ``module``.
    """
    import torch

    check_fit_arguments(X, y, groups, epochs=epochs, batch_size=batch_size, ctx=ctx, model=model)
    if groups is not None and loss is None:
        raise SpecError("groups= is for a group-aware loss such as motune.training.constrained(...); "
                         "pass loss= too (plain cross-entropy takes no groups)")
    device = device_of(module)
    X, y = X.to(device), y.to(device)
    groups = None if groups is None else groups.to(device)
    loss = loss or torch.nn.functional.cross_entropy
    multi = hasattr(loss, "attach")  # a motune.training loss
    if multi:
        loss.attach(module)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(first_epoch, first_epoch + epochs):
        module.train()
        order = torch.randperm(len(X), generator=generator).to(device)
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            logits = module(X[rows])
            if multi:
                value = loss(logits, y[rows], None if groups is None else groups[rows], inputs=X[rows])
            else:
                value = loss(logits, y[rows]) if groups is None else loss(logits, y[rows], groups[rows])
            value.backward()
            optimizer.step()
        module.eval()
        if multi:
            loss.end_epoch()
        if ctx is not None:
            if multi:
                ctx.set_attr("training", loss.history)
            ctx.report(epoch, model)
    return module
