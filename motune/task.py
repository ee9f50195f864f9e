"""Tasks: the data a study learns from.

A :class:`Task` holds stratified, seed-reproducible train / validation / test
splits of one table, the label (encoded as integers: ``0`` / ``1`` for a binary
task, ``1`` being the positive class) and one sensitive feature. Splits are
pandas objects; :meth:`Task.numeric` turns them into float32 matrices for torch
models with encoders fitted on the training split only.

A :class:`TextTask` holds labelled texts and, for group fairness, a
counterfactual probe set (the same sentence with only a group term changed).
Both answer ``split(name) -> (X, y, sensitive)`` and ``fairness_split(name)``
(the split where fairness is measured when metrics are measured on ``name``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from motune.errors import SpecTypeError, TaskError

SPLITS = ("train", "valid", "test")


class NumericSplits(NamedTuple):
    """Float32 feature matrices and int64 labels for each split (for torch models)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    encoder: ColumnTransformer

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Encode new rows with the encoder fitted on the training split."""
        return np.ascontiguousarray(self.encoder.transform(X), dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Task:
    """Train / validation / test splits of a labelled table with a sensitive feature.

    Build one with :meth:`Task.from_frame` (or a loader in :mod:`motune.data`).
    """

    name: str
    label: str
    sensitive: str
    classes: tuple[Any, ...]
    positive_label: Any
    X_train: pd.DataFrame
    y_train: pd.Series
    X_valid: pd.DataFrame
    y_valid: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    sensitive_train: pd.Series
    sensitive_valid: pd.Series
    sensitive_test: pd.Series
    seed: int
    fingerprint: str
    description: str = ""
    citation: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        label: str,
        sensitive: str,
        positive_label: Any = None,
        test_fraction: float = 0.2,
        validation_fraction: float = 0.2,
        seed: int = 0,
        drop_sensitive: bool = False,
        name: str = "frame",
        description: str = "",
        citation: str = "",
    ) -> Task:
        """Split ``frame`` into a task.

        Splits are stratified by label and sensitive group together (by label
        alone when a label-by-group cell is too small) and reproducible by
        ``seed``. ``test_fraction`` and ``validation_fraction`` are fractions of
        all rows. The sensitive column stays a feature unless
        ``drop_sensitive=True``. For a binary label, ``positive_label`` names
        the positive class; it may be left out when the labels are 0/1 or
        booleans.
        """
        if not isinstance(frame, pd.DataFrame):
            raise SpecTypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
        for what, column in (("label", label), ("sensitive", sensitive)):
            if column not in frame.columns:
                raise TaskError(
                    f"{what} column {column!r} is not in the frame; columns are {list(frame.columns)}"
                )
        if label == sensitive:
            raise TaskError("the label column cannot also be the sensitive column")
        if len(frame) == 0:
            raise TaskError("the frame has no rows; a task needs at least 20 to split three ways")
        for what, fraction in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
            if not 0.0 < fraction < 1.0:
                raise TaskError(f"{what} must be between 0 and 1 (exclusive), got {fraction!r}")
        if test_fraction + validation_fraction >= 0.9:
            raise TaskError(
                "test_fraction + validation_fraction must leave at least 10% of rows for training, "
                f"got {test_fraction} + {validation_fraction}"
            )
        if frame[label].isna().any():
            raise TaskError(
                f"label column {label!r} has {int(frame[label].isna().sum())} missing values; "
                "drop those rows first"
            )
        if frame[sensitive].isna().any():
            raise TaskError(
                f"sensitive column {sensitive!r} has {int(frame[sensitive].isna().sum())} missing values; "
                "drop those rows or fill them with an explicit group such as 'unknown'"
            )
        groups = frame[sensitive].unique()
        if len(groups) < 2:
            raise TaskError(
                f"sensitive column {sensitive!r} has a single group ({groups[0]!r}); "
                "fairness metrics need at least two groups"
            )

        y, classes, positive = _encode_label(frame[label], label, positive_label)
        X = frame.drop(columns=[label] + ([sensitive] if drop_sensitive else []))
        s = frame[sensitive].astype(str).rename(sensitive)
        n = len(frame)
        if n < 20:
            raise TaskError(f"frame has {n} rows; a task needs at least 20 to split three ways")

        strata = _strata(y, s, test_fraction, validation_fraction, n)
        idx = np.arange(n)
        rest, test_idx = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=strata
        )
        rel_valid = validation_fraction / (1.0 - test_fraction)
        train_idx, valid_idx = train_test_split(
            rest,
            test_size=rel_valid,
            random_state=seed,
            stratify=None if strata is None else strata[rest],
        )
        y_series = pd.Series(y, index=frame.index, name=label)

        def take(obj, rows):
            return obj.iloc[np.sort(rows)]

        for split_name, rows in (("train", train_idx), ("valid", valid_idx), ("test", test_idx)):
            check_split_groups(take(s, rows), split_name, sensitive, sizes=s.value_counts())
        fingerprint = _fingerprint(frame, label, sensitive, seed, test_fraction, validation_fraction, drop_sensitive)
        return cls(
            name=name,
            label=label,
            sensitive=sensitive,
            classes=classes,
            positive_label=positive,
            X_train=take(X, train_idx),
            y_train=take(y_series, train_idx),
            X_valid=take(X, valid_idx),
            y_valid=take(y_series, valid_idx),
            X_test=take(X, test_idx),
            y_test=take(y_series, test_idx),
            sensitive_train=take(s, train_idx),
            sensitive_valid=take(s, valid_idx),
            sensitive_test=take(s, test_idx),
            seed=seed,
            fingerprint=fingerprint,
            description=description,
            citation=citation,
        )

    # ------------------------------------------------------------------ read
    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        return self.n_classes == 2

    @property
    def groups(self) -> list[str]:
        return sorted(set(self.sensitive_train) | set(self.sensitive_valid) | set(self.sensitive_test))

    splits = SPLITS

    def fairness_split(self, name: str) -> str:
        """Where group fairness is measured for split ``name``: that split itself."""
        return name

    def split(self, name: str) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
        """``(X, y, sensitive)`` of split ``"train"``, ``"valid"`` or ``"test"``."""
        if name not in SPLITS:
            raise TaskError(f"unknown split {name!r}; expected one of {list(SPLITS)}")
        return (
            getattr(self, f"X_{name}"),
            getattr(self, f"y_{name}"),
            getattr(self, f"sensitive_{name}"),
        )

    @cached_property
    def numeric_columns(self) -> list[str]:
        return [c for c in self.X_train.columns if pd.api.types.is_numeric_dtype(self.X_train[c])
                and not pd.api.types.is_bool_dtype(self.X_train[c])]

    @cached_property
    def categorical_columns(self) -> list[str]:
        numeric = set(self.numeric_columns)
        return [c for c in self.X_train.columns if c not in numeric]

    def preprocessor(self) -> ColumnTransformer:
        """A fresh, unfitted scikit-learn transformer: numeric columns imputed
        (median) and standardised, categorical columns one-hot encoded (unknown
        categories ignored). Put it first in a pipeline fitted on the training split."""
        return ColumnTransformer(
            [
                ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), self.numeric_columns),
                (
                    "categorical",
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value="missing"),
                        OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
                    ),
                    self.categorical_columns,
                ),
            ],
            sparse_threshold=0.0,
            verbose_feature_names_out=False,
        )

    def numeric(self) -> NumericSplits:
        """Float32 matrices of every split for torch models.

        The encoder (:meth:`preprocessor`) is fitted on the training split
        only, then applied to validation and test. Computed once per task.
        """
        if "numeric" not in self._cache:
            encoder = self.preprocessor().fit(self.X_train)

            def enc(X):
                return np.ascontiguousarray(encoder.transform(X), dtype=np.float32)

            self._cache["numeric"] = NumericSplits(
                X_train=enc(self.X_train),
                y_train=np.array(self.y_train, dtype=np.int64),
                X_valid=enc(self.X_valid),
                y_valid=np.array(self.y_valid, dtype=np.int64),
                X_test=enc(self.X_test),
                y_test=np.array(self.y_test, dtype=np.int64),
                feature_names=list(encoder.get_feature_names_out()),
                encoder=encoder,
            )
        return self._cache["numeric"]

    def summary(self) -> dict[str, Any]:
        """Plain facts about the task, for provenance and reports."""
        return {
            "name": self.name,
            "label": self.label,
            "sensitive": self.sensitive,
            "classes": [str(c) for c in self.classes],
            "positive_label": None if self.positive_label is None else str(self.positive_label),
            "rows": {"train": len(self.y_train), "valid": len(self.y_valid), "test": len(self.y_test)},
            "groups": self.groups,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:  # keep the repr short: splits are large
        rows = "/".join(str(len(getattr(self, f"y_{s}"))) for s in SPLITS)
        return (
            f"Task(name={self.name!r}, label={self.label!r}, sensitive={self.sensitive!r}, "
            f"classes={list(self.classes)!r}, rows train/valid/test={rows})"
        )


def check_split_groups(sensitive: pd.Series, split: str, column: str, *, sizes: pd.Series | None = None) -> None:
    """Every split needs at least two groups: with one, group gaps are 0 by definition and every trial
    would look fair (equalized odds 0.0 and "feasible"). Raises :class:`~motune.errors.TaskError`."""
    present = sorted(set(map(str, sensitive)))
    if len(present) >= 2:
        return
    counts = "" if sizes is None else "; rows per group: " + ", ".join(f"{g} {n}" for g, n in sizes.items())
    raise TaskError(
        f"split {split!r} has a single group ({present[0] if present else 'none'!r}) of sensitive feature "
        f"{column!r}{counts}. Fairness needs at least two groups in every split: give the smaller groups more "
        "rows, merge groups, or change test_fraction / validation_fraction"
    )


def _encode_label(y: pd.Series, label: str, positive_label: Any) -> tuple[np.ndarray, tuple, Any]:
    values = pd.unique(y)
    if len(values) < 2:
        raise TaskError(f"label column {label!r} has a single class ({values[0]!r}); nothing to learn")
    if len(values) > 2:
        if positive_label is not None:
            raise TaskError(
                f"positive_label={positive_label!r} given but label column {label!r} has "
                f"{len(values)} classes; positive_label is for binary labels only"
            )
        classes = tuple(sorted(values, key=str))
        codes = {c: i for i, c in enumerate(classes)}
        return y.map(codes).to_numpy(dtype=np.int64), classes, None
    if positive_label is None:
        as_set = {bool(v) if isinstance(v, (bool, np.bool_)) else v for v in values}
        if as_set <= {0, 1}:  # 0/1, 0.0/1.0, False/True
            positive_label = next(v for v in values if v == 1)
        else:
            raise TaskError(
                f"label column {label!r} has classes {sorted(map(str, values))}; "
                "pass positive_label= naming the positive one"
            )
    if positive_label not in set(values):
        raise TaskError(
            f"positive_label={positive_label!r} is not a value of label column {label!r}; "
            f"its values are {sorted(map(str, values))}"
        )
    negative = next(v for v in values if v != positive_label)
    return (y == positive_label).to_numpy(dtype=np.int64), (negative, positive_label), positive_label


def _strata(y, s, test_fraction, validation_fraction, n):
    """Label x group strata when every cell can be split three ways, else label, else None."""
    smallest_split = min(test_fraction, validation_fraction, 1 - test_fraction - validation_fraction)
    for strata in (np.char.add(y.astype(str), "|" + s.to_numpy().astype(str)), y.astype(str)):
        _, counts = np.unique(strata, return_counts=True)
        if counts.min() * smallest_split >= 1.0 and counts.min() >= 3:
            return strata
    return None


def _fingerprint(frame: pd.DataFrame, *settings: Any) -> str:
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(repr(list(frame.columns)).encode())
    digest.update(repr(settings).encode())
    return "sha256:" + digest.hexdigest()[:16]


PROBE = "counterfactual"  # the probe measured with the validation split
PROBE_TEST = "counterfactual_test"  # held-out probe instances, measured with the test split


@dataclass(frozen=True, eq=False)
class TextTask:
    """Text classification with group fairness measured on a counterfactual probe set.

    The labelled texts (``X_*`` frames with a ``text`` column) carry no group; fairness is
    measured on the probe: sentences made from templates in which only a group term (a
    name, an identity term) changes, each row with its label, its group and its
    ``instance`` (rows of one instance differ only in the group term). The probe's
    instances are split like the texts: ``"counterfactual"`` goes with the validation split
    (model selection), ``"counterfactual_test"`` with the test split (held out).
    Build one with :meth:`TextTask.from_frames` or :func:`motune.data.sentiment_task`.
    """

    name: str
    sensitive: str
    classes: tuple[Any, ...]
    positive_label: Any
    X_train: pd.DataFrame
    y_train: pd.Series
    X_valid: pd.DataFrame
    y_valid: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    X_probe: pd.DataFrame
    y_probe: pd.Series
    sensitive_probe: pd.Series
    X_probe_test: pd.DataFrame
    y_probe_test: pd.Series
    sensitive_probe_test: pd.Series
    seed: int
    fingerprint: str
    description: str = ""
    citation: str = ""
    label: str = "label"
    splits = (*SPLITS, PROBE, PROBE_TEST)

    @classmethod
    def from_frames(
        cls,
        texts: pd.DataFrame,
        probe: pd.DataFrame,
        *,
        name: str,
        sensitive: str = "group",
        classes: tuple[Any, ...] = ("negative", "positive"),
        validation_fraction: float = 0.2,
        test_fraction: float = 0.2,
        probe_test_fraction: float = 0.5,
        seed: int = 0,
        description: str = "",
        citation: str = "",
    ) -> TextTask:
        """``texts``: columns ``text`` and ``label`` (0 / 1); ``probe``: ``text``, ``label``,
        ``group`` and ``instance``. Texts are split stratified by label, seeded; the probe's
        instances are split seeded, ``probe_test_fraction`` of them held out for the test split."""
        for frame, what, columns in ((texts, "texts", ("text", "label")),
                                     (probe, "probe", ("text", "label", "group", "instance"))):
            if not isinstance(frame, pd.DataFrame):
                raise SpecTypeError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise TaskError(f"{what} lacks column(s) {missing}; it needs {list(columns)}")
            labels = set(pd.unique(frame["label"]))
            if not labels <= {0, 1}:
                raise TaskError(f"{what} labels must be 0 / 1, got {sorted(map(str, labels))[:5]}")
        if len(classes) != 2:
            raise TaskError(f"classes names the two labels 0 and 1, got {classes!r}")
        if probe["group"].nunique() < 2:
            raise TaskError("the probe needs at least two groups to compare")
        if not (0 < validation_fraction < 1 and 0 <= test_fraction < 1 and validation_fraction + test_fraction < 1):
            raise TaskError("need 0 < validation_fraction, 0 <= test_fraction, and their sum < 1; got "
                             f"{validation_fraction}, {test_fraction}")
        texts = texts[["text", "label"]].reset_index(drop=True)
        rest, test = (train_test_split(texts, test_size=test_fraction, stratify=texts["label"], random_state=seed)
                      if test_fraction else (texts, texts.iloc[:0]))
        train, valid = train_test_split(rest, test_size=validation_fraction / (1 - test_fraction),
                                        stratify=rest["label"], random_state=seed)
        probe = probe.reset_index(drop=True)
        instances = pd.unique(probe["instance"])
        n_test = int(round(probe_test_fraction * len(instances)))
        if not 0 < probe_test_fraction < 1 or not 1 <= n_test < len(instances):
            raise TaskError(f"probe_test_fraction={probe_test_fraction} must leave at least one of the probe's "
                             f"{len(instances)} instances on each side")
        held_out = set(np.random.default_rng(seed).choice(instances, size=n_test, replace=False).tolist())
        in_test = probe["instance"].isin(held_out)
        probe_valid, probe_test = probe[~in_test].reset_index(drop=True), probe[in_test].reset_index(drop=True)
        for split_name, part in ((PROBE, probe_valid), (PROBE_TEST, probe_test)):
            check_split_groups(part["group"], split_name, sensitive, sizes=probe["group"].value_counts())

        def xy(frame):
            return frame[["text"]].reset_index(drop=True), frame["label"].astype("int64").reset_index(drop=True)

        (X_train, y_train), (X_valid, y_valid), (X_test, y_test) = xy(train), xy(valid), xy(test)
        return cls(
            name=name, sensitive=sensitive, classes=tuple(classes), positive_label=classes[1],
            X_train=X_train, y_train=y_train, X_valid=X_valid, y_valid=y_valid, X_test=X_test, y_test=y_test,
            X_probe=probe_valid[["text", "instance"]], y_probe=probe_valid["label"].astype("int64"),
            sensitive_probe=probe_valid["group"].astype(str).rename(sensitive),
            X_probe_test=probe_test[["text", "instance"]], y_probe_test=probe_test["label"].astype("int64"),
            sensitive_probe_test=probe_test["group"].astype(str).rename(sensitive),
            seed=seed, fingerprint=_fingerprint(pd.concat([texts, probe], ignore_index=True),
                                                validation_fraction, test_fraction, probe_test_fraction, seed),
            description=description, citation=citation,
        )

    @property
    def n_classes(self) -> int:
        return 2

    @property
    def is_binary(self) -> bool:
        return True

    @property
    def groups(self) -> list[str]:
        return sorted(set(self.sensitive_probe) | set(self.sensitive_probe_test))

    def split(self, name: str) -> tuple[pd.DataFrame, pd.Series, pd.Series | None]:
        """``(X, y, sensitive)``: ``"train"``, ``"valid"``, ``"test"`` (no groups: ``None``),
        ``"counterfactual"`` or ``"counterfactual_test"`` (the probe's halves, with groups)."""
        if name == PROBE:
            return self.X_probe, self.y_probe, self.sensitive_probe
        if name == PROBE_TEST:
            return self.X_probe_test, self.y_probe_test, self.sensitive_probe_test
        if name not in SPLITS:
            raise TaskError(f"unknown split {name!r}; expected one of {list(self.splits)}")
        return getattr(self, f"X_{name}"), getattr(self, f"y_{name}"), None

    def fairness_split(self, name: str) -> str:
        """Where group fairness is measured (the texts have no groups): the held-out probe for the
        test split, the other probe instances for any other."""
        return PROBE_TEST if name == "test" else PROBE

    def texts(self, name: str) -> list[str]:
        return self.split(name)[0]["text"].astype(str).tolist()

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "sensitive": self.sensitive,
            "classes": [str(c) for c in self.classes],
            "positive_label": str(self.positive_label),
            "rows": {s: len(self.split(s)[1]) for s in self.splits},
            "groups": self.groups,
            "instances": {PROBE: int(self.X_probe["instance"].nunique()),
                          PROBE_TEST: int(self.X_probe_test["instance"].nunique())},
            "seed": self.seed,
            "fingerprint": self.fingerprint,
        }

    def __repr__(self) -> str:
        rows = "/".join(str(len(self.split(s)[1])) for s in self.splits)
        return (f"TextTask(name={self.name!r}, sensitive={self.sensitive!r}, groups={self.groups!r}, "
                f"rows train/valid/test/counterfactual/counterfactual_test={rows})")
