"""Checking a decision on new data: does the chosen model still keep its constraints?

``mt.check(result, data)`` (``motune check NAME --data new.csv``) loads the
decision's model from its artifact (hash checked), reads the new rows with
the study's recorded schema (the same label and its classes, the same
sensitive column, every feature column, no category the training data never
had: a clear error names what differs), measures the decision's objectives,
constraints and extra metrics on them with bootstrap intervals (latency only
when asked, re-timed), and compares with the values the decision rests on
(its confirmed test values, else validation):

- a constraint is broken when its new value breaks the bound;
- a metric has moved when it changed by more than its tolerance (absolute,
  ``tolerance`` = 0.05 by default; latency relative, 25 %);
- data drift is reported beside the metrics: the label rate and the group
  shares of the new rows against the training split, and a population
  stability index per feature (numeric columns in the training split's
  deciles, categorical ones by category). A feature is "shifted" when its
  index is above 0.2 (the usual rule of thumb, meant for large samples) and
  above what two samples of these sizes reach by chance (99 % level; a few
  hundred new rows reach 0.2 by chance alone). A shift alone does not fail
  the check unless ``fail_on_drift``.

The verdict is ``"pass"`` or ``"fail"`` with the reasons; each check is stored
with the study (``motune:check:<time>:<id>``, with the data's fingerprint,
rows and source) and read back by :meth:`motune.Result.checks`. With
``constraints_of`` (another version of the study) the decision is judged
against that version's constraints instead: an old decision under a new
bound.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.util
import math
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from motune import _pareto, _schema
from motune.errors import MotuneError, SpecError, TaskError
from motune.metrics.intervals import bootstrap_intervals
from motune.metrics.latency import LatencyOptions
from motune.metrics.registry import group_for, measure
from motune.results import Result
from motune.spec import Constraint
from motune.task import Task

TOLERANCE = 0.05  # absolute change allowed of a metric in [0, 1]
LATENCY_TOLERANCE = 0.25  # relative change allowed of a latency or throughput
PSI_SHIFT = 0.2  # population stability index above which a feature is "shifted"


def read_data(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """New rows from a DataFrame, a ``.csv`` / ``.parquet`` file, or ``file.py:function`` (a function
    returning a DataFrame; the file's folder is on ``sys.path`` while it runs); returns the frame and a
    description of where it came from. Anything unreadable is a :class:`~motune.errors.TaskError`."""
    if isinstance(source, pd.DataFrame):
        return source, "a DataFrame"
    text = str(source)
    if ".py:" in text:
        path, _, function = text.rpartition(":")
        if not Path(path).is_file():
            raise SpecError(f"no Python file {path!r} (from --data {text!r})")
        folder = str(Path(path).resolve().parent)
        sys.path.insert(0, folder)
        try:
            spec = importlib.util.spec_from_file_location(f"motune_check_data_{uuid.uuid4().hex[:6]}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            make = getattr(module, function, None)
            if not callable(make):
                raise SpecError(f"{path} has no function {function!r}")
            frame = make()
        except MotuneError:
            raise
        except Exception as e:  # the user's code: say where it failed, as a bad input
            raise TaskError(f"{text} failed: {type(e).__name__}: {e}") from e
        finally:
            sys.path.remove(folder)
        if not isinstance(frame, pd.DataFrame):
            raise SpecError(f"{text} returned {type(frame).__name__}, not a pandas DataFrame")
        return frame, text
    path = Path(text)
    if not path.is_file():
        raise SpecError(f"no data file {text!r}; give a .csv or .parquet file, or file.py:function")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".gz", ".txt"):
        raise SpecError(f"{text}: read .csv or .parquet files (or file.py:function), not {path.suffix!r}")
    try:
        return (pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)), str(path)
    except Exception as e:  # a file pandas cannot parse is bad input, not a broken model
        raise TaskError(f"cannot read {text}: {type(e).__name__}: {e}") from e


def new_rows_task(task: Any, frame: pd.DataFrame, *, source: str = "new data") -> Any:
    """``task`` with its test split replaced by ``frame`` read with the task's schema (everything else,
    the training split included, stays: encoders are fitted on it). Raises
    :class:`~motune.errors.TaskError` naming what differs from the study's data."""
    if not isinstance(task, Task):
        raise SpecError("checks read tabular tasks (label, sensitive column, feature columns); this study's "
                        f"task is a {type(task).__name__}")
    if len(frame) == 0:
        raise TaskError(f"{source} has no rows")
    for what, column in (("label", task.label), ("sensitive", task.sensitive)):
        if column not in frame.columns:
            raise TaskError(f"{source} has no {what} column {column!r} (the study's); its columns are "
                            f"{list(frame.columns)}")
    missing = [c for c in task.X_train.columns if c not in frame.columns]
    if missing:
        raise TaskError(f"{source} lacks the study's feature column(s) {missing}")
    if frame[task.label].isna().any() or frame[task.sensitive].isna().any():
        raise TaskError(f"{source} has missing values in the label {task.label!r} or the sensitive column "
                        f"{task.sensitive!r}; drop those rows first")
    labels = frame[task.label]
    known = {str(c): i for i, c in enumerate(task.classes)}
    unknown = sorted({str(v) for v in labels} - set(known))
    if unknown:
        raise TaskError(f"{source}'s label {task.label!r} has value(s) {unknown} the study never had; its classes "
                        f"are {list(known)}")
    for column in task.numeric_columns:
        values = frame[column]
        bad = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()]
        if len(bad):
            raise TaskError(f"{source}'s numeric column {column!r} has non-numbers, e.g. {bad.iloc[0]!r}")
    new_categories = []
    for column in task.categorical_columns:
        seen = set(map(str, task.X_train[column].dropna())) | set(map(str, task.X_valid[column].dropna())) | \
            set(map(str, task.X_test[column].dropna()))
        extra = sorted(set(map(str, frame[column].dropna())) - seen)
        if extra:
            new_categories.append(f"{column}: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if new_categories:
        raise TaskError(f"{source} has categories the study's data never had ({'; '.join(new_categories)}): the "
                        "model has no encoding for them; map them to known categories or retrain")
    groups = sorted(set(map(str, frame[task.sensitive])))
    if len(groups) < 2:
        raise TaskError(f"{source} has a single group of {task.sensitive!r} ({groups}); group fairness needs two")
    present = sorted({str(v) for v in labels})
    if len(present) < len(known):
        raise TaskError(f"{source}'s label {task.label!r} has only {present} of the classes {list(known)}: balanced "
                        "accuracy and the true- and false-positive rates behind equalized odds cannot be measured "
                        "on it; check on rows with every class")
    X = frame[list(task.X_train.columns)].copy()
    for column in task.numeric_columns:
        X[column] = pd.to_numeric(X[column])
    y = labels.map(lambda v: known[str(v)]).astype(np.int64).rename(task.label)
    s = frame[task.sensitive].astype(str).rename(task.sensitive)
    fingerprint = "sha256:" + hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()
                                             ).hexdigest()[:16]
    return dataclasses.replace(task, X_test=X, y_test=y, sensitive_test=s, fingerprint=fingerprint, _cache={})


