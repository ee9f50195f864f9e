"""Recording a choice as a decision, and saying which decision is current.

``mt.decide(choice, rationale=..., decided_by=...)`` stores a
:class:`motune.results.DecisionRecord` with the study (several per study)
and returns it. It refuses a choice that a flagged value decided (a latency
run flagged noisy: the host was busy, or trials of the study ran) unless
``accept_noisy=True``; the record then says it was accepted. The record
carries what decided the choice, the candidates that could not be told from
the chosen one by their intervals, and, for every latency value it used,
the interval, the flag and the host's load.

The current decision is the latest one, until someone states otherwise:
``mt.make_current(result, number, why=..., by=...)`` (``motune decisions NAME
--current N --why ... --by ...``) records that decision ``number`` is current,
who said so, why and when (until a later decision is recorded); the history
of decisions and of these statements is kept.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from typing import Any

from motune import _schema, dashboard
from motune.errors import SelectionError, SpecTypeError
from motune.results import DecisionRecord, Result
from motune.selection.choose import Choice


def _words(what: str, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise SpecTypeError(f"a decision needs a non-empty {what} (who decided, and why), got {text!r}")
    return text.strip()


def flagged_text(flagged: dict[int, dict[str, str]]) -> str:
    return "; ".join(f"trial {n} {m} ({why})" for n, metrics in flagged.items() for m, why in metrics.items())


def decide(choice: Choice, *, rationale: str, decided_by: str, accept_noisy: bool = False) -> DecisionRecord:
    """Record ``choice`` as the study's current decision; returns the stored record (see the module docstring)."""
    if not isinstance(choice, Choice):
        raise SpecTypeError(f"decide needs the Choice that mt.select returned, got {type(choice).__name__}")
    rationale, decided_by = _words("rationale", rationale), _words("decided_by", decided_by)
    if choice.flagged and not accept_noisy:
        raise SelectionError(f"the choice rests on value(s) flagged as not to be trusted: {flagged_text(choice.flagged)}"
                             "; re-time them on a quiet host (motune confirm), or accept them (accept_noisy=True, "
                             "--accept-noisy) and the decision records it")
    result = choice.result.refresh()
    record = result.record(choice.trial)
    now = _dt.datetime.now(_dt.timezone.utc)
    key = _schema.decision_key(now, uuid.uuid4().hex[:8])
    decision = DecisionRecord(
        number=0, study=result.name, trial=record.number, params=dict(record.params), rule=choice.rule,
        rule_params=choice.rule_params, reason=choice.reason, values_used=choice.values_used,
        validation=dict(record.metrics), test=(record.confirmation or {}).get("values"),
        alternatives=choice.alternatives, rationale=rationale, decided_by=decided_by,
        decided_at=now.isoformat(timespec="seconds"),
        spec_fingerprint=spec_fingerprint(result.info), data_fingerprint=result.info.get("data_fingerprint"),
        provenance=dict(record.attrs.get("provenance") or {}),
        artifact=None if record.model is None or record.model_removed is not None else dict(record.model),
        spec_version=result.version, deciding=list(choice.deciding),
        indistinguishable=list(choice.indistinguishable), not_compared=list(choice.not_compared),
        flagged={str(n): f for n, f in choice.flagged.items()}, accepted_noisy=bool(choice.flagged),
        latency=choice.latency,
    )
    _schema.store_study_attrs(result.study, _schema.decision_attrs(decision.to_dict(), key=key))
    result.refresh()
    dashboard.save_study_note(result.study)  # optuna-dashboard's note names the current decision
    return next(d for d in result.decisions() if d.id == key)


def make_current(result: Result, number: int, *, why: str, by: str) -> DecisionRecord:
    """State that decision ``number`` of ``result`` is the current one (recorded with who, why and when; the
    history is kept); returns it."""
    why, by = _words("reason (why)", why), _words("name (by)", by)
    found = result.refresh().decisions()
    chosen = next((d for d in found if d.number == number), None)
    if chosen is None:
        raise SelectionError(f"study {result.name!r} has no decision {number}; it has {[d.number for d in found]}")
    now = _dt.datetime.now(_dt.timezone.utc)
    record = {"decision": chosen.id, "number": chosen.number, "why": why, "by": by,
              "at": now.isoformat(timespec="seconds")}
    _schema.store_study_attrs(result.study, _schema.current_attrs(record, key=_schema.decision_key(now, uuid.uuid4().hex[:8])))
    result.refresh()
    dashboard.save_study_note(result.study)
    return next(d for d in result.decisions() if d.number == number)


def spec_fingerprint(info: dict[str, Any]) -> str:
    """A short hash of what makes trials comparable: objectives, constraints, data, split, metric options."""
    keys = ("objectives", "constraints", "data_fingerprint", "split", "metric_options")
    text = json.dumps({k: info.get(k) for k in keys}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = ["decide", "flagged_text", "make_current", "spec_fingerprint"]
