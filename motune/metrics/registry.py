"""The metric registry.

A metric function has the signature ``fn(model, task, **options)`` and
returns either a mapping ``{name: float}`` or a :class:`Measurement`
(values plus JSON-able details such as a per-group table). It is registered
under every name it produces; a study asks for names, and each function runs
at most once per trial however many of its names are asked for.

Directions are not part of a metric: they belong to objectives.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from motune._schema import RESERVED_KEYS
from motune.errors import MetricError, SpecError, SpecTypeError, UnknownMetricError
from motune.models import Predictor


class Measurement(NamedTuple):
    """What a metric function measured: float values by name, plus JSON-able details."""

    values: dict[str, float]
    details: dict[str, Any] = {}


@dataclass(frozen=True)
class MetricGroup:
    """One registered metric function and the names it produces."""

    key: str
    produces: tuple[str, ...]
    fn: Callable[..., Mapping[str, float] | Measurement]
    binary_only: tuple[str, ...] = ()
    description: str = ""
    validate: Callable[..., None] | None = None  # checks option values before any trial runs
    static: bool = False  # measurable before training (latency, size): checked at step 0 by pruning

    def accepts(self, option: str) -> bool:
        """Whether the function takes keyword ``option`` (or any keyword)."""
        return _accepts(self.fn, option)

    def __call__(self, model: Any, task: Any, **options: Any) -> Measurement:
        out = self.fn(model, task, **options)
        measurement = out if isinstance(out, Measurement) else Measurement(dict(out), {})
        missing = set(self.produces) - set(measurement.values)
        if missing:
            raise MetricError(f"metric function {self.key!r} did not return {sorted(missing)}")
        values = {}
        for name in self.produces:
            try:
                values[name] = float(measurement.values[name])
            except (TypeError, ValueError):
                raise MetricError(
                    f"metric {name!r} returned {measurement.values[name]!r}, which is not a number"
                ) from None
        return Measurement(values, dict(measurement.details))



@functools.lru_cache(maxsize=256)
def _accepts(fn: Callable[..., Any], option: str) -> bool:
    parameters = inspect.signature(fn).parameters
    return option in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


_GROUPS: dict[str, MetricGroup] = {}
_BY_METRIC: dict[str, MetricGroup] = {}


def register_metric(
    produces: str | Iterable[str],
    fn: Callable[..., Any] | None = None,
    *,
    key: str | None = None,
    binary_only: Iterable[str] | bool = (),
    description: str = "",
    validate: Callable[..., None] | None = None,
    static: bool = False,
    replace: bool = False,
):
    """Register ``fn(model, task, **options)`` as the producer of ``produces``.

    Usable directly or as a decorator::

        @mt.register_metric("f1")
        def f1(model, task, *, split="valid"):
            X, y, _ = task.split(split)
            return {"f1": sklearn.metrics.f1_score(y, model.predict(X))}

    ``key`` names the function's options in ``Study(metric_options={key: {...}})``
    (default: the function's name). ``binary_only`` lists produced names that
    need a binary label (``True`` for all). A name already registered raises
    unless ``replace=True``. ``validate(**options)``, if given, raises ``ValueError``
    for bad option values when a study is defined, before any trial runs.
    ``static=True`` marks metrics measurable before training (latency, model
    size): pruning measures them at step 0.
    """
    names = (produces,) if isinstance(produces, str) else tuple(produces)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise SpecError(f"produces must be a non-empty metric name or names, got {produces!r}")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise SpecTypeError(f"a metric must be callable, got {type(func).__name__}")
        group_key = key or getattr(func, "__name__", names[0])
        if group_key in RESERVED_KEYS or group_key.startswith("user:"):
            raise SpecError(f"metric key {group_key!r} is reserved; pass key= with another name")
        if not replace:
            taken = [n for n in names if n in _BY_METRIC and _BY_METRIC[n].fn is not func]
            if taken:
                raise SpecError(
                    f"metric name(s) {taken} already registered by {_BY_METRIC[taken[0]].key!r}; "
                    "pass replace=True to override"
                )
            if group_key in _GROUPS and _GROUPS[group_key].fn is not func:
                raise SpecError(
                    f"metric key {group_key!r} is already used by the function producing "
                    f"{list(_GROUPS[group_key].produces)}; pass key= with another name"
                )
        binary = names if binary_only is True else tuple(binary_only or ())
        summary = description or (func.__doc__ or "").strip().split("\n")[0]
        group = MetricGroup(group_key, names, func, binary, summary, validate, static)
        for old in {_BY_METRIC[n].key for n in names if n in _BY_METRIC} | ({group_key} & set(_GROUPS)):
            _drop(old)
        _GROUPS[group_key] = group
        for n in names:
            _BY_METRIC[n] = group
        return func

    return decorate(fn) if fn is not None else decorate


def _drop(group_key: str) -> None:
    group = _GROUPS.pop(group_key, None)
    if group is not None:
        for n in group.produces:
            if _BY_METRIC.get(n) is group:
                del _BY_METRIC[n]


def unregister_metric(name: str) -> None:
    """Remove the function producing ``name`` (and every name it produces)."""
    _drop(group_for(name).key)


def known_metrics() -> list[str]:
    return sorted(_BY_METRIC)


def group_for(name: str) -> MetricGroup:
    """The registered function producing ``name``; a clear error when nothing does."""
    try:
        return _BY_METRIC[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_BY_METRIC), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownMetricError(
            f"no registered metric measures {name!r}{hint} Known metrics: {', '.join(known_metrics())}. "
            "Register your own with motune.register_metric."
        ) from None


def groups_for(names: Iterable[str]) -> list[MetricGroup]:
    """The distinct functions needed to measure ``names``, in first-asked order."""
    seen: dict[str, MetricGroup] = {}
    for n in names:
        g = group_for(n)
        seen.setdefault(g.key, g)
    return list(seen.values())


def measure(
    model: Any,
    task: Any,
    names: Iterable[str],
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    split: str | None = None,
) -> Measurement:
    """Run every function needed for ``names`` once; merge values and details.

    ``options`` maps a function's key to keyword arguments for it. Details are
    returned under the function's key; ``split`` is passed to every function
    that takes it, and ``asked`` (the names asked of it) to every function with that parameter. The model is wrapped in a
    :class:`motune.models.Predictor` so the functions share predictions.
    """
    options = options or {}
    names = list(names)
    model = model if isinstance(model, Predictor) else Predictor(model, task)
    values: dict[str, float] = {}
    details: dict[str, Any] = {}
    for group in groups_for(names):
        kwargs = dict(options.get(group.key, {}))
        if split is not None and group.accepts("split"):
            kwargs.setdefault("split", split)
        if "asked" in inspect.signature(group.fn).parameters:  # which of its names were asked (latency: p99)
            kwargs["asked"] = [n for n in names if n in group.produces]
        m = group(model, task, **kwargs)
        values.update(m.values)
        if m.details:
            details[group.key] = m.details
    return Measurement(values, details)


def non_finite(values: Mapping[str, float], names: Iterable[str]) -> list[str]:
    """Names among ``names`` whose value is NaN or infinite."""
    return [n for n in names if not math.isfinite(values[n])]
