"""The command line: ``motune run | front | report | studies``.

A :class:`~motune.errors.MotuneError` (a user mistake, or a failure motune can
name) is printed as one line and the command exits with status 2; anything
else keeps its traceback. User text (study names, params, error messages) is
printed as it is, never read as rich markup; storage passwords are hidden.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from motune.errors import MotuneError, OutputError, StudyFileError
from motune.run import load_study, open_storage
from motune.run.optimize import check_run_arguments
from motune.run.storage import redact_text, storage_name
from motune.spec import Study

app = typer.Typer(
    help="motune: multi-objective hyperparameter tuning with constraints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
if not out.is_terminal:  # a pipe or a file: do not squeeze wide tables into 80 columns
    out = Console(width=240)
err = Console(stderr=True)

STORAGE_HELP = "Optuna storage URL (default: $MOTUNE_STORAGE or sqlite:///motune.db)."


def _fail(message: str) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", redact_text(str(message))), highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _say(*parts: str | tuple[str, str]) -> None:
    """A line on stderr; plain strings are printed as they are (never as markup)."""
    err.print(Text.assemble(*parts), highlight=False, soft_wrap=True)


def load_studies(path: Path) -> list[Study]:
    """The :class:`motune.Study` objects a study file defines at module level.

    The file's folder is on ``sys.path`` while it runs, as with ``python FILE``,
    so it can import modules beside it. A file that is missing, does not parse, or raises
    while it runs is a :class:`~motune.errors.StudyFileError` naming the file and line.
    """
    if not path.is_file():
        raise StudyFileError(f"study file {str(path)!r} not found")
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        namespace = runpy.run_path(str(path), run_name="__motune_study__")
    except SyntaxError as e:
        raise StudyFileError(f"{e.filename or path}, line {e.lineno}: {type(e).__name__}: {e.msg}") from None
    except ImportError as e:
        raise StudyFileError(f"{path}{_user_line(e, folder)} could not import {e.name or 'a module'}: {e}") from None
    except MotuneError as e:
        raise StudyFileError(f"{path}{_user_line(e, folder)}: {e}") from None
    except Exception as e:
        raise StudyFileError(f"{path}{_user_line(e, folder)} raised {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(folder)
    return [v for v in namespace.values() if isinstance(v, Study)]


def _user_line(error: BaseException, folder: str) -> str:
    """``, line N`` of the deepest frame in the study file's folder (where the user's code raised)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(folder)]
    return f" (line {frames[-1].lineno} of {Path(frames[-1].filename).name})" if frames else ""


