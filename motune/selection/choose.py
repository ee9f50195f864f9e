"""Choosing a configuration by a stated rule, on values with their intervals.

``mt.select(result, mt.rules.knee())`` chooses among the front's trials: on
their confirmed test values when every front trial has been confirmed
(:func:`motune.confirm`), leaving out the ones that fail a constraint on the
test split; otherwise on their validation values. Each value carries its
interval where it has one (confirmed values: bootstrap intervals; latency,
on either split: the order-statistic interval of its percentile) and a flag
where it should not be trusted as it is (a latency run flagged noisy).

It returns a :class:`Choice`: the chosen trial, the values it was chosen on,
the rule and its sentence, the metrics that decided it, every other
candidate with how it compares, the candidates that cannot be told from the
chosen one on what decided it (their intervals overlap on every deciding
metric), and the flagged values that decided (which
:func:`motune.selection.decision.decide` refuses unless they are accepted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from motune.errors import SelectionError, SpecTypeError
from motune.metrics.registry import group_for
from motune.results import Result
from motune.selection.rules import Candidate, Chosen, Rule


@dataclass(frozen=True)
class Choice:
    """What a rule chose, on which values, why, and the alternatives."""

    study: str
    trial: int
    rule: str
    rule_params: dict[str, Any]
    reason: str
    values_used: str  # "test" or "validation"
    values: dict[str, float]
    alternatives: list[dict[str, Any]]  # trial, values, difference from the chosen one, why left out (if it was)
    result: Result = field(repr=False, compare=False)
    deciding: tuple[str, ...] = ()  # the metrics the rule decided on
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # the chosen values' intervals
    indistinguishable: list[int] = field(default_factory=list)  # overlapping intervals on every deciding metric
    not_compared: list[str] = field(default_factory=list)  # deciding metrics without intervals to compare
    flagged: dict[int, dict[str, str]] = field(default_factory=dict)  # trial -> deciding metric -> why flagged
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)  # the chosen latency values: interval, flag, load

    def __str__(self) -> str:
        return f"trial {self.trial} of {self.study} by {self.rule} on {self.values_used} values: {self.reason}"


def _is_latency(metric: str) -> bool:
    try:
        return group_for(metric).key == "latency"
    except Exception:  # noqa: BLE001  (a metric registered by a study that is not loaded here)
        return False


LATENCY_RUNS = {"latency_p50_ms": ("batch_1", "p50"), "latency_p95_ms": ("batch_1", "p95"),
                "latency_p99_ms": ("batch_1", "p99"), "batch_latency_p50_ms": ("batch", "p50"),
                "batch_latency_p95_ms": ("batch", "p95")}


def latency_facts(details: dict[str, Any] | None, values: dict[str, Any], *, quiet: dict[str, Any] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """For each latency value: its interval, whether its run was flagged noisy (and why), the host's load
    and speed while it ran; ``details``: the latency run's record (a trial's or a confirmation's)."""
    out: dict[str, dict[str, Any]] = {}
    if not details:
        return out
    for metric, value in values.items():
        if not _is_latency(metric) or value is None:
            continue
        run, q = LATENCY_RUNS.get(metric, (None, None))
        stats = details.get(run) or {} if run else {}
        low, high = stats.get(f"{q}_ci_low_ms"), stats.get(f"{q}_ci_high_ms")
        out[metric] = {"value": value, "low": low, "high": high, "noisy": bool(details.get("noisy")),
                       "flags": list(details.get("flags") or []),
                       "load_average": details.get("load_average_before"),
                       "load_average_after": details.get("load_average_after"),
                       "speed": details.get("speed"), "quiet": quiet}
    return out


