"""The command line: ``motune run | front | report | studies``."""

from __future__ import annotations

import dataclasses
import json
import math
import runpy
import sys
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from motune.runner import StorageError, redact_url, load_study, open_storage, storage_location
from motune.spec import SpecError, Study

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
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def load_studies(path: Path) -> list[Study]:
    """The :class:`motune.Study` objects a study file defines at module level.

    The file's folder is on ``sys.path`` while it runs, as with ``python FILE``,
    so it can import modules beside it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"study file {str(path)!r} not found")
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        namespace = runpy.run_path(str(path), run_name="__motune_study__")
    except ImportError as e:
        raise ValueError(f"{path} could not import {e.name or 'a module'}: {e}") from None
    finally:
        sys.path.remove(folder)
    return [v for v in namespace.values() if isinstance(v, Study)]


def _where(storage) -> str:
    location = storage_location(storage)
    return redact_url(location) if isinstance(location, str) else type(location).__name__


@app.command()
def run(
    file: Path = typer.Argument(..., help="A Python file that defines a motune.Study at module level."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Number of trials to run."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the file defines several."),
    n_jobs: int = typer.Option(1, "--n-jobs", help="Trials in parallel threads in this process."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Run (or resume) the study defined in FILE, then print its front."""
    if trials is None and timeout is None:
        raise _fail("give --trials N or --timeout SECONDS")
    try:
        studies = load_studies(file)
    except (SpecError, StorageError, ValueError, TypeError, FileNotFoundError) as e:
        raise _fail(str(e)) from None
    if study_name is not None:
        studies = [s for s in studies if s.name == study_name]
    if not studies:
        raise _fail(f"{file} defines no motune.Study" + (f" named {study_name!r}" if study_name else ""))
    if len(studies) > 1:
        raise _fail(f"{file} defines several studies ({', '.join(s.name for s in studies)}); pick one with --study")
    study = studies[0]
    if storage is not None:
        study = dataclasses.replace(study, storage=storage)
    err.print(f"study [bold]{study.name}[/] in {_where(study.storage)}", highlight=False)
    try:
        result = study.optimize(trials, timeout=timeout, n_jobs=n_jobs, show_progress=not quiet)
    except (SpecError, StorageError, ValueError, TypeError) as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        err.print("interrupted: finished trials are stored; run the same command to resume")
        raise typer.Exit(code=130) from None
    _print_frame(result.front(), title=f"front of {result.name}")
    records = result.records()
    if records and not any(r.state == "COMPLETE" for r in records):
        raise _fail(f"no trial of {result.name!r} completed; the first error: {records[0].error}")


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
    except (SpecError, StorageError) as e:
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
    from motune.viz.report import PngExportError, export_pngs, report_figures, write_report

    try:
        result = load_study(name, storage=storage)
    except (SpecError, StorageError) as e:
        raise _fail(str(e)) from None
    figures = report_figures(result)
    path = write_report(result, output, figures=figures)
    err.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)
    if png and figures:
        folder = output.with_name(f"{output.stem}_figures")
        try:
            pngs = export_pngs(figures, folder)
        except PngExportError as e:
            raise _fail(f"no PNGs written (the HTML report is complete): {e}") from None
        err.print(f"wrote {len(pngs)} PNG figure(s) to {folder}", highlight=False)


@app.command()
def studies(storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP)) -> None:
    """List the studies in a storage."""
    try:
        opened = open_storage(storage, must_exist=True)
        summaries = opened.get_all_studies()
    except StorageError as e:
        raise _fail(str(e)) from None
    table = Table(title=f"studies in {_where(storage)}")
    for column in ("name", "trials", "objectives", "motune"):
        table.add_column(column)
    for s in summaries:
        attrs = s.user_attrs.get("motune")
        if attrs:
            objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in attrs["objectives"])
        else:
            objectives = ", ".join(d.name.lower() for d in s.directions)
        n_trials = opened.get_n_trials(opened.get_study_id_from_name(s.study_name))
        table.add_row(s.study_name, str(n_trials), objectives, "yes" if attrs else "no")
    out.print(table)


def _print_frame(frame: pd.DataFrame, *, title: str) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column).removeprefix("params_"), justify="right", overflow="fold")
    for _, row in frame.iterrows():
        table.add_row(*(_cell(v) for v in row))
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