# ---------------------------------------------------------------- drift

def _shares(expected: pd.Series, actual: pd.Series, *, numeric: bool, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The shares of both samples in the expected sample's deciles (numeric; missing values a bin of
    their own) or in the categories of either."""
    if numeric:
        edges = np.unique(np.nanquantile(expected.astype(float), np.linspace(0, 1, bins + 1)))
        if len(edges) < 3:  # (nearly) constant in training: below, at and above its value(s)
            edges = np.array([edges[0], np.nextafter(edges[-1], np.inf)])
            edges = np.concatenate([[-np.inf], edges, [np.inf]])
        else:
            edges[0], edges[-1] = -np.inf, np.inf

        def shares(x: pd.Series) -> np.ndarray:
            values = x.astype(float)
            counts = np.histogram(values[~np.isnan(values)], bins=edges)[0]
            return np.append(counts, np.isnan(values).sum()) / max(len(values), 1)
    else:
        categories = sorted(set(map(str, expected.fillna("<missing>"))) | set(map(str, actual.fillna("<missing>"))))

        def shares(x: pd.Series) -> np.ndarray:
            counts = x.fillna("<missing>").astype(str).value_counts()
            return np.array([counts.get(c, 0) for c in categories], dtype=float) / max(len(x), 1)
    return shares(expected), shares(actual)


def _psi(e: np.ndarray, a: np.ndarray) -> float:
    e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def _by_chance(e: np.ndarray, a: np.ndarray, n_expected: int, n_actual: int, level: float) -> float:
    from scipy.stats import chi2

    occupied = int(np.count_nonzero((e > 0) | (a > 0)))
    if occupied < 2:
        return 0.0
    return float(chi2.ppf(level, occupied - 1) * (1 / max(n_expected, 1) + 1 / max(n_actual, 1)))


def psi(expected: pd.Series, actual: pd.Series, *, numeric: bool, bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected``: sum of (a - e) ln(a / e) over the
    expected deciles (numeric) or categories, shares floored at 1e-4."""
    return _psi(*_shares(expected, actual, numeric=numeric, bins=bins))


