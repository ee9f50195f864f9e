"""Combiners: several surrogates of one minibatch -> the scalar a training step minimises.

Every combiner is called like a loss, ``loss(logits, y, groups, inputs=...)``,
returns a scalar tensor whose gradient is the step's direction, and keeps a
per-epoch ``history`` (the surrogates' epoch means and the combiner's state)
that :func:`motune.models.torch.fit` stores with the trial as the ``training``
attribute. Three kinds:

- :class:`Scalarized`: a fixed preference vector ``w``; ``linear`` is
  ``sum w_i f_i`` (it cannot reach the concave parts of a front),
  ``chebyshev`` is ``max_i w_i f_i`` and ``smooth_chebyshev`` torchjd's STCH
  (Lin et al., 2024): both reach every Pareto-optimal point for some ``w``.
- :class:`Constrained` (after MOPO, arXiv 2505.10892): minimise the primary
  surrogate subject to ``f_k <= bound_k`` for each secondary one, through the
  Lagrangian ``f_0 + sum lambda_k (f_k - bound_k)`` whose multipliers are
  updated after every step by projected dual ascent,
  ``lambda_k <- max(0, lambda_k + dual_lr * (f_k - bound_k))``. The bound is the
  knob a user states ("demographic parity gap at most 0.05"), not a weight.
- :class:`Pareto`: a Pareto-gradient step (after PAMA, arXiv 2508.07768, and
  MGDA, Sener & Koltun 2018): the surrogates' gradients with respect to the
  module's parameters are combined with convex weights computed from their
  Gram matrix: in closed form for two objectives (the min-norm point of the
  segment between the two gradients), by torchjd's MGDA or UPGrad weighting
  for more. The step is ``sum_i a_i f_i / p_i`` with ``a`` held fixed, so one
  backward pass of the returned scalar gives the combined direction (in
  ``fit`` and in a transformers ``Trainer`` alike). ``p`` is an optional
  preference (values > 0): at the min-norm point every active objective falls
  at a rate proportional to its ``p_i`` (UPGrad: its own ``pref_vector``). A
  minibatch where one objective's gradient is zero (a parity gap over one
  group) gives a zero step in the closed form and MGDA: a Pareto-stationary
  point for that minibatch.

torchjd 0.18.0 (pinned: its API changed between releases) supplies the
Gram-matrix weightings and the smooth Chebyshev scalarisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from motune.errors import SpecError
from motune.training.surrogates import Batch, Surrogate, surrogate

SCALARIZATIONS = ("linear", "chebyshev", "smooth_chebyshev")
PARETO_METHODS = ("auto", "closed_form", "mgda", "upgrad")


def _torchjd(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"torchjd.{module}")
    except ImportError as err:
        raise ImportError(f"this combiner uses torchjd ({err}): pip install 'motune[training]'") from None


def preference_vector(values: Sequence[float] | None, n: int, what: str) -> list[float]:
    if values is None:
        return [1.0] * n
    values = [float(v) for v in values]
    if len(values) != n or any(not v >= 0 for v in values) or not sum(values) > 0:
        raise SpecError(f"{what} needs {n} values >= 0, not all 0 (one per objective); got {values!r}")
    return values


class MultiObjectiveLoss:
    """The part every combiner shares: surrogates, attaching to a module, the epoch history."""

    def __init__(self, objectives: Sequence[str | Surrogate], *, temperature: float = 1.0) -> None:
        if not objectives:
            raise SpecError("a multi-objective training loss needs at least one objective")
        self.objectives = [surrogate(o, temperature=temperature) for o in objectives]
        self.names = [o.name for o in self.objectives]
        if len(set(self.names)) != len(self.names):
            raise SpecError(f"objectives repeat a surrogate: {self.names}")
        self.module: Any = None
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, float] = {}
        self._sums = [0.0] * len(self.names)
        self._steps = 0

    def attach(self, module: Any) -> MultiObjectiveLoss:
        """Bind the module being trained (the adversarial surrogate and Pareto weights need it)."""
        self.module = module
        return self

    def values(self, logits: Any, y: Any, groups: Any = None, *, inputs: Any = None) -> Any:
        """The surrogates on this minibatch, stacked (a tensor of ``len(objectives)`` values)."""
        import torch

        batch = Batch(logits=logits, y=y, groups=groups, inputs=inputs, module=self.module)
        return torch.stack([o(batch).float() for o in self.objectives])

    def __call__(self, logits: Any, y: Any, groups: Any = None, *, inputs: Any = None) -> Any:
        """The combined scalar for a minibatch. Without a graph (an evaluation under ``no_grad``) nothing
        is learned: no multiplier moves and the epoch's history does not count it."""
        values = self.values(logits, y, groups, inputs=inputs)
        combined = self.combine(values)
        seen = values.detach().cpu().tolist()
        self.last = dict(zip(self.names, seen))
        if values.requires_grad:
            self._sums = [s + v for s, v in zip(self._sums, seen)]
            self._steps += 1
        return combined

    def combine(self, values: Any) -> Any:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What the combiner adds to each epoch's history entry (multipliers, weights)."""
        return {}

    def end_epoch(self) -> dict[str, Any]:
        """Close an epoch: its surrogates' means and the combiner's state, appended to ``history``."""
        means = {n: s / self._steps for n, s in zip(self.names, self._sums)} if self._steps else {}
        entry = {"epoch": len(self.history) + 1, "steps": self._steps, "surrogates": means, **self.state()}
        self.history.append(entry)
        self._sums, self._steps = [0.0] * len(self.names), 0
        return entry


