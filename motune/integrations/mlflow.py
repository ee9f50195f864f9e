"""MLflow tracking for motune studies: one MLflow run per trial, and one per decision.

``pip install "motune[mlflow]"`` (``mlflow-skinny``: the tracking client,
with SQLAlchemy stores through the SQLAlchemy that Optuna already needs)::

    from motune.integrations.mlflow import MLflowCallback, log_decision

    tracking = MLflowCallback("sqlite:///mlflow.db")        # or an MLflow server's URL
    result = study.optimize(n_trials=40, callbacks=[tracking])
    decision = mt.decide(...)
    log_decision(decision, "sqlite:///mlflow.db")

Each finished trial (complete, pruned or failed) becomes a run named
``trial <n>`` in the experiment named after the study (``experiment=`` to
choose): its params; every metric; each constraint's value as
``constraint:<key>``; each report as metric history (``report:<metric>`` at
its step); tags ``motune.study``, ``motune.trial``, ``motune.state``,
``motune.feasible``, ``motune.pruned_by`` and the package versions of its
provenance; and as files ``provenance.json`` and, when measured,
``fairness_by_group.json`` (the per-group table). The run starts and ends
when the trial did (its duration is the trial's). A trial whose model was
kept links to it: tags ``motune.model.artifact_id``, ``motune.model.sha256``
and ``motune.model.kind``, and ``model.json`` (load it with
``motune export``, which checks the hash; the model itself stays in the
study's artifact store, not copied into MLflow). A decision becomes a run
``decision <n>`` with the chosen trial, rule, reason, rationale and who
decided, and the whole record as ``decision.json``. MLflow metric names
allow letters, digits and ``_ - . / :`` and spaces: a constraint's comparison
is spelled out (``constraint:accuracy ge 0.8``, ``... le 0.8``) and other
characters are replaced by ``_``.

The hooks run in the process that ran the trial (each worker of a pool logs
its own trials). MLflow 3's plain file store is refused by default: use a
``sqlite:///`` URI or a server. With a SQLite store, MLflow writes the runs'
files under ``./mlruns`` of the working folder (MLflow's default artifact
root for a new experiment). Tracking never stops a study: a trial that cannot
be logged (a server down, a locked SQLite file) is a warning, and a run whose
logging failed half-way ends FAILED rather than staying open.
"""

from __future__ import annotations

import re
import time
import warnings
from typing import Any

from motune.run import Callback, StudyStart

_BAD = re.compile(r"[^\w\-./: ]")
_COMPARISONS = ((">=", " ge "), ("<=", " le "), ("==", " eq "), (">", " gt "), ("<", " lt "))


def _name(text: str) -> str:
    """An MLflow metric or param name: comparisons spelled out (``x >= 0.8`` -> ``x ge 0.8``, so that
    constraints ``x >= b`` and ``x <= b`` stay two metrics), other characters MLflow refuses as ``_``."""
    text = str(text)
    for sign, word in _COMPARISONS:
        text = text.replace(sign, word)
    return _BAD.sub("_", re.sub(" +", " ", text).strip())