def _candidate(record: Any, confirmed: bool, names: list[str]) -> tuple[Candidate, dict[str, Any]]:
    if confirmed:
        entries = record.confirmation["values"]
        values = {n: v["value"] for n, v in entries.items() if v.get("value") is not None}
        intervals = {n: (v["low"], v["high"]) for n, v in entries.items()
                     if v.get("low") is not None and v.get("high") is not None}
        facts = latency_facts(record.confirmation.get("latency"), values, quiet=record.confirmation.get("quiet"))
        reasons = []
        if record.confirmation.get("latency_flagged"):
            reasons += list((record.confirmation.get("latency") or {}).get("flags") or []) or ["flagged noisy"]
            if (record.confirmation.get("latency") or {}).get("others_running"):
                reasons.append("trials of the study were running while it was re-timed")
    else:
        values = {n: record.metrics.get(n) for n in names if record.metrics.get(n) is not None}
        facts = latency_facts(record.attrs.get("latency"), values)
        intervals = {m: (f["low"], f["high"]) for m, f in facts.items() if f["low"] is not None
                     and f["high"] is not None}
        reasons = list((record.attrs.get("latency") or {}).get("flags") or []) if \
            (record.attrs.get("latency") or {}).get("noisy") else []
    flags = {m: "; ".join(reasons) for m in facts} if reasons else {}
    return Candidate(record.number, values, intervals, flags), facts


def candidates_of(result: Result) -> tuple[list[Candidate], list[dict[str, Any]], str, dict[int, dict[str, Any]]]:
    """``(candidates, left out, "test" | "validation", latency facts by trial)`` of a result's front (see the
    module docstring)."""
    front = [r for r in result.records() if r.on_front]
    if not front:
        raise SelectionError(f"study {result.name!r} has no feasible trial on its front to choose from")
    names = list(dict.fromkeys([o.metric for o in result.objectives] + [c.metric for c in result.constraints]
                               + result.extra_metrics))
    confirmed = all(r.confirmation for r in front)
    chosen, left_out, facts = [], [], {}
    for r in front:
        candidate, facts[r.number] = _candidate(r, confirmed, names)
        if confirmed and r.confirmation.get("fails_on_test"):
            left_out.append({"trial": r.number, "values": dict(candidate.values),
                             "left_out": "fails on test: " + ", ".join(r.confirmation["failed_constraints"])})
            continue
        chosen.append(candidate)
    if not chosen:
        raise SelectionError(f"every front trial of study {result.name!r} fails a constraint on the test split: "
                             "nothing to choose; see the confirmation")
    return chosen, left_out, "test" if confirmed else "validation", facts


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def select(result: Result, rule: Rule) -> Choice:
    """Choose one front trial of ``result`` by ``rule`` (from :mod:`motune.selection.rules`)."""
    if not isinstance(result, Result):
        raise SpecTypeError(f"select needs a motune Result (study.optimize, mt.load_study, mt.confirm), "
                            f"got {type(result).__name__}")
    if not isinstance(rule, Rule):
        raise SpecTypeError(f"rule must be one of mt.rules (knee(), lexicographic(...), weighted(...), "
                            f"best_within(...)), got {type(rule).__name__}")
    candidates, left_out, used, facts = candidates_of(result)
    answer = rule.choose(candidates, result.objectives, result.constraints)
    if not isinstance(answer, Chosen):  # a rule of one's own: (index, sentence)
        answer = Chosen(answer[0], answer[1], tuple(o.metric for o in result.objectives))
    chosen = candidates[answer.index]
    deciding = tuple(answer.deciding)
    not_compared = [m for m in deciding if m not in chosen.intervals
                    or any(m not in c.intervals for c in candidates if c.number != chosen.number)]
    alternatives, ties = [], []
    for c in candidates:
        if c.number == chosen.number:
            continue
        difference = {n: c.values[n] - chosen.values[n] for n in chosen.values if c.values.get(n) is not None}
        tied = bool(deciding) and all(m in c.intervals and m in chosen.intervals
                                      and _overlap(c.intervals[m], chosen.intervals[m]) for m in deciding)
        if tied:
            ties.append(c.number)
        alternatives.append({"trial": c.number, "values": dict(c.values), "difference": difference,
                             "intervals": {m: list(v) for m, v in c.intervals.items()},
                             "indistinguishable": tied, "left_out": None})
    alternatives += left_out
    flagged = {c.number: {m: c.flags[m] for m in deciding if m in c.flags} for c in candidates}
    flagged = {n: f for n, f in flagged.items() if f}
    return Choice(result.name, chosen.number, rule.name, rule.params(), answer.reason, used, dict(chosen.values),
                  alternatives, result, deciding=deciding, intervals=dict(chosen.intervals),
                  indistinguishable=ties, not_compared=not_compared, flagged=flagged,
                  latency=facts.get(chosen.number, {}))


__all__ = ["Choice", "candidates_of", "latency_facts", "select"]
