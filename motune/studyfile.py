"""Study files: a Python file that defines :class:`motune.Study` objects at module level.

:func:`load` imports the file as a module (``importlib``), registered in
``sys.modules`` under its file name's stem (``studies/adult_mlp_pruned.py``
is module ``adult_mlp_pruned``; another name when that one is taken by a
different module), with the file's folder on ``sys.path`` while it runs, as
with ``python FILE``, so it can import modules beside it; its ``if __name__
== "__main__":`` block does not run. The file of the script that is running
(``python FILE``) is not imported again: its running module is used, so a
script that runs a study and then confirms it at module level (no
``__main__`` guard) does not run its study a second time. Because it is a real module, the
classes it defines pickle: a model built from them is kept as an artifact,
and loads again where the same file is importable (motune's own commands
import the study's recorded file first: :func:`ensure_importable`). A file is
imported once per process (again when it changed on disk, or with
``fresh=True``, as ``motune run`` asks: a run reads the file as it is then,
the environment it reads included).

:func:`studies_in_file` lists the studies it defines; :func:`task_of` finds a
stored study's task from the file its record names. A file that is missing,
does not parse, or raises while it runs is a
:class:`~motune.errors.StudyFileError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from motune.errors import MotuneError, SpecError, StudyFileError
from motune.spec import Study

_LOADED: dict[str, tuple[float, ModuleType]] = {}  # resolved path -> (its mtime when imported, the module)
_LOADING: dict[str, ModuleType] = {}  # resolved path -> its module, while its import runs


def _module_name(path: Path) -> str:
    """The file's stem, unless another module (not this file) already has that name."""
    stem = path.stem
    taken = sys.modules.get(stem)
    if stem.isidentifier() and (taken is None or getattr(taken, "__file__", None) == str(path)):
        try:
            found = importlib.util.find_spec(stem) if taken is None else None
        except (ImportError, ValueError):
            found = None
        if found is None or found.origin == str(path):
            return stem
    return f"motune_study_{stem if stem.isidentifier() else 'file'}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def load(path: str | Path, *, fresh: bool = False) -> ModuleType:
    """The study file at ``path`` as an imported module (see the module docstring); ``fresh``: imported
    again even when this process imported it before."""
    path = Path(path)
    if not path.is_file():
        raise StudyFileError(f"study file {str(path)!r} not found")
    path = path.resolve()
    running = _running(path)
    if running is not None:  # this very file is running (python FILE, or a load of it not finished yet):
        return running  # importing it again would run its module level, study included, once more (and again)
    mtime = path.stat().st_mtime
    cached = _LOADED.get(str(path))
    if cached is not None and cached[0] == mtime and not fresh:
        return cached[1]
    name = _module_name(path)
    folder = str(path.parent)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, folder)
    _LOADING[str(path)] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise StudyFileError(f"{e.filename or path}, line {e.lineno}: {type(e).__name__}: {e.msg}") from None
    except ImportError as e:
        sys.modules.pop(name, None)
        raise StudyFileError(f"{path}{_user_line(e, folder)} could not import {e.name or 'a module'}: {e}") from None
    except MotuneError as e:
        sys.modules.pop(name, None)
        raise StudyFileError(f"{path}{_user_line(e, folder)}: {e}") from None
    except Exception as e:
        sys.modules.pop(name, None)
        raise StudyFileError(f"{path}{_user_line(e, folder)} raised {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(folder)
        _LOADING.pop(str(path), None)
    _LOADED[str(path)] = (mtime, module)
    return module


def _running(path: Path) -> ModuleType | None:
    """The module of the file at ``path`` if it is running now: the script ``python FILE`` runs
    (``__main__``), or a study file whose import has not finished (its module level calls motune)."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file and Path(main_file).resolve() == path:
        return main
    return _LOADING.get(str(path))


def studies_in_file(path: str | Path, *, fresh: bool = False) -> list[Study]:
    """The :class:`motune.Study` objects the study file at ``path`` defines at module level (``fresh``: see
    :func:`load`)."""
    return [v for v in vars(load(path, fresh=fresh)).values() if isinstance(v, Study)]


def ensure_importable(result: Any) -> None:
    """Import the file a stored study's record names (if it is still there), so that models built from the
    classes it defines can be unpickled; nothing when there is none."""
    source = (getattr(result, "info", None) or {}).get("source_file")
    if source and Path(source).is_file():
        try:
            load(source)
        except StudyFileError:
            pass  # the model may not need it; if it does, unpickling says which class it lacks


def task_of(result: Any) -> Any:
    """A stored study's task (its data): from its definition when the result has one, else from the study
    file its record names (``source_file``), checked against the stored data fingerprint."""
    if getattr(result, "spec", None) is not None:
        return result.spec.task
    source = result.info.get("source_file")
    if not source:
        raise SpecError(f"study {result.name!r} does not record the file that defines it; pass its task "
                        "(task=...), or the study file (--study-file FILE)")
    defined = studies_in_file(source)
    found = [s for s in defined if s.name == result.name]
    if found:
        result.spec = found[0]
        return result.spec.task
    family = result.info.get("family", result.name)  # the file moved on to another version of the study
    expected = result.info.get("data_fingerprint")
    same_data = [s for s in defined if s.family == family and expected
                 and getattr(s.task, "fingerprint", None) == expected]
    if same_data:
        return same_data[0].task
    raise SpecError(f"{source} (the file recorded for study {result.name!r}) no longer defines it, nor another "
                    "version of it on the same data; pass its task, or the study file (--study-file FILE)")


def _user_line(error: BaseException, folder: str) -> str:
    """``, line N`` of the deepest frame in the study file's folder (where the user's code raised)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(folder)]
    return f" (line {frames[-1].lineno} of {Path(frames[-1].filename).name})" if frames else ""


__all__ = ["ensure_importable", "load", "studies_in_file", "task_of"]