def _client(tracking_uri: str | None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another worker created it meanwhile (RESOURCE_ALREADY_EXISTS)
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _filled(client: Any, run_id: str, fill: Any, status: str, end_time: int | None = None) -> None:
    """Run ``fill()`` on an open run and end it with ``status`` (at ``end_time``, ms since the epoch); if
    logging fails the run ends FAILED and the error is raised (the caller decides whether tracking may stop
    the study)."""
    try:
        fill()
    except BaseException:
        client.set_terminated(run_id, status="FAILED", end_time=end_time)
        raise
    client.set_terminated(run_id, status=status, end_time=end_time)


class MLflowCallback(Callback):
    """Log each finished trial as an MLflow run (see the module docstring)."""

    def __init__(self, tracking_uri: str | None = None, *, experiment: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._study: str | None = None
        self._experiment_id: str | None = None

    def on_study_start(self, info: StudyStart) -> None:
        self._study = info.name
        try:
            self._experiment_id = _experiment(_client(self.tracking_uri), self.experiment or info.name)
        except Exception as e:  # tracking must not stop a study: warn, and try again at the first trial
            warnings.warn(f"MLflow: cannot open experiment {self.experiment or info.name!r}: {e}", stacklevel=2)

    def on_trial_end(self, record: Any) -> None:
        try:
            self._log(record)
        except Exception as e:  # a tracking server's hiccup or a locked SQLite file: the trial stands
            warnings.warn(f"MLflow: trial {record.number} was not logged: {type(e).__name__}: {e}", stacklevel=2)

    def _log(self, record: Any) -> None:
        client = _client(self.tracking_uri)
        if self._experiment_id is None:
            self._experiment_id = _experiment(client, self.experiment or self._study or "motune")
        provenance = record.attrs.get("provenance") or {}
        tags = {"motune.study": self._study or "", "motune.trial": str(record.number), "motune.state": record.state,
                "motune.feasible": str(record.feasible), "mlflow.runName": f"trial {record.number}"}
        if record.pruned:
            tags["motune.pruned_by"] = f"{record.pruned.get('rule')} at step {record.pruned.get('step')}"
        if record.error:
            tags["motune.error"] = str(record.error)[:4000]
        tags |= {f"version.{k}": str(v) for k, v in (provenance.get("versions") or {}).items()}
        model = record.model or {}
        if model:  # a link to the kept model: the study's artifact store holds it under this id and hash
            tags |= {"motune.model.artifact_id": str(model.get("artifact_id")),
                     "motune.model.sha256": str(model.get("sha256")), "motune.model.kind": str(model.get("kind"))}
        ended_ms = int(1000 * time.time())  # the hook runs as the trial ends; its run spans the trial's duration
        started_ms = ended_ms - int(1000 * (record.duration_s or 0.0))
        run_id = client.create_run(self._experiment_id, start_time=started_ms, tags=tags).info.run_id
        from mlflow.entities import Metric, Param

        def fill() -> None:
            stamp = int(1000 * time.time())
            metrics = [Metric(_name(k), float(v), stamp, 0) for k, v in record.metrics.items()
                       if isinstance(v, (int, float)) and v == v]
            metrics += [Metric(_name(f"constraint:{k}"), float(v), stamp, 0) for k, v in record.violations.items()]
            metrics += [Metric(_name(f"report:{k}"), float(v), stamp, int(step))
                        for step, values in sorted(record.reports.items()) for k, v in values.items()
                        if isinstance(v, (int, float)) and v == v]
            params = [Param(_name(k), str(v)[:6000]) for k, v in record.params.items()]
            client.log_batch(run_id, metrics=metrics, params=params)
            if provenance:
                client.log_dict(run_id, provenance, "provenance.json")
            by_group = (record.attrs.get("fairness") or {}).get("by_group")
            if by_group:
                client.log_dict(run_id, {"by_group": by_group}, "fairness_by_group.json")
            if model:
                client.log_dict(run_id, {"study": self._study, "trial": record.number, **model}, "model.json")

        _filled(client, run_id, fill, "FINISHED" if record.state == "COMPLETE" else
                "KILLED" if record.state == "PRUNED" else "FAILED", end_time=ended_ms)


def log_decision(decision: Any, tracking_uri: str | None = None, *, experiment: str | None = None) -> str:
    """Log a :class:`motune.DecisionRecord` as an MLflow run; returns the run id."""
    client = _client(tracking_uri)
    experiment_id = _experiment(client, experiment or decision.study)
    tags = {"mlflow.runName": f"decision {decision.number}", "motune.study": decision.study,
            "motune.decision": str(decision.number), "motune.trial": str(decision.trial), "motune.rule": decision.rule,
            "motune.decided_by": decision.decided_by, "motune.decided_at": decision.decided_at,
            "motune.values_used": decision.values_used, "mlflow.note.content": f"{decision.reason}\n\n"
                                                                             f"Why: {decision.rationale}"}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    from mlflow.entities import Metric, Param

    def fill() -> None:
        stamp = int(1000 * time.time())
        values = decision.validation if decision.test is None else \
            {k: v.get("value") for k, v in decision.test.items() if isinstance(v, dict)}
        client.log_batch(run_id,
                         metrics=[Metric(_name(k), float(v), stamp, 0) for k, v in values.items()
                                  if isinstance(v, (int, float)) and v == v],
                         params=[Param(_name(k), str(v)[:6000]) for k, v in decision.params.items()])
        client.log_dict(run_id, decision.to_dict(), "decision.json")

    _filled(client, run_id, fill, "FINISHED")
    return run_id
