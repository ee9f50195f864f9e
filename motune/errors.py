"""motune's one error family.

Every mistake a user can make, and every failure motune can name, is a
:class:`MotuneError`. Each kind is also the builtin exception it is, so code
that catches ``ValueError`` / ``TypeError`` / ``KeyError`` / ``RuntimeError``
keeps working (as scikit-learn's ``NotFittedError`` is also a ``ValueError``):

===========================  ==============================  ==========================================
kind                         also a                          raised when
===========================  ==============================  ==========================================
:class:`SpecError`           ``ValueError``                  a study definition cannot run, or does not
                                                             match the stored study it would resume
:class:`SpecTypeError`       ``TypeError``                   a study definition holds a value of the wrong
                                                             type (a task that is not a Task, ...)
:class:`UnknownMetricError`  ``ValueError`` (a SpecError)    a name that no registered metric measures
:class:`TaskError`           ``ValueError``                  data that cannot make a task (no rows, one
                                                             group in a split, a missing column ...)
:class:`StorageError`        ``ValueError``                  a storage that cannot be opened
:class:`StudyNotFoundError`  ``KeyError`` (a SpecError)       no study of that name in the storage
:class:`StudyFileError`      ``ValueError``                  a study file that cannot be loaded
:class:`OutputError`         ``OSError``                     a file motune was asked to write cannot be
                                                             written (a missing folder, no permission)
:class:`MetricError`         ``RuntimeError``                a metric that cannot be measured on a
                                                             trained model (the trial fails with it)
:class:`ArtifactError`       ``RuntimeError``                a trial's model cannot be had (not kept,
                                                             removed, missing, or corrupt)
:class:`SelectionError`      ``ValueError``                  nothing to choose from (no feasible front,
                                                             every candidate failed on test)
:class:`CallbackError`       ``RuntimeError``                a callback raised (the run stops; the trial
                                                             it was called for fails with the reason)
===========================  ==============================  ==========================================

The command line prints a :class:`MotuneError` as one line and exits with
status 2; any other exception is a bug in motune (or in user code) and keeps
its traceback. Messages say what was wrong, where, and what would be right.
"""

from __future__ import annotations


class MotuneError(Exception):
    """Base class of every error motune raises on purpose."""


class SpecError(MotuneError, ValueError):
    """A study definition that cannot run, or that does not match the stored study."""


class SpecTypeError(MotuneError, TypeError):
    """A study definition (or an argument) whose value has the wrong type."""


class UnknownMetricError(SpecError):
    """A study named a metric that nothing measures."""


class TaskError(MotuneError, ValueError):
    """Data that cannot make a task: no rows, a missing column, a split with a single group ..."""


class StorageError(MotuneError, ValueError):
    """A storage that cannot be opened."""


class StudyNotFoundError(SpecError, KeyError):
    """No study of that name in the storage (a ``KeyError``, and a :class:`SpecError`: the name was wrong)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StudyFileError(MotuneError, ValueError):
    """A study file that cannot be loaded (missing, a syntax error, raises on import, defines no study)."""


class OutputError(MotuneError, OSError):
    """A file or folder motune was asked to write cannot be written."""


class ArtifactError(MotuneError, RuntimeError):
    """A trial's model cannot be had: never kept, removed by the keep policy, missing from the artifact
    store, or corrupt (its hash differs from the one recorded when it was saved)."""


class SelectionError(MotuneError, ValueError):
    """A selection rule has nothing to choose from (no feasible trial on the front, every candidate
    failed on the test split, no decision yet)."""


class CallbackError(MotuneError, RuntimeError):
    """A callback raised; the run stops (the error it raised is this one's ``__cause__``)."""


class MetricError(MotuneError, RuntimeError):
    """A metric could not be measured on a trained model (the trial fails with this reason)."""


__all__ = [
    "ArtifactError",
    "CallbackError",
    "MetricError",
    "MotuneError",
    "OutputError",
    "SelectionError",
    "SpecError",
    "SpecTypeError",
    "StorageError",
    "StudyFileError",
    "StudyNotFoundError",
    "TaskError",
    "UnknownMetricError",
]