def psi_noise(expected: pd.Series, actual: pd.Series, *, numeric: bool, bins: int = 10, level: float = 0.99) -> float:
    """The PSI two samples of these sizes reach by chance alone with probability ``1 - level``: with no
    shift, PSI / (1/n + 1/m) is about chi-squared with (occupied bins - 1) degrees of freedom. At 120 new
    rows and 10 bins that is about 0.24, above the 0.2 rule of thumb, which is meant for large samples."""
    return _by_chance(*_shares(expected, actual, numeric=numeric, bins=bins), len(expected), len(actual), level)


def drift(task: Any, new: Any) -> dict[str, Any]:
    """Label rate, group shares and per-feature PSI of the new rows (``new``'s test split) against the
    training split; a feature is ``shifted`` when its PSI is above both :data:`PSI_SHIFT` and what the
    two sample sizes reach by chance (:func:`psi_noise`)."""
    positive = 1 if task.is_binary else None
    out: dict[str, Any] = {}
    if positive is not None:
        out["label_rate"] = {"train": float((task.y_train == positive).mean()),
                             "new": float((new.y_test == positive).mean())}
        positives = new.y_test.groupby(new.sensitive_test.to_numpy()).apply(lambda y: int((y == positive).sum()))
        out["groups_without_positives"] = sorted(str(g) for g, n in positives.items() if n == 0)
    train_groups = task.sensitive_train.value_counts(normalize=True)
    new_groups = new.sensitive_test.value_counts(normalize=True)
    out["group_shares"] = {str(g): {"train": float(train_groups.get(g, 0.0)), "new": float(new_groups.get(g, 0.0))}
                           for g in sorted(set(train_groups.index) | set(new_groups.index), key=str)}
    numeric = set(task.numeric_columns)
    scores, noise = {}, {}
    for c in task.X_train.columns:  # the shares once per feature, for the index and its chance level
        shares = _shares(task.X_train[c], new.X_test[c], numeric=c in numeric, bins=10)
        scores[c] = _psi(*shares)
        noise[c] = _by_chance(*shares, len(task.X_train), len(new.X_test), 0.99)
    out["psi"] = {c: round(v, 4) for c, v in sorted(scores.items(), key=lambda kv: -kv[1])}
    out["psi_by_chance"] = {c: round(noise[c], 4) for c in out["psi"]}
    out["shifted"] = [c for c, v in scores.items() if v > max(PSI_SHIFT, noise[c])]
    return out


