"""A decision as files: the chosen model, its decision record and a model card.

``export_decision(result, folder, decision=None)`` writes into ``folder``
(created; it must be empty):

- ``model.tar``: the chosen trial's model archive (:mod:`motune.models.persist`),
  its sha256 checked against the one recorded when it was saved;
- ``decision.json``: the :class:`~motune.results.DecisionRecord`;
- ``MODEL_CARD.md``: what the model is for in this study, how it was chosen,
  its values on validation and on the held-out test split with intervals,
  per-group rates, the data and what produced it.

``load_exported(folder, sha256=None)`` loads the model back after checking the
archive's hash: against ``sha256`` when given (take it from the study:
``mt.load_study(name).decision.artifact["sha256"]``), which guards against a
swapped file; else against ``decision.json`` beside it, which detects
corruption only (whoever can change the archive can change that file too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from motune.errors import ArtifactError, OutputError
from motune.models import persist
from motune.results import DecisionRecord, Result, interval_text
from motune.run import download_archive


def export_decision(result: Result, folder: str | Path, *, decision: int | None = None) -> list[Path]:
    """Write decision ``decision`` (default: the current one) of ``result`` into ``folder``."""
    chosen = result.pick_decision(decision)
    if chosen.artifact is None:
        raise ArtifactError(f"decision {chosen.number} of {result.name!r} chose trial {chosen.trial}, whose model "
                            "was not kept")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputError(f"{str(folder)!r} exists and is not an empty folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot make the folder {str(folder)!r}: {err}") from None
    written = [folder / "model.tar", folder / "decision.json", folder / "MODEL_CARD.md"]
    try:
        download_archive(result, chosen.trial, written[0])
        written[1].write_text(chosen.to_json() + "\n")
        written[2].write_text(model_card(result, chosen))
    except BaseException:
        for path in written:  # no half-written export
            path.unlink(missing_ok=True)
        if created:
            folder.rmdir()
        raise
    return written


def load_exported(folder: str | Path, *, sha256: str | None = None, device: str | None = None) -> Any:
    """The model of an exported decision, after its archive's sha256 was checked (see the module docstring)."""
    folder = Path(folder)
    sha = sha256
    if sha is None:
        try:
            record = json.loads((folder / "decision.json").read_text())
        except (OSError, ValueError) as err:
            raise ArtifactError(f"{str(folder)!r} holds no readable decision.json ({err})") from None
        sha = (record.get("artifact") or {}).get("sha256")
    if not sha:
        raise ArtifactError(f"{str(folder / 'decision.json')!r} names no model archive")
    return persist.load_archive(folder / "model.tar", sha256=sha, what=f"the model exported to {str(folder)!r}",
                                device=device)


def _value(entry: Any) -> str:
    if isinstance(entry, dict):
        return interval_text(entry)
    if entry is None:
        return "n/a"
    return f"{entry:.4g}" if isinstance(entry, float) else str(entry)


def _interval_lines(decision: DecisionRecord) -> list[str]:
    lines = []
    if decision.deciding:
        lines.append(f"- Decided on: {', '.join(decision.deciding)}.")
    if decision.indistinguishable:
        lines.append(f"- Not to be told apart from it by their intervals on those: trials "
                     f"{', '.join(map(str, decision.indistinguishable))}.")
    if decision.not_compared:
        lines.append(f"- Not compared by interval (no interval on every candidate): {', '.join(decision.not_compared)}.")
    if decision.accepted_noisy:
        flagged = "; ".join(f"trial {n} {m}: {why}" for n, f in (decision.flagged or {}).items() for m, why in f.items())
        lines.append(f"- Decided on values flagged as noisy, accepted by {decision.decided_by}: {flagged}.")
    return lines


