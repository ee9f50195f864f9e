"""Preference-conditioned models: one training that covers a front.

After YOTO (Dosovitskiy & Djolonga, 2020) and COSMOS (Ruchte & Grabocka,
2021): the model takes, beside its inputs, a preference vector ``w`` (one
weight per training objective) and is trained with ``w`` drawn afresh for every
minibatch and the loss scalarised by that ``w``. At prediction time the
preference is fixed (:meth:`ConditionedClassifier.at`), so a study can search
``w`` where each trial costs a prediction, not a training
(``studies/adult_mo_training.py``).

- :class:`ConditionedMLP`: an MLP whose hidden layers are modulated by the
  preference through FiLM (a per-unit scale and shift computed from ``w``);
- :class:`ConditionedClassifier`: a :class:`~motune.models.torch.TorchClassifier`
  with the preference it predicts at (stored, confirmed and chosen like any
  torch model: the preference travels with the saved classifier);
- :func:`fit_conditioned`: the training loop (``fit``'s, with the preference
  drawn per minibatch); ``preferences`` draws them (default: a flat Dirichlet
  over the objectives).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from motune.errors import SpecError
from motune.models import device_of
from motune.models.torch import TorchClassifier, check_fit_arguments
from motune.training.combiners import SCALARIZATIONS, Scalarized, preference_vector
from motune.training.surrogates import Surrogate


def _torch_module() -> Any:
    import torch

    return torch.nn.Module


class ConditionedMLP(_torch_module()):  # type: ignore[misc]
    """``inputs, preference -> logits``: ``depth`` hidden ReLU layers of ``hidden`` units, each
    scaled and shifted by a linear map of the preference (FiLM)."""

    def __init__(self, in_features: int, hidden: int, n_preferences: int, *, depth: int = 1,
                 classes: int = 2) -> None:
        import torch

        super().__init__()
        if min(in_features, hidden, n_preferences, depth, classes) < 1:
            raise SpecError("ConditionedMLP needs positive sizes")
        sizes = [in_features] + [hidden] * depth
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.film = torch.nn.ModuleList(torch.nn.Linear(n_preferences, 2 * hidden) for _ in range(depth))
        for f in self.film:  # start as the plain MLP: scale 1, shift 0
            torch.nn.init.zeros_(f.weight)
            torch.nn.init.zeros_(f.bias)
        self.head = torch.nn.Linear(hidden, classes)
        self.n_preferences = n_preferences

    def forward(self, x: Any, preference: Any) -> Any:
        import torch

        if preference.ndim == 1:
            preference = preference.expand(x.shape[0], -1)
        h = x
        for layer, film in zip(self.layers, self.film):
            scale, shift = film(preference.to(h.dtype)).chunk(2, dim=-1)
            h = torch.relu(layer(h)) * (1 + scale) + shift
        return self.head(h)


class ConditionedClassifier(TorchClassifier):
    """A conditioned module predicting at one ``preference`` (a list of weights, one per objective)."""

    def __init__(self, module: Any, encode: Callable[[Any], Any], *, preference: Sequence[float], **kwargs: Any):
        super().__init__(module, encode, **kwargs)
        self.preference = _check_preference(preference, module.n_preferences)

    @classmethod
    def for_task(cls, module: Any, task: Any, **kwargs: Any) -> ConditionedClassifier:
        plain = TorchClassifier.for_task(module, task)
        kwargs.setdefault("continuous", plain.continuous)
        kwargs.setdefault("preference", [1.0 / module.n_preferences] * module.n_preferences)
        return cls(module, plain.encode, **kwargs)

    def at(self, preference: Sequence[float]) -> ConditionedClassifier:
        """The same trained module, predicting at ``preference`` (no copy of the weights)."""
        other = copy.copy(self)
        other.preference = _check_preference(preference, self.module.n_preferences)
        other.__dict__.pop("_placed", None)
        return other

    def forward(self, inputs: Any) -> Any:
        with self._autocast():
            return self.module(inputs, self._weights(inputs.device))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_placed", None)  # a device tensor made on use: not part of what is saved
        return state

    def _weights(self, device: Any) -> Any:
        """The preference as a tensor on ``device``, made once per device and preference (a copy from the host
        inside every timed call would block it)."""
        import torch

        key = (str(device), tuple(self.preference))
        cached = self.__dict__.get("_placed")
        if cached is None or cached[0] != key:
            cached = (key, torch.tensor(self.preference, device=device))
            self.__dict__["_placed"] = cached
        return cached[1]


def _check_preference(preference: Sequence[float], n: int) -> list[float]:
    values = preference_vector(preference, n, "a preference")
    return [v / sum(values) for v in values]


def dirichlet(n: int, *, concentration: float = 1.0) -> Callable[[Any], Any]:
    """Preferences drawn from a symmetric Dirichlet over ``n`` objectives (1.0: flat on the simplex)."""
    def draw(generator: Any) -> Any:
        import torch

        gamma = torch._standard_gamma(torch.full((n,), float(concentration)), generator=generator)
        return gamma / gamma.sum()

    return draw


def fit_conditioned(module: Any, X: Any, y: Any, *, objectives: Sequence[str | Surrogate], epochs: int,
                    groups: Any = None, kind: str = "linear", preferences: Callable[[Any], Any] | None = None,
                    lr: float = 1e-3, batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0,
                    ctx: Any = None, model: Any = None, temperature: float = 1.0) -> Any:
    """Train a conditioned ``module`` (``module(x, w) -> logits``) over preferences ``w``.

    Every minibatch draws ``w = preferences(generator)`` (a tensor of one weight per objective)
    and minimises the objectives' ``kind`` scalarisation by ``w`` with the module conditioned on
    ``w``. With ``ctx`` and ``model`` (the :class:`ConditionedClassifier`), each epoch is reported
    at ``model``'s own preference. Returns ``module``.
    """
    import torch

    if kind not in SCALARIZATIONS:
        raise SpecError(f"kind must be one of {list(SCALARIZATIONS)}, got {kind!r}")
    check_fit_arguments(X, y, groups, epochs=epochs, batch_size=batch_size, ctx=ctx, model=model)
    n = len(objectives)
    if getattr(module, "n_preferences", n) != n:
        raise SpecError(f"the module takes {module.n_preferences} preference weights for {n} objectives")
    draw = preferences or dirichlet(n)
    device = device_of(module)
    X, y = X.to(device), y.to(device)
    groups = None if groups is None else groups.to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    loss = Scalarized(objectives, None, kind=kind, temperature=temperature)
    for epoch in range(1, epochs + 1):
        module.train()
        order = torch.randperm(len(X), generator=generator).to(device)
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]
            w = draw(generator).float()
            if w.shape != (n,):
                raise SpecError(f"preferences must draw {n} weights, drew shape {tuple(w.shape)}")
            loss.weights = w.tolist()
            w = w.to(device)
            loss.module = lambda x, w=w: module(x, w)  # what the adversarial surrogate attacks
            optimizer.zero_grad(set_to_none=True)
            logits = module(X[rows], w)
            value = loss(logits, y[rows], None if groups is None else groups[rows], inputs=X[rows])
            value.backward()
            optimizer.step()
        module.eval()
        loss.end_epoch()
        if ctx is not None:
            ctx.set_attr("training", loss.history)
            ctx.report(epoch, model)
    return module