# ---------------------------------------------------------------- the check

def _number(value: Any) -> float | None:
    """A finite float, or None (not measured, NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _same_family(result: Result, other: Result) -> None:
    """``constraints_of`` must be a motune version of the same study on the same data."""
    if other.foreign:
        raise SpecError(f"--constraints-of {other.name!r}: not a motune study, so it states no constraints")
    family, others = result.info.get("family", result.name), other.info.get("family", other.name)
    if others != family:
        raise SpecError(f"--constraints-of {other.name!r} is a version of {others!r}, not of {family!r}")
    if other.info.get("data_fingerprint") != result.info.get("data_fingerprint"):
        raise SpecError(f"--constraints-of {other.name!r} was run on other data than {result.name!r}; its "
                        "constraints judge other rows")


def check(
    result: Result,
    data: str | Path | pd.DataFrame,
    *,
    decision: int | None = None,
    task: Any = None,
    tolerance: float = TOLERANCE,
    tolerances: dict[str, float] | None = None,
    latency: bool = False,
    fail_on_drift: bool = False,
    constraints_of: Result | None = None,
    n_boot: int = 100,
    confidence: float = 0.95,
    seed: int = 0,
    store: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Check decision ``decision`` (default: the current one) of ``result`` on new data; returns the check
    record (stored with the study unless ``store=False``). See the module docstring. ``progress(line)`` is
    told each step (k of n) with the time it took so far."""
    chosen = result.pick_decision(decision)
    if not 0 < tolerance < math.inf:
        raise SpecError(f"tolerance must be a positive number, got {tolerance!r}")
    if constraints_of is not None:
        _same_family(result, constraints_of)
    frame, source = read_data(data)
    task = task if task is not None else result.task()
    new = new_rows_task(task, frame, source=source)
    model = chosen.load_model()
    judge = constraints_of if constraints_of is not None else result
    constraints: list[Constraint] = list(judge.constraints)
    names = list(dict.fromkeys([o.metric for o in result.objectives] + [c.metric for c in constraints]
                               + list(result.extra_metrics)))
    skipped = [] if latency else [n for n in names if group_for(n).key == "latency"]
    names = [n for n in names if n not in skipped]
    options = dict(result.info.get("metric_options") or {})
    say = _Steps(progress, 3, f"checking decision {chosen.number} (trial {chosen.trial}) on {len(frame)} rows")
    with warnings.catch_warnings():  # a resample (or a shifted sample) may lack a class: sklearn says so each time
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        say("measuring " + ", ".join(names) + (" (latency: a timed run, up to about "
                                                f"{_latency_bound_s(options):.0f} s)" if not skipped and
                                                any(group_for(n).key == "latency" for n in names) else ""))
        measured = measure(model, new, names, options=options, split="test")
        say(f"{n_boot} bootstrap resamples for the intervals")
        intervals = bootstrap_intervals(model, new, names, split="test", n_boot=n_boot, confidence=confidence,
                                        seed=seed)
    recorded = chosen.test or {}
    directions = {o.metric: o.direction for o in result.objectives}
    values: dict[str, Any] = {}
    reasons: list[str] = []
    for name in names:
        new_value = _number(measured.values.get(name))
        before = recorded.get(name, {}).get("value") if name in recorded else chosen.validation.get(name)
        before = _number(before)
        low, high = intervals.get(name, (None, None))
        allowed = (tolerances or {}).get(name, tolerance)
        relative = group_for(name).key == "latency"
        if relative and not (tolerances or {}).get(name):
            allowed = LATENCY_TOLERANCE
        change = None if before is None or new_value is None else new_value - before
        moved = change is not None and (abs(change) > (allowed * abs(before) if relative else allowed))
        direction = directions.get(name)
        worse = moved and direction is not None and _pareto.worse_change(change, direction)
        values[name] = {"recorded": before, "value": new_value, "low": _number(low), "high": _number(high),
                        "change": change, "tolerance": allowed, "relative": relative, "moved": bool(moved),
                        "worse": bool(worse)}
        if worse:  # an objective that got better by more than the tolerance is reported, not failed
            reasons.append(f"{name} moved by {change:+.4g} (recorded {before:.4g}, now {new_value:.4g}; tolerance "
                           f"{allowed:g}{' of the recorded value' if relative else ''})")
        if new_value is None and name in directions:
            reasons.append(f"{name} could not be measured on {source}")
    kept = {}
    not_checked = [f"{c} (latency: pass --latency)" for c in constraints if c.metric in skipped]
    for c in constraints:
        if c.metric in skipped:
            continue
        entry = values.get(c.metric)
        if entry is None or entry["value"] is None:
            reasons.append(f"constraint {c} not checked: {c.metric} could not be measured on {source}")
            continue
        violation = c.violation(entry["value"])
        kept[c.key] = {"metric": c.metric, "op": c.op, "bound": c.bound, "value": entry["value"],
                       "violation": violation, "kept": bool(c.kept(entry["value"])),
                       "kept_at_interval_end": c.kept_at_interval_end(entry.get("low"), entry.get("high"))}
        if c.broken(entry["value"]):
            reasons.append(f"constraint {c} broken: {c.metric} = {entry['value']:.4g}")
    say("drift of the features and groups")
    shift = drift(task, new)
    say.done()
    if fail_on_drift and shift["shifted"]:
        reasons.append(f"data shifted (population stability index > {PSI_SHIFT}): {', '.join(shift['shifted'])}")
    now = _dt.datetime.now(_dt.timezone.utc)
    record = {
        "at": now.isoformat(timespec="seconds"),
        "study": result.name,
        "decision": chosen.number,
        "decision_current": chosen.current,  # whether it was the current decision when checked
        "trial": chosen.trial,
        "spec_version": chosen.spec_version or result.version,
        "constraints_of": None if constraints_of is None else constraints_of.name,
        "constraints_version": judge.version,
        "not_checked": not_checked,
        "not_measured": [f"{n} (latency: pass --latency)" for n in skipped],
        "data": {"source": source, "rows": int(len(frame)), "fingerprint": new.fingerprint},
        "values": values,
        "constraints": kept,
        "drift": shift,
        "n_boot": n_boot,
        "confidence": confidence,
        "fail_on_drift": fail_on_drift,
        "verdict": "fail" if reasons else "pass",
        "reasons": reasons,
    }
    record = _schema.jsonable(record)  # NaN as null, whether stored or printed
    if store:
        key = _schema.decision_key(now, uuid.uuid4().hex[:8])
        _schema.store_study_attrs(result.study, _schema.check_attrs(record, key=key))
        result.refresh()
        record = next(c for c in result.checks() if c["id"] == key)
    return record


class _Steps:
    """``progress`` lines "step k of n: what (x s so far)" and a last "done in x s"."""

    def __init__(self, progress: Callable[[str], None] | None, total: int, what: str) -> None:
        self.progress, self.total, self.what = progress, total, what
        self.k, self.began = 0, time.monotonic()

    def __call__(self, step: str) -> None:
        self.k += 1
        if self.progress is not None:
            so_far = time.monotonic() - self.began
            self.progress(f"{self.what}: step {self.k} of {self.total}, {step}"
                          + (f" ({so_far:.1f} s so far)" if self.k > 1 else ""))

    def done(self) -> None:
        if self.progress is not None:
            self.progress(f"{self.what}: done in {time.monotonic() - self.began:.1f} s")


def _latency_bound_s(options: dict[str, Any]) -> float:
    """About how long a latency measurement may take at most: the batch-1 and the batch run's time limits
    and the throughput run."""
    latency = LatencyOptions.of(options.get("latency"))
    return 2 * latency.max_time_s + latency.throughput_s