def _latency_lines(decision: DecisionRecord) -> list[str]:
    """Every latency value the decision used: its interval, its flag, the host's load and speed while it ran."""
    facts = decision.latency or {}
    if not facts:
        return []
    lines = ["", f"## Latency ({decision.values_used} values)", "",
             "| metric | value [interval] | run | load average (1, 5, 15 min) | host speed |", "| --- | --- | --- | --- | --- |"]
    for metric, f in facts.items():
        value = interval_text({"value": f["value"], "low": f.get("low"), "high": f.get("high")})
        run = ("flagged noisy: " + "; ".join(f.get("flags") or ["wide interval"])) if f.get("noisy") else "not flagged"
        load = ", ".join(f"{v:.2f}" for v in f.get("load_average") or []) or "n/a"
        speed = f.get("speed") or {}
        host = (f"reference {speed['reference_ms']:.4g} ms; {speed['normalised'].get(metric, float('nan')):.4g} "
                "references" if speed.get("reference_ms") else "n/a")
        lines.append(f"| {metric} | {value} | {run} | {load} | {host} |")
    return lines


def model_card(result: Result, decision: DecisionRecord) -> str:
    """A model card in Markdown (facts from storage only)."""
    info = result.info
    task = info.get("task", {})
    record = result.record(decision.trial)
    names = result.metric_columns()
    stated = decision.made_current
    currency = ("the study's current decision" + (f" (made current by {stated.get('by')} on {stated.get('at')}: "
                                                  f"{stated.get('why')})" if stated else "")
                if decision.current else "not the study's current decision")
    lines = [
        f"# Model card: {result.name}, trial {decision.trial}",
        "",
        f"Chosen by decision {decision.number} on {decision.decided_at} by {decision.decided_by}; {currency}.",
        "",
        "## Why this model",
        "",
        f"- Rule: `{decision.rule}` {json.dumps(decision.rule_params)}, on {decision.values_used} values: "
        f"{decision.reason}.",
        f"- Rationale: {decision.rationale}",
        f"- Alternatives on the front: {len(decision.alternatives)} "
        f"(trials {', '.join(str(a['trial']) for a in decision.alternatives) or 'none'}).",
        *_interval_lines(decision),
        "",
        "## What it was tuned for",
        "",
        "- Objectives: " + ", ".join(str(o) for o in result.objectives),
        "- Constraints: " + (", ".join(str(c) for c in result.constraints) or "none"),
        "",
        "## Values",
        "",
        "| metric | validation | test [interval] |",
        "| --- | --- | --- |",
    ]
    test = decision.test or {}
    for n in names:
        lines.append(f"| {n} | {_value(decision.validation.get(n))} | {_value(test.get(n))} |")
    lines += _latency_lines(decision)
    fairness = (record.confirmation or {}).get("fairness") or record.attrs.get("fairness")
    if fairness and fairness.get("by_group"):
        columns = [c for c in fairness["by_group"][0] if c != "group"]
        lines += ["", f"## Per group ({fairness.get('sensitive')}, {fairness.get('split')} split)", "",
                  "| group | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 1) + "|"]
        for row in fairness["by_group"]:
            lines.append(f"| {row['group']} | " + " | ".join(_value(row.get(c)) for c in columns) + " |")
    prov = decision.provenance or {}
    lines += [
        "",
        "## Data",
        "",
        f"- Task {task.get('name')}: label {task.get('label')} (positive {task.get('positive_label')}), "
        f"sensitive feature {task.get('sensitive')} {task.get('groups')}; rows train/valid/test "
        f"{(task.get('rows') or {}).get('train')}/{(task.get('rows') or {}).get('valid')}/"
        f"{(task.get('rows') or {}).get('test')}; data fingerprint {decision.data_fingerprint}.",
        "",
        "## What produced it",
        "",
        f"- Params: `{json.dumps(decision.params, default=str)}`",
        f"- Study spec {decision.spec_fingerprint}; motune {(prov.get('versions') or {}).get('motune')}, "
        f"git {prov.get('git_revision')}, seed {prov.get('seed')}, Python {prov.get('python')}.",
        f"- Model archive `model.tar`: {decision.artifact.get('kind')}, "
        f"{decision.artifact.get('size_bytes')} bytes, sha256 {decision.artifact.get('sha256')}. Load it with "
        "`mt.load_exported(folder, sha256=...)` with the hash from the study's storage, which checks it "
        "before anything in the archive is read.",
        "",
    ]
    return "\n".join(lines)