@app.command()
def run(
    file: Path = typer.Argument(..., help="A Python file that defines a motune.Study at module level."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Number of trials to run."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the file defines several."),
    n_jobs: int = typer.Option(1, "--n-jobs", help="Trials in parallel threads in this process."),
    heartbeat: Optional[float] = typer.Option(
        None, "--heartbeat", help="Seconds between a running trial's heartbeats (RDB storages); a trial with "
                                  "none for 3 intervals is failed as 'worker died' and retried. Default 10 "
                                  "(grace 30), or $MOTUNE_HEARTBEAT_S."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Run (or resume) the study defined in FILE, then print its front."""
    if trials is None and timeout is None:
        raise _fail("give --trials N or --timeout SECONDS")
    try:
        check_run_arguments(trials, timeout, n_jobs)
        studies = load_studies(file)
        if study_name is not None:
            studies = [s for s in studies if s.name == study_name]
        if not studies:
            raise StudyFileError(f"{file} defines no motune.Study" + (f" named {study_name!r}" if study_name else ""))
        if len(studies) > 1:
            raise StudyFileError(f"{file} defines several studies ({', '.join(s.name for s in studies)}); "
                                 "pick one with --study")
        study = studies[0]
        changes = {"storage": storage} if storage is not None else {}
        if heartbeat is not None:
            changes |= {"heartbeat_s": heartbeat, "heartbeat_grace_s": None}
        study = dataclasses.replace(study, **changes) if changes else study
        result = study.optimize(trials, timeout=timeout, n_jobs=n_jobs, show_progress=not quiet)
    except MotuneError as e:
        raise _fail(str(e)) from None
    if result.interrupted is not None:
        raise typer.Exit(code=130)
    _print_frame(result.front(), title=f"front of {result.name}")
    records = result.records()
    if records and not any(r.state == "COMPLETE" for r in records):
        first = next((r.error for r in records if r.error), None)
        raise _fail(f"no trial of {result.name!r} completed; the first error: {first}")


@app.command()
def front(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
) -> None:
    """Print the feasible Pareto front of a stored study."""
    if fmt not in ("table", "csv", "json"):
        raise _fail(f"--format must be table, csv or json, got {fmt!r}")
    try:
        result = load_study(name, storage=storage)
    except MotuneError as e:
        raise _fail(str(e)) from None
    frame = result.front()
    if fmt == "csv":
        typer.echo(frame.to_csv(index=False), nl=False)
    elif fmt == "json":
        typer.echo(frame.to_json(orient="records", indent=2))
    else:
        counts = result.summary()
        _print_frame(frame, title=f"front of {name}: {counts['on_front']} of {counts['trials']} trials "
                                  f"({counts['infeasible']} infeasible, {counts['failed']} failed, "
                                  f"{counts['pruned']} pruned)")


@app.command()
def report(
    name: str = typer.Argument(..., help="Study name."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="HTML file to write."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    png: bool = typer.Option(False, "--png", help="Also write each figure as a PNG into <output stem>_figures/ "
                                                  "(needs kaleido and a Chrome or Chromium)."),
) -> None:
    """Write a self-contained HTML report of a stored study (every figure that applies)."""
    from motune.viz.report import (
        PngExportError,
        export_pngs,
        report_figures,
        write_report,
    )

    try:
        _check_writable(output)
        result = load_study(name, storage=storage)
    except MotuneError as e:
        raise _fail(str(e)) from None
    figures = report_figures(result)
    path = write_report(result, output, figures=figures)
    _say(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if png and figures:
        folder = output.with_name(f"{output.stem}_figures")
        try:
            pngs = export_pngs(figures, folder)
        except PngExportError as e:
            raise _fail(f"no PNGs written (the HTML report is complete): {e}") from None
        _say(f"wrote {len(pngs)} PNG figure(s) to {folder}")


@app.command()
def studies(storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP)) -> None:
    """List the studies in a storage."""
    try:
        opened = open_storage(storage, must_exist=True)
        summaries = opened.get_all_studies()
    except MotuneError as e:
        raise _fail(str(e)) from None
    table = Table(title=Text(f"studies in {storage_name(storage)}"))
    for column in ("name", "trials", "objectives", "motune"):
        table.add_column(column)
    for s in summaries:
        attrs = s.user_attrs.get("motune")
        if attrs:
            objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in attrs["objectives"])
        else:
            objectives = ", ".join(d.name.lower() for d in s.directions)
        n_trials = opened.get_n_trials(opened.get_study_id_from_name(s.study_name))
        table.add_row(Text(s.study_name), str(n_trials), Text(objectives), "yes" if attrs else "no")
    out.print(table)


def _check_writable(output: Path) -> None:
    """Fail before any work when ``output`` cannot be written."""
    folder = output.resolve().parent
    if output.is_dir():
        raise OutputError(f"cannot write the report to {str(output)!r}: it is a folder; give a file name")
    if not folder.is_dir():
        raise OutputError(f"cannot write the report to {str(output)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise OutputError(f"cannot write the report to {str(output)!r}: permission denied")


def _print_frame(frame: pd.DataFrame, *, title: str) -> None:
    table = Table(title=Text(title))
    for column in frame.columns:
        table.add_column(Text(str(column).removeprefix("params_")), justify="right", overflow="fold")
    for _, row in frame.iterrows():
        table.add_row(*(Text(_cell(v)) for v in row))
    out.print(table)


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    if value is None:
        return ""
    return str(value) if not isinstance(value, (dict, list)) else json.dumps(value)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
