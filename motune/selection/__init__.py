"""Choosing a configuration by a stated rule, and recording the decision.

``mt.select(result, mt.rules.knee())`` chooses among the front's trials:
on their confirmed test values when every front trial has been confirmed
(:func:`motune.confirm`), leaving out the ones that fail a constraint on the
test split; otherwise on their validation values. It returns a
:class:`Choice`: the chosen trial, the values it was chosen on, the rule
and its sentence, and every other candidate with how it compares.
``mt.decide(choice, rationale=..., decided_by=...)`` stores a
:class:`motune.results.DecisionRecord` with the study (several per study;
the latest is current) and returns it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from motune import _schema, dashboard
from motune.errors import SelectionError, SpecTypeError
from motune.results import DecisionRecord, Result
from motune.selection import rules
from motune.selection.rules import Candidate, Rule


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

    def __str__(self) -> str:
        return f"trial {self.trial} of {self.study} by {self.rule} on {self.values_used} values: {self.reason}"


def candidates_of(result: Result) -> tuple[list[Candidate], list[dict[str, Any]], str]:
    """``(candidates, left out, "test" | "validation")`` of a result's front (see the module docstring)."""
    front = [r for r in result.records() if r.on_front]
    if not front:
        raise SelectionError(f"study {result.name!r} has no feasible trial on its front to choose from")
    names = list(dict.fromkeys([o.metric for o in result.objectives] + [c.metric for c in result.constraints]
                               + result.extra_metrics))
    confirmed = all(r.confirmation for r in front)
    chosen, left_out = [], []
    for r in front:
        if confirmed:
            values = {n: v["value"] for n, v in r.confirmation["values"].items()
                      if v.get("value") is not None}  # an unasked tail the test timing could not read is None
            if r.confirmation.get("fails_on_test"):
                left_out.append({"trial": r.number, "values": values,
                                 "left_out": "fails on test: " + ", ".join(r.confirmation["failed_constraints"])})
                continue
        else:
            values = {n: r.metrics.get(n) for n in names if r.metrics.get(n) is not None}
        chosen.append(Candidate(r.number, values))
    if not chosen:
        raise SelectionError(f"every front trial of study {result.name!r} fails a constraint on the test split: "
                             "nothing to choose; see the confirmation")
    return chosen, left_out, "test" if confirmed else "validation"


def select(result: Result, rule: Rule) -> Choice:
    """Choose one front trial of ``result`` by ``rule`` (from :mod:`motune.selection.rules`)."""
    if not isinstance(result, Result):
        raise SpecTypeError(f"select needs a motune Result (study.optimize, mt.load_study, mt.confirm), "
                            f"got {type(result).__name__}")
    if not isinstance(rule, Rule):
        raise SpecTypeError(f"rule must be one of mt.rules (knee(), lexicographic(...), weighted(...), "
                            f"best_within(...)), got {type(rule).__name__}")
    candidates, left_out, used = candidates_of(result)
    index, reason = rule.choose(candidates, result.objectives, result.constraints)
    chosen = candidates[index]
    alternatives = []
    for c in candidates:
        if c.number != chosen.number:
            difference = {n: c.values[n] - chosen.values[n] for n in chosen.values if c.values.get(n) is not None}
            alternatives.append({"trial": c.number, "values": dict(c.values), "difference": difference,
                                 "left_out": None})
    alternatives += left_out
    return Choice(result.name, chosen.number, rule.name, rule.params(), reason, used, dict(chosen.values),
                  alternatives, result)


def decide(choice: Choice, *, rationale: str, decided_by: str) -> DecisionRecord:
    """Record ``choice`` as the study's current decision; returns the stored record."""
    if not isinstance(choice, Choice):
        raise SpecTypeError(f"decide needs the Choice that mt.select returned, got {type(choice).__name__}")
    for what, text in (("rationale", rationale), ("decided_by", decided_by)):
        if not isinstance(text, str) or not text.strip():
            raise SpecTypeError(f"a decision needs a non-empty {what} (who decided, and why), got {text!r}")
    result = choice.result.refresh()
    record = result.record(choice.trial)
    now = _dt.datetime.now(_dt.timezone.utc)
    key = _schema.decision_key(now, uuid.uuid4().hex[:8])
    decision = DecisionRecord(
        number=0, study=result.name, trial=record.number, params=dict(record.params), rule=choice.rule,
        rule_params=choice.rule_params, reason=choice.reason, values_used=choice.values_used,
        validation=dict(record.metrics), test=(record.confirmation or {}).get("values"),
        alternatives=choice.alternatives, rationale=rationale.strip(), decided_by=decided_by.strip(),
        decided_at=now.isoformat(timespec="seconds"),
        spec_fingerprint=spec_fingerprint(result.info), data_fingerprint=result.info.get("data_fingerprint"),
        provenance=dict(record.attrs.get("provenance") or {}),
        artifact=None if record.model is None or record.model_removed is not None else dict(record.model),
        spec_version=result.version,
    )
    result.set_study_attrs(_schema.decision_attrs(decision.to_dict(), key=key))
    result.refresh()
    dashboard.save_study_note(result.study)  # optuna-dashboard's note names the current decision
    return next(d for d in result.decisions() if d.id == key)


def spec_fingerprint(info: dict[str, Any]) -> str:
    """A short hash of what makes trials comparable: objectives, constraints, data, split, metric options."""
    keys = ("objectives", "constraints", "data_fingerprint", "split", "metric_options")
    text = json.dumps({k: info.get(k) for k in keys}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = ["Choice", "candidates_of", "decide", "rules", "select", "spec_fingerprint"]