class Scalarized(MultiObjectiveLoss):
    """A preference vector ``weights`` applied as a ``linear``, ``chebyshev`` or ``smooth_chebyshev`` sum."""

    def __init__(self, objectives: Sequence[str | Surrogate], weights: Sequence[float] | None = None, *,
                 kind: str = "linear", mu: float = 0.05, temperature: float = 1.0) -> None:
        super().__init__(objectives, temperature=temperature)
        if kind not in SCALARIZATIONS:
            raise SpecError(f"kind must be one of {list(SCALARIZATIONS)}, got {kind!r}")
        if not mu > 0:
            raise SpecError(f"mu must be > 0, got {mu!r}")
        self.weights = preference_vector(weights, len(self.names), "weights")
        self.kind = kind
        self.mu = float(mu)

    def combine(self, values: Any) -> Any:
        import torch

        w = torch.tensor(self.weights, dtype=values.dtype, device=values.device)
        if self.kind == "linear":
            return (w * values).sum()
        if self.kind == "chebyshev":
            return (w * values).max()
        STCH = _torchjd("scalarization").STCH
        return STCH(self.mu, weights=w, reference=torch.zeros_like(values))(values)

    def state(self) -> dict[str, Any]:
        return {"weights": dict(zip(self.names, self.weights)), "kind": self.kind}


class FairnessPenalizedLoss(Scalarized):
    """Cross-entropy plus ``weight`` times a fairness gap: the linear scalarisation motune trained
    before the combiners (kept as the benchmark's baseline and for existing studies)."""

    PENALTIES = ("demographic_parity", "equalized_odds")

    def __init__(self, weight: float, *, penalty: str = "demographic_parity") -> None:
        if not weight >= 0:
            raise SpecError(f"weight must be >= 0, got {weight!r}")
        if penalty not in self.PENALTIES:
            raise SpecError(f"penalty must be one of {list(self.PENALTIES)}, got {penalty!r}")
        super().__init__(["cross_entropy", f"{penalty}_gap"], [1.0, float(weight)], kind="linear")
        self.weight, self.penalty = float(weight), penalty


class Constrained(MultiObjectiveLoss):
    """``primary`` minimised with each surrogate in ``bounds`` kept at or under its bound (dual ascent)."""

    def __init__(self, primary: str | Surrogate, bounds: dict[str | Surrogate, float], *, dual_lr: float = 1.0,
                 max_multiplier: float = 100.0, temperature: float = 1.0) -> None:
        if not bounds:
            raise SpecError("constrained needs at least one bound, e.g. bounds={'demographic_parity_gap': 0.05}")
        if not dual_lr > 0 or not max_multiplier > 0:
            raise SpecError(f"need dual_lr > 0 and max_multiplier > 0, got {dual_lr!r}, {max_multiplier!r}")
        super().__init__([primary, *bounds], temperature=temperature)
        self.bounds = [float(b) for b in bounds.values()]
        if any(not b >= 0 for b in self.bounds):
            raise SpecError(f"bounds must be >= 0 (the surrogates are), got {dict(zip(self.names[1:], self.bounds))}")
        self.dual_lr = float(dual_lr)
        self.max_multiplier = float(max_multiplier)
        self.multipliers = [0.0] * len(self.bounds)

    def combine(self, values: Any) -> Any:
        import torch

        bounds = torch.tensor(self.bounds, dtype=values.dtype, device=values.device)
        lam = torch.tensor(self.multipliers, dtype=values.dtype, device=values.device)
        lagrangian = values[0] + (lam * (values[1:] - bounds)).sum()
        if not values.requires_grad:
            return lagrangian
        violation = (values[1:].detach() - bounds).cpu().tolist()  # projected dual ascent, after the step's value
        self.multipliers = [min(self.max_multiplier, max(0.0, m + self.dual_lr * v))
                            for m, v in zip(self.multipliers, violation)]
        return lagrangian

    def state(self) -> dict[str, Any]:
        return {"multipliers": dict(zip(self.names[1:], self.multipliers)),
                "bounds": dict(zip(self.names[1:], self.bounds))}


