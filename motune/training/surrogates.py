"""Differentiable surrogates of the study's metrics, computed on one minibatch.

Each surrogate maps a :class:`Batch` (logits, labels, group codes, and for the
adversarial one the inputs and the module) to a scalar tensor that is low when
the metric is good, so the combiners in :mod:`motune.training.combiners` can
minimise them together:

name                       stands for                                      needs
``cross_entropy``          accuracy                                        logits, y
``demographic_parity_gap`` demographic parity difference (fairlearn's, on  logits, groups
                           predicted probabilities instead of predictions)
``equalized_odds_gap``     equalized odds difference (the larger of the    logits, y, groups
                           gaps among label-1 and label-0 rows)
``worst_group_loss``       the worst group's accuracy                      logits, y, groups
``adversarial_loss``       adversarial accuracy: cross-entropy under an    inputs, module
                           FGSM / PGD attack (:func:`adversarial`)

``temperature`` sharpens the gaps towards hard predictions: the probability of
the positive class is ``softmax(logits / temperature)`` (1 = plain softmax;
fairlearn's metric counts hard predictions, which a small temperature
approaches). Groups absent from a minibatch are left out of its gap; a
minibatch with one group has a zero gap that keeps the graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from motune.errors import SpecError


@dataclass
class Batch:
    """One minibatch as the surrogates read it (tensors on the module's device)."""

    logits: Any
    y: Any
    groups: Any = None
    inputs: Any = None
    module: Any = None


class Surrogate:
    """A named surrogate: ``surrogate(batch) -> scalar tensor`` (lower is better)."""

    def __init__(self, name: str, fn: Callable[[Batch], Any], *, needs: tuple[str, ...] = ()) -> None:
        self.name = name
        self.fn = fn
        self.needs = needs

    def __call__(self, batch: Batch) -> Any:
        for field in self.needs:
            if getattr(batch, field) is None:
                raise SpecError(f"the {self.name} surrogate needs {field}: " + (
                    "pass groups= to fit (motune.training.group_codes), or in a Trainer give each row groups "
                    "(TextClassifier.dataset(X, y, groups=...))" if field == "groups" else
                    "train with motune.models.torch.fit (it passes each minibatch's inputs), or in a Trainer give "
                    "each row extra_* tensors (TextClassifier.dataset(X, y, extra=...))"))
        return self.fn(batch)

    def __repr__(self) -> str:
        return f"Surrogate({self.name!r})"


def positive_probability(logits: Any, *, positive: int = 1, temperature: float = 1.0) -> Any:
    import torch

    return torch.softmax(logits.float() / temperature, dim=-1)[:, positive]


def _gap(p: Any, groups: Any) -> Any:
    import torch

    means = [p[groups == g].mean() for g in torch.unique(groups)]
    if len(means) < 2:
        return p.sum() * 0.0  # keeps the graph (and the device) with a zero gap
    stacked = torch.stack(means)
    return stacked.max() - stacked.min()


def demographic_parity_gap(logits: Any, groups: Any, *, positive: int = 1, temperature: float = 1.0) -> Any:
    """Max minus min over groups of the mean probability of class ``positive``."""
    return _gap(positive_probability(logits, positive=positive, temperature=temperature), groups)


def equalized_odds_gap(logits: Any, y: Any, groups: Any, *, positive: int = 1, temperature: float = 1.0) -> Any:
    """The larger of the demographic parity gaps among label-1 rows and among label-0 rows."""
    import torch

    p = positive_probability(logits, positive=positive, temperature=temperature)
    gaps = [_gap(p[y == label], groups[y == label]) for label in (0, 1) if bool((y == label).any())]
    return torch.stack(gaps).max() if gaps else p.sum() * 0.0


def worst_group_loss(logits: Any, y: Any, groups: Any) -> Any:
    """The largest mean cross-entropy of any group present in the minibatch."""
    import torch

    losses = torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")
    return torch.stack([losses[groups == g].mean() for g in torch.unique(groups)]).max()


def adversarial(*, eps: float = 0.1, steps: int = 1, continuous: Any = None, seed: int = 0) -> Surrogate:
    """Cross-entropy on inputs perturbed by an FGSM (``steps=1``) or PGD attack of L-infinity radius
    ``eps`` on the features ``continuous`` marks (a boolean mask; ``None``: every feature), with the
    ``adversarial_accuracy`` metric's attack (:func:`motune.models.torch.adversarial_delta`). To attack
    what the metric attacks, pass the classifier's mask: ``adversarial(continuous=model.continuous)``
    (the named ``"adversarial_loss"`` is ``adversarial()``: eps 0.1, FGSM, every feature)."""
    if not eps > 0 or not isinstance(steps, int) or steps < 1:
        raise SpecError(f"need eps > 0 and an int steps >= 1, got eps={eps!r}, steps={steps!r}")
    state: dict[str, Any] = {}

    def fn(batch: Batch) -> Any:
        import torch

        from motune.models.torch import adversarial_delta

        x = batch.inputs
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise SpecError("the adversarial surrogate needs one floating-point input tensor")
        mask = (torch.ones(x.shape[-1]) if continuous is None else torch.as_tensor(continuous)).to(x)
        if "generator" not in state:  # one stream of PGD starts over the whole training
            state["generator"] = torch.Generator().manual_seed(seed)
        with torch.enable_grad():  # the attack needs input gradients, also in an evaluation pass
            delta = adversarial_delta(batch.module, x, batch.y, mask, eps=eps, steps=steps,
                                      generator=state["generator"])
        return torch.nn.functional.cross_entropy(batch.module(x + delta).float(), batch.y)

    return Surrogate("adversarial_loss", fn, needs=("inputs", "module"))


def _named(name: str, temperature: float = 1.0) -> Surrogate:
    import torch

    table = {
        "cross_entropy": (lambda b: torch.nn.functional.cross_entropy(b.logits.float(), b.y), ()),
        "demographic_parity_gap": (lambda b: demographic_parity_gap(b.logits, b.groups, temperature=temperature),
                                   ("groups",)),
        "equalized_odds_gap": (lambda b: equalized_odds_gap(b.logits, b.y, b.groups, temperature=temperature),
                               ("groups",)),
        "worst_group_loss": (lambda b: worst_group_loss(b.logits, b.y, b.groups), ("groups",)),
        "adversarial_loss": (adversarial().fn, ("inputs", "module")),
    }
    if name not in table:
        raise SpecError(f"unknown surrogate {name!r}; known: {sorted(table)} (or pass a Surrogate)")
    fn, needs = table[name]
    return Surrogate(name, fn, needs=needs)


SURROGATES = ("cross_entropy", "demographic_parity_gap", "equalized_odds_gap", "worst_group_loss", "adversarial_loss")


def surrogate(spec: str | Surrogate, *, temperature: float = 1.0) -> Surrogate:
    """A :class:`Surrogate` from its name (see the table above) or as given."""
    if isinstance(spec, Surrogate):
        return spec
    if not isinstance(spec, str):
        raise SpecError(f"an objective of a training loss is a surrogate name or a Surrogate, got {spec!r}")
    if not temperature > 0:
        raise SpecError(f"temperature must be > 0, got {temperature!r}")
    return _named(spec, temperature)


def group_codes(sensitive: Any) -> tuple[Any, list[str]]:
    """Integer codes (a torch LongTensor) for a sensitive-feature column, and the group names."""
    import numpy as np
    import torch

    names, codes = np.unique(np.asarray(sensitive).astype(str), return_inverse=True)
    return torch.as_tensor(codes, dtype=torch.long), [str(n) for n in names]
