from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from motune.errors import TaskError
from motune.task import Task

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]
ADULT_CITATION = "Becker, B. & Kohavi, R. (1996). Adult. UCI Machine Learning Repository. https://doi.org/10.24432/C5XW20 (CC BY 4.0)"

GERMAN_COLUMNS = [
    "checking_status", "duration_months", "credit_history", "purpose", "credit_amount",
    "savings", "employment_since", "installment_rate", "personal_status_sex", "other_debtors",
    "residence_since", "property", "age", "other_installment_plans", "housing",
    "existing_credits", "job", "num_dependents", "telephone", "foreign_worker", "credit",
]
GERMAN_CITATION = "Hofmann, H. (1994). Statlog (German Credit Data). UCI Machine Learning Repository. https://doi.org/10.24432/C5NC77 (CC BY 4.0)"
_GERMAN_SEX = {"A91": "male", "A92": "female", "A93": "male", "A94": "male", "A95": "female"}


def _locate(name: str, path: str | Path | None) -> Path:
    """The file ``name`` (or ``name.gz``) in ``path``, or the copy shipped in the package."""
    if path is None:
        packaged = resources.files("motune.data") / "files" / f"{name}.gz"
        return Path(str(packaged))
    folder = Path(path)
    if folder.is_file():
        return folder
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"neither {name} nor {name}.gz found in {folder}")


def adult_frame(
    *, path: str | Path | None = None, source: Literal["packaged", "openml"] = "packaged"
) -> pd.DataFrame:
    """UCI Adult, train and test files together: 48,842 rows, label ``income`` (``>50K`` / ``<=50K``).

    Missing values (``?``) are NaN; ``fnlwgt`` (a census sampling weight, not a
    person's attribute) is dropped. ``path`` is a folder holding ``adult.data``
    and ``adult.test`` (plain or gzipped); ``source="openml"`` downloads the
    same data through :func:`fairlearn.datasets.fetch_adult` instead.
    """
    if source == "openml":
        if path is not None:
            raise TaskError("pass either path= or source='openml', not both")
        from fairlearn.datasets import fetch_adult

        frame = fetch_adult(as_frame=True).frame.rename(columns={"class": "income"})
    elif source == "packaged":
        parts = []
        for name, skip in (("adult.data", 0), ("adult.test", 1)):
            parts.append(
                pd.read_csv(
                    _locate(name, path), header=None, names=ADULT_COLUMNS, skiprows=skip,
                    skipinitialspace=True, na_values="?", compression="infer",
                )
            )
        frame = pd.concat(parts, ignore_index=True)
    else:
        raise TaskError(f"source must be 'packaged' or 'openml', got {source!r}")
    frame = frame.dropna(subset=["income"])
    frame["income"] = frame["income"].astype(str).str.strip().str.rstrip(".")
    return frame.drop(columns=["fnlwgt"]).reset_index(drop=True)


def adult(
    *,
    sensitive: Literal["sex", "race"] = "sex",
    max_rows: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
    path: str | Path | None = None,
    source: Literal["packaged", "openml"] = "packaged",
) -> Task:
    """UCI Adult as a task: predict ``income > 50K``; ``sensitive`` is ``"sex"`` or ``"race"``.

    ``max_rows`` draws a seeded random subsample first (for quick studies).
    """
    frame = adult_frame(path=path, source=source)
    if sensitive not in ("sex", "race"):
        raise TaskError(f"sensitive must be 'sex' or 'race' for Adult, got {sensitive!r}")
    frame = _subsample(frame, max_rows, seed)
    return Task.from_frame(
        frame, label="income", sensitive=sensitive, positive_label=">50K",
        test_fraction=test_fraction, validation_fraction=validation_fraction, seed=seed,
        name="adult", description="UCI Adult (1994 US census extract): income > 50K",
        citation=ADULT_CITATION,
    )


def german_credit_frame(*, path: str | Path | None = None) -> pd.DataFrame:
    """Statlog German Credit: 1,000 rows, label ``credit`` (``good`` / ``bad``).

    Adds ``sex`` (from attribute 9, personal status and sex) and ``age_group``
    (``under_25`` / ``25_and_over``), the two sensitive features commonly used.
    ``path`` is a folder holding ``german.data`` (plain or gzipped), or the file.
    """
    frame = pd.read_csv(
        _locate("german.data", path), header=None, names=GERMAN_COLUMNS, sep=r"\s+", compression="infer"
    )
    frame["credit"] = frame["credit"].map({1: "good", 2: "bad"})
    if frame["credit"].isna().any():
        raise TaskError("german.data: the last column must be 1 (good) or 2 (bad)")
    frame["sex"] = frame["personal_status_sex"].map(_GERMAN_SEX)
    frame["age_group"] = np.where(frame["age"] < 25, "under_25", "25_and_over")
    return frame


def german_credit(
    *,
    sensitive: Literal["sex", "age_group"] = "sex",
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.2,
    path: str | Path | None = None,
) -> Task:
    """German Credit as a task: predict good credit; ``sensitive`` is ``"sex"`` or ``"age_group"``.

    The other derived group column is dropped so it does not duplicate the raw one.
    """
    if sensitive not in ("sex", "age_group"):
        raise TaskError(f"sensitive must be 'sex' or 'age_group' for German Credit, got {sensitive!r}")
    frame = german_credit_frame(path=path)
    frame = frame.drop(columns=["age_group" if sensitive == "sex" else "sex"])
    return Task.from_frame(
        frame, label="credit", sensitive=sensitive, positive_label="good",
        test_fraction=test_fraction, validation_fraction=validation_fraction, seed=seed,
        name="german_credit", description="Statlog German Credit: good credit risk",
        citation=GERMAN_CITATION,
    )


def _subsample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    if max_rows is None or max_rows >= len(frame):
        return frame
    if max_rows < 100:
        raise TaskError(f"max_rows must be at least 100, got {max_rows}")
    return frame.sample(n=max_rows, random_state=seed).reset_index(drop=True)