class Pareto(MultiObjectiveLoss):
    """A Pareto-gradient step: convex weights from the gradients' Gram matrix (see the module text)."""

    def __init__(self, objectives: Sequence[str | Surrogate], *, method: str = "auto",
                 preference: Sequence[float] | None = None, temperature: float = 1.0) -> None:
        super().__init__(objectives, temperature=temperature)
        if len(self.names) < 2:
            raise SpecError("a Pareto-gradient loss needs at least two objectives")
        if method not in PARETO_METHODS:
            raise SpecError(f"method must be one of {list(PARETO_METHODS)}, got {method!r}")
        if method == "closed_form" and len(self.names) != 2:
            raise SpecError("the closed-form weights are for two objectives; use method='mgda' or 'upgrad'")
        self.method = "closed_form" if method == "auto" and len(self.names) == 2 else (
            "upgrad" if method == "auto" else method)
        self.preference = preference_vector(preference, len(self.names), "preference")
        if min(self.preference) <= 0:
            raise SpecError(f"a Pareto-gradient preference needs values > 0 (leave an objective out instead), "
                            f"got {self.preference}")
        self.alphas: list[float] = [1.0 / len(self.names)] * len(self.names)
        self._alpha_sums = [0.0] * len(self.names)

    def combine(self, values: Any) -> Any:
        import torch

        if self.module is None:
            raise SpecError("a Pareto-gradient loss needs the module's parameters: call loss.attach(module) "
                            "(motune.models.torch.fit and motune.training.MultiObjectiveTrainer do)")
        params = [p for p in self.module.parameters() if p.requires_grad]
        p = torch.tensor(self.preference, dtype=values.dtype, device=values.device)
        # the min-norm point d of {g_i / p_i} meets d . g_i / p_i = c for every active objective, so objective i
        # falls at a rate proportional to p_i: a larger preference, a faster fall (UPGrad takes p as its own
        # pref_vector on the unscaled gradients)
        scaled = values if self.method == "upgrad" else values / p
        if not values.requires_grad:  # an evaluation pass (no graph): the last step's weights
            return (torch.tensor(self.alphas, dtype=values.dtype, device=values.device) * scaled).sum()
        rows = []
        for i in range(len(self.names)):
            grads = torch.autograd.grad(scaled[i], params, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(q)).reshape(-1).float()
                                   for g, q in zip(grads, params)]))
        jacobian = torch.stack(rows)
        alphas = self.weights(jacobian @ jacobian.T)
        self.alphas = alphas.cpu().tolist()
        self._alpha_sums = [s + a for s, a in zip(self._alpha_sums, self.alphas)]
        return (alphas.detach().to(values) * scaled).sum()

    def weights(self, gramian: Any) -> Any:
        """Convex weights for the rows of a Jacobian with Gram matrix ``gramian``."""
        import torch

        if self.method == "closed_form":
            (g11, g12), (_, g22) = gramian.tolist()
            denominator = g11 + g22 - 2 * g12
            a = 0.5 if denominator <= 1e-12 else min(1.0, max(0.0, (g22 - g12) / denominator))
            return torch.tensor([a, 1.0 - a], device=gramian.device)
        aggregation = _torchjd("aggregation")
        weighting = aggregation.MGDAWeighting() if self.method == "mgda" else aggregation.UPGradWeighting(
            pref_vector=torch.tensor(self.preference, dtype=torch.float64, device=gramian.device))
        w = weighting(gramian.double()).float().clamp_min(0)
        return w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1.0 / len(w))

    def state(self) -> dict[str, Any]:
        steps = max(self._steps, 1)
        return {"mean_weights": dict(zip(self.names, (s / steps for s in self._alpha_sums))),
                "method": self.method, "preference": dict(zip(self.names, self.preference))}

    def end_epoch(self) -> dict[str, Any]:
        entry = super().end_epoch()
        self._alpha_sums = [0.0] * len(self.names)
        return entry


def scalarized(objectives: Sequence[str | Surrogate], weights: Sequence[float] | None = None, *,
               kind: str = "linear", **options: Any) -> Scalarized:
    """A fixed-preference scalarisation (``linear``, ``chebyshev`` or ``smooth_chebyshev``)."""
    return Scalarized(objectives, weights, kind=kind, **options)


def constrained(primary: str | Surrogate, bounds: dict[str | Surrogate, float], **options: Any) -> Constrained:
    """MOPO-style: minimise ``primary`` with each surrogate of ``bounds`` at or under its bound."""
    return Constrained(primary, bounds, **options)


def pareto(objectives: Sequence[str | Surrogate], **options: Any) -> Pareto:
    """A Pareto-gradient combination (closed form for two objectives, UPGrad or MGDA for more)."""
    return Pareto(objectives, **options)
