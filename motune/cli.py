"""The command line: ``motune run | front | report | studies``.

A :class:`~motune.errors.MotuneError` (a user mistake, or a failure motune can
name) is printed as one line and the command exits with status 2; anything
else keeps its traceback. User text (study names, params, error messages) is
printed as it is, never read as rich markup; storage passwords are hidden.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.text import Text

from motune import _schema, terminal
from motune.errors import MotuneError, OutputError, SpecError, StudyFileError
from motune.run import (
    apply_threads,
    attach_files,
    check_run_arguments,
    load_study,
    open_storage,
    plan_workers,
    redact_text,
    run_on_ray,
    run_pool,
    storage_name,
    worker_loop,
)
from motune.spec import Study
from motune.studyfile import studies_in_file

app = typer.Typer(
    help="motune: multi-objective hyperparameter tuning with constraints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()  # tables are fitted to its width (a pipe's: $COLUMNS or terminal.PIPE_WIDTH)
err = Console(stderr=True)

STORAGE_HELP = "Optuna storage URL (default: $MOTUNE_STORAGE or sqlite:///motune.db)."
COLUMNS_HELP = "Show these columns, in this order, e.g. trial,accuracy,C (a parameter by its name)."
PARAMS_HELP = "Show parameter columns even when the table is then wider than the terminal (default: when they fit)."


def _fail(message: str) -> typer.Exit:
    err.print(Text.assemble(("error:", "bold red"), " ", redact_text(str(message))), highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _say(*parts: str | tuple[str, str]) -> None:
    """A line on stderr; plain strings are printed as they are (never as markup)."""
    err.print(Text.assemble(*parts), highlight=False, soft_wrap=True)


HEARTBEAT_HELP = ("Seconds between a running trial's heartbeats (RDB storages); a trial with none for 3 intervals "
                  "is failed as 'worker died' and retried. Default 10 (grace 30), or $MOTUNE_HEARTBEAT_S.")


def _study_from(file: Path, study_name: Optional[str], storage: Optional[str], heartbeat: Optional[float]) -> Study:
    """The study FILE defines (the one named ``study_name`` when it defines several), with CLI overrides."""
    studies = studies_in_file(file, fresh=True)  # as the file reads now (its environment included)
    if study_name is not None:
        studies = [s for s in studies if s.name == study_name]
    if not studies:
        raise StudyFileError(f"{file} defines no motune.Study" + (f" named {study_name!r}" if study_name else ""))
    if len(studies) > 1:
        raise StudyFileError(f"{file} defines several studies ({', '.join(s.name for s in studies)}); "
                             "pick one with --study")
    return dataclasses.replace(studies[0], **_changes(file, storage, heartbeat))


def _changes(file: Path, storage: Optional[str], heartbeat: Optional[float]) -> dict:
    changes: dict = {"source_file": str(file.resolve())}
    if storage is not None:
        changes["storage"] = storage
    if heartbeat is not None:
        changes |= {"heartbeat_s": heartbeat, "heartbeat_grace_s": None}
    return changes


@app.command()
def run(
    file: Path = typer.Argument(..., help="A Python file that defines a motune.Study at module level."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Number of trials to run (in all workers)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the file defines several."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes on the CPU (none sees a GPU)."),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="'all' or GPU ids (0,1): one worker process per GPU, "
                                       "each seeing only its own."),
    workers_per_gpu: Optional[int] = typer.Option(None, "--workers-per-gpu", help="With --gpus: workers sharing "
                                                  "each GPU (default 1)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads per worker (default: its share of the "
                                          "cores)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run the workers on a Ray cluster: its address, or "
                                      "'auto' (needs motune[ray] and a storage every node reaches)."),
    gpus_per_trial: Optional[float] = typer.Option(None, "--gpus-per-trial", help="With --ray: GPUs each worker "
                                                   "holds (default 0)."),
    cpus_per_trial: Optional[float] = typer.Option(None, "--cpus-per-trial", help="With --ray: CPUs each worker "
                                                   "holds (default 1)."),
    ray_timeout: float = typer.Option(30.0, "--ray-timeout", help="With --ray: seconds to wait for the cluster's "
                                      "address to answer before failing."),
    n_jobs: int = typer.Option(1, "--n-jobs", help="Trials in parallel threads in this one process."),
    heartbeat: Optional[float] = typer.Option(None, "--heartbeat", help=HEARTBEAT_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Run (or resume) the study defined in FILE, then print its front."""
    if trials is None and timeout is None:
        raise _fail("give --trials N or --timeout SECONDS")
    pooled = ray is None and (workers is not None or gpus is not None)
    exit_code = None
    try:
        check_run_arguments(trials, timeout, n_jobs)
        if workers is not None and gpus is not None:
            raise SpecError("give --workers (CPU processes) or --gpus (one process per GPU), not both")
        if ray is not None and gpus is not None:
            raise SpecError("with --ray, Ray assigns the GPUs: give --gpus-per-trial instead of --gpus")
        if workers_per_gpu is not None and gpus is None:
            raise SpecError("--workers-per-gpu goes with --gpus")
        if (gpus_per_trial is not None or cpus_per_trial is not None) and ray is None:
            raise SpecError("--gpus-per-trial and --cpus-per-trial go with --ray")
        if (pooled or ray is not None) and n_jobs != 1:
            raise SpecError("--n-jobs runs threads in one process: use it without --workers / --gpus / --ray")
        specs = plan_workers(workers=workers, gpus=gpus, workers_per_gpu=workers_per_gpu or 1, threads=threads) \
            if pooled else None
        study = _study_from(file, study_name, storage, heartbeat)
        if ray is not None:
            result, signalled = run_on_ray(study, str(file.resolve()), address=ray, n_trials=trials,
                                           timeout=timeout, changes=_changes(file, storage, heartbeat),
                                           gpus_per_worker=gpus_per_trial or 0, cpus_per_worker=cpus_per_trial or 1,
                                           workers=workers, threads=threads, show_progress=not quiet,
                                           connect_timeout_s=ray_timeout)
        elif pooled:
            result, signalled, exit_code = run_pool(study, str(file.resolve()), specs, n_trials=trials,
                                                    timeout=timeout, changes=_changes(file, storage, heartbeat),
                                                    show_progress=not quiet)
        else:
            with apply_threads(threads) if threads else contextlib.nullcontext():
                result = study.optimize(trials, timeout=timeout, n_jobs=n_jobs, show_progress=not quiet)
            signalled = result.interrupted
    except MotuneError as e:
        raise _fail(str(e)) from None
    if exit_code is not None:
        raise typer.Exit(code=exit_code if isinstance(exit_code, int) else 1)
    if signalled is not None:
        raise typer.Exit(code=143 if signalled == "SIGTERM" else 130)
    _print_frame(result.front(), title=f"front of {result.name}", keep=["trial", *(o.metric for o in result.objectives)])
    _save_dashboard_figures(lambda: result.refresh())
    records = result.records()
    if records and not any(r.state == "COMPLETE" for r in records):
        first = next((r.error for r in records if r.error), None)
        raise _fail(f"no trial of {result.name!r} completed; the first error: {first}")


@app.command()
def worker(
    file: Path = typer.Argument(..., help="A Python file that defines a motune.Study at module level."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Trials this worker runs."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Which study, when the file defines several."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads for this worker's pools (default: "
                                          "what the process has, or $OMP_NUM_THREADS)."),
    heartbeat: Optional[float] = typer.Option(None, "--heartbeat", help=HEARTBEAT_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """One worker of a study on shared storage: what a scheduler (Slurm, Kubernetes ...) starts on each machine."""
    if trials is None and timeout is None:
        raise _fail("give --trials N or --timeout SECONDS")
    try:
        check_run_arguments(trials, timeout, 1)
        study = _study_from(file, study_name, storage, heartbeat)
        threads = threads or (int(os.environ["OMP_NUM_THREADS"]) if os.environ.get("OMP_NUM_THREADS", "").isdigit()
                              else None)
        os.environ.setdefault("MOTUNE_WORKER", json.dumps({"index": None, "gpus": os.environ.get(
            "CUDA_VISIBLE_DEVICES"), "threads": threads, "scheduler": _scheduler()}))
        result = worker_loop(str(file.resolve()), study.name, _changes(file, storage, heartbeat), n_trials=trials,
                             timeout=timeout, show_progress=not quiet, threads=threads)
    except MotuneError as e:
        raise _fail(str(e)) from None
    if result.interrupted is not None:
        raise typer.Exit(code=130)


def _scheduler() -> dict | None:
    """The scheduler job this worker runs in, if any (Slurm, Kubernetes), for provenance."""
    if os.environ.get("SLURM_JOB_ID"):
        return {"slurm_job_id": os.environ["SLURM_JOB_ID"], "array_task": os.environ.get("SLURM_ARRAY_TASK_ID")}
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return {"kubernetes_pod": os.environ.get("HOSTNAME"), "job_index": os.environ.get("JOB_COMPLETION_INDEX")}
    return None


@app.command()
def front(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
    params: Optional[bool] = typer.Option(None, "--params/--no-params", help=PARAMS_HELP),
) -> None:
    """Print the feasible Pareto front of a stored study (csv and json: every column)."""
    if fmt not in ("table", "csv", "json"):
        raise _fail(f"--format must be table, csv or json, got {fmt!r}")
    try:
        result = load_study(name, storage=storage)
    except MotuneError as e:
        raise _fail(str(e)) from None
    try:
        frame = terminal.select(result.front(), _column_names(columns))
    except MotuneError as e:
        raise _fail(str(e)) from None
    if fmt == "csv":
        typer.echo(frame.to_csv(index=False), nl=False)
    elif fmt == "json":
        typer.echo(frame.to_json(orient="records", indent=2))
    else:
        counts = result.summary()
        _print_frame(frame, title=f"front of {name}: {counts['on_front']} of {counts['trials']} trials "
                                  f"({counts['infeasible']} infeasible, {counts['failed']} failed, "
                                  f"{counts['pruned']} pruned)", params=params,
                     keep=["trial", *(o.metric for o in result.objectives)])
        if result.foreign:
            _say(f"{name} was not created by motune: objectives from Optuna's directions and metric names "
                 f"({', '.join(str(o) for o in result.objectives)}), constraints from Trial.set_constraint "
                 f"({', '.join(result.constraint_keys) or 'none'}); missing: {result.info['missing']}")


@app.command()
def report(
    name: str = typer.Argument(..., help="Study name."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="HTML file to write."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    png: bool = typer.Option(False, "--png", help="Also write each figure as a PNG into <output stem>_figures/ "
                                                  "(needs a Chrome or Chromium for kaleido)."),
    attach: bool = typer.Option(True, "--attach/--no-attach", help="Upload the report (and PNGs) as artifacts "
                                "of the study when it has an artifact store, for optuna-dashboard."),
) -> None:
    """Write a self-contained HTML report of a stored study (every figure that applies)."""
    from motune.viz.report import PngExportError, export_pngs, report_figures, write_report

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
    else:
        pngs = []
    if attach:
        ids = attach_files(result, [path, *pngs])
        if ids:
            _say(f"attached the report{' and its figures' if pngs else ''} to the study as {len(ids)} artifact(s) "
                 "(optuna-dashboard lists them on the study page)")


@app.command()
def serve(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 (0: any free one)."),
    poll: float = typer.Option(5.0, "--poll", help="Seconds between reads of the storage (and the page's checks)."),
) -> None:
    """Serve a live view of a study on 127.0.0.1: its report, refreshed from the storage as trials end."""
    from motune.live import HOST, LiveReport
    from motune.live import serve as serve_

    if poll <= 0:
        raise _fail(f"--poll must be a positive number of seconds, got {poll}")
    live = LiveReport(name, storage, poll_s=poll, say=_say)
    try:
        live.state()  # the study exists and the storage answers, before the port is taken
        server = serve_(live, port)
    except MotuneError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"cannot listen on {HOST}:{port}: {e.strerror or e}") from None
    _say(f"serving {name} at http://{HOST}:{server.server_port}/ (the page refreshes as trials end; Ctrl-C stops)")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        _say("stopped")
    finally:
        server.server_close()


@app.command()
def studies(storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP)) -> None:
    """List the studies in a storage."""
    try:
        opened = open_storage(storage, must_exist=True)
        summaries = opened.get_all_studies()
    except MotuneError as e:
        raise _fail(str(e)) from None
    rows = []
    for s in summaries:
        attrs = _schema.read_study_record(s.user_attrs)
        if attrs:
            objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in attrs["objectives"])
        else:
            objectives = ", ".join(d.name.lower() for d in s.directions)
        previous = (attrs or {}).get("previous")
        follows = f"{previous['study']}: {'; '.join(previous['changes'])}" if previous else ""
        n_trials = opened.get_n_trials(opened.get_study_id_from_name(s.study_name))
        rows.append({"name": s.study_name, "trials": n_trials, "objectives": objectives,
                     "motune": "yes" if attrs else "no", "follows": follows})
    _print_frame(pd.DataFrame(rows, columns=["name", "trials", "objectives", "motune", "follows"]),
                 title=f"studies in {storage_name(storage)}", key="name", keep=("name", "objectives"))


ARTIFACTS_HELP = "Artifact folder of the study's models (default: the one its record names, or $MOTUNE_ARTIFACTS)."


def _open(name: str, storage: Optional[str], artifacts: Optional[str] = None, study_file: Optional[Path] = None):
    """A stored study, with its artifact store and (given ``study_file``) its definition."""
    result = load_study(name, storage=storage, artifact_store=artifacts)
    if study_file is not None:
        found = [s for s in studies_in_file(study_file) if s.name == name]
        if not found:
            raise StudyFileError(f"{study_file} defines no motune.Study named {name!r}")
        result.spec = found[0]
    return result


@app.command()
def confirm(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", help=ARTIFACTS_HELP),
    study_file: Optional[Path] = typer.Option(None, "--study-file", help="The file defining the study, if its "
                                              "record does not name it (the task's data is loaded from there)."),
    trials: Optional[str] = typer.Option(None, "--trials", help="Trial numbers, e.g. 3,7 (default: the front)."),
    n_boot: int = typer.Option(100, "--n-boot", help="Bootstrap resamples for the intervals."),
    allow_running: bool = typer.Option(False, "--allow-running", help="Confirm while trials of the study run "
                                       "(their latency is then flagged)."),
    quiet_cpus: float = typer.Option(0.5, "--quiet-cpus", help="Latency: wait until other work keeps at most this "
                                     "many CPUs busy."),
    quiet_wait: float = typer.Option(60.0, "--quiet-wait", help="Latency: wait at most this many seconds for that "
                                     "(then time anyway, and flag it)."),
    retime: float = typer.Option(30.0, "--retime", help="Latency: re-time a flagged run for at most this many "
                                 "seconds."),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
) -> None:
    """Re-measure the front on the held-out test split (intervals) and re-time latency quietly."""
    from motune.confirm import confirm as confirm_

    try:
        numbers = None if trials is None else [int(t) for t in trials.split(",") if t.strip()]
    except ValueError:
        raise _fail(f"--trials must be trial numbers such as 3,7, got {trials!r}") from None
    try:
        result = _open(name, storage, artifacts, study_file)
        result = confirm_(result, trials=numbers, n_boot=n_boot, allow_running=allow_running, progress=_say,
                          quiet_cpus=quiet_cpus, quiet_wait_s=quiet_wait, retime_s=retime)
    except MotuneError as e:
        raise _fail(str(e)) from None
    try:
        _print_frame(result.confirmation_table(), title=f"{name}: confirmed on the test split, "
                     f"{result.interval_note()}", columns=columns, long_ok=True,
                     keep=["trial", *(o.metric for o in result.objectives)])
    except MotuneError as e:
        raise _fail(str(e)) from None
    for r in result.records():
        waited = (r.confirmation or {}).get("quiet")
        if waited and (numbers is None and r.on_front or numbers and r.number in numbers):
            flagged = " FLAGGED" if r.confirmation.get("latency_flagged") else ""
            _say(f"trial {r.number} latency{flagged}: waited {waited['waited_s']:g} s for a quiet host "
                 f"({waited['busy_cpus']} CPUs busy, {waited['quiet_cpus']:g} allowed: "
                 f"{'quiet' if waited['quiet'] else 'never quiet'}), timed {len(waited['attempts'])} time(s)")


def _pairs(values: list[str], what: str) -> dict[str, float]:
    """``METRIC=NUMBER`` options as a dict: each metric once, each number finite."""
    out: dict[str, float] = {}
    for item in values:
        metric, sep, number = item.partition("=")
        metric = metric.strip()
        try:
            value = float(number)
        except ValueError:
            sep = ""
        if not sep or not metric:
            raise SpecError(f"{what} must be METRIC=NUMBER, got {item!r}")
        if not math.isfinite(value):
            raise SpecError(f"{what} {item!r}: the number must be finite")
        if metric in out:
            raise SpecError(f"{what} names {metric!r} twice; give each metric once")
        out[metric] = value
    return out


RULE_OPTIONS = {  # the options each --rule takes
    "knee": set(),
    "lexicographic": {"--order", "--tolerance"},
    "weighted": {"--weight", "--default-weight", "--kind"},
    "best-within": {"--metric", "--margin", "--direction"},
}


def _rule_from(rule: str, given: dict[str, Any]) -> Any:
    """The selection rule ``--rule`` names, refusing options it does not take."""
    from motune.selection import rules

    rule = "best-within" if rule == "best_within" else rule
    if rule not in RULE_OPTIONS:
        raise SpecError(f"--rule must be knee, lexicographic, weighted or best-within, got {rule!r}")
    stray = sorted(o for o, v in given.items() if v not in (None, []) and o not in RULE_OPTIONS[rule])
    if stray:
        takes = ", ".join(sorted(RULE_OPTIONS[rule])) or "no options"
        raise SpecError(f"--rule {rule} does not take {', '.join(stray)} (it takes {takes})")
    if rule == "knee":
        return rules.knee()
    if rule == "lexicographic":
        order = given["--order"]
        return rules.lexicographic(None if order is None else [m.strip() for m in order.split(",")],
                                   _pairs(given["--tolerance"], "--tolerance"))
    if rule == "weighted":
        return rules.weighted(_pairs(given["--weight"], "--weight"), kind=given["--kind"] or "chebyshev",
                              default=given["--default-weight"])
    if given["--metric"] is None:
        raise SpecError("--rule best-within needs --metric")
    return rules.best_within(given["--metric"], margin=given["--margin"] or 0.0, direction=given["--direction"])


@app.command()
def decide(
    name: str = typer.Argument(..., help="Study name."),
    rule: str = typer.Option(..., "--rule", help="knee, lexicographic, weighted or best-within."),
    why: str = typer.Option(..., "--why", help="The rationale, in words."),
    by: str = typer.Option(..., "--by", help="Who decides."),
    order: Optional[str] = typer.Option(None, "--order", help="lexicographic: objectives, most important first "
                                        "(comma-separated)."),
    tolerance: list[str] = typer.Option([], "--tolerance", help="lexicographic: METRIC=TOLERANCE (repeatable)."),
    weight: list[str] = typer.Option([], "--weight", help="weighted: METRIC=WEIGHT, finite and > 0, each "
                                     "objective once (repeatable)."),
    default_weight: Optional[float] = typer.Option(None, "--default-weight", help="weighted: the weight of the "
                                                   "objectives no --weight names (default: name them all)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="weighted: chebyshev (default) or linear."),
    metric: Optional[str] = typer.Option(None, "--metric", help="best-within: the metric to be best on."),
    margin: Optional[float] = typer.Option(None, "--margin", help="best-within: how far inside every constraint "
                                           "(default 0)."),
    direction: Optional[str] = typer.Option(None, "--direction", help="best-within: maximize or minimize, for a "
                                            "metric that is not an objective."),
    accept_noisy: bool = typer.Option(False, "--accept-noisy", help="Decide even when a value that decides is "
                                      "flagged (noisy latency); the decision records it."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
) -> None:
    """Choose a front trial by a stated rule and record the decision with the study."""
    from motune.selection import decide as decide_
    from motune.selection import select

    try:
        chosen_rule = _rule_from(rule, {"--order": order, "--tolerance": tolerance, "--weight": weight,
                                        "--default-weight": default_weight, "--kind": kind, "--metric": metric,
                                        "--margin": margin, "--direction": direction})
        result = load_study(name, storage=storage)
        decision = decide_(select(result, chosen_rule), rationale=why, decided_by=by, accept_noisy=accept_noisy)
    except MotuneError as e:
        raise _fail(str(e)) from None
    _say(f"decision {decision.number} of {name} (now current): trial {decision.trial} ({decision.reason}; on "
         f"{decision.values_used} values)")
    _print_decision(decision)
    _save_dashboard_figures(lambda: load_study(name, storage=storage))


def _print_decision(decision: Any) -> None:
    """The chosen trial's values (with intervals), and what the intervals and flags say."""
    from motune.results import interval_text

    values = decision.test if decision.values_used == "test" and decision.test else decision.validation
    latency = decision.latency or {}
    rows, flags = [], []
    for metric, entry in values.items():
        shown = interval_text(entry) if isinstance(entry, dict) else terminal.cell(entry)
        if not isinstance(entry, dict) and metric in latency and latency[metric].get("low") is not None:
            shown += f" [{latency[metric]['low']:.4g}, {latency[metric]['high']:.4g}]"
        facts = latency.get(metric)
        note = ""
        if facts:
            load = facts.get("load_average")
            note = ("NOISY" if facts.get("noisy") else "quiet") + (f", load {load[0]:.2f}" if load else "")
            if facts.get("noisy"):
                flags.append(f"{metric} NOISY: {'; '.join(facts.get('flags') or [])}")
        rows.append({"metric": metric, "value": shown, "decided": "yes" if metric in (decision.deciding or []) else "",
                     "latency run": note})
    _print_frame(pd.DataFrame(rows), title=f"decision {decision.number} of {decision.study}: trial {decision.trial} "
                                           f"on {decision.values_used} values", key="metric",
                 keep=["metric", "value", "latency run"])
    for line in flags:  # why a run was flagged: a line each, under the table (a cell would not fit 80 columns)
        out.print(Text(line), highlight=False, soft_wrap=True)
    if decision.indistinguishable:
        _say(f"indistinguishable from trial {decision.trial} on {', '.join(decision.deciding or [])} (their intervals "
             f"overlap): trial(s) {', '.join(map(str, decision.indistinguishable))}")
    if decision.not_compared:
        _say(f"not compared by interval (no interval on every candidate): {', '.join(decision.not_compared)}")
    if decision.accepted_noisy:
        from motune.selection.decision import flagged_text

        _say(f"accepted although flagged: {flagged_text({int(k): v for k, v in (decision.flagged or {}).items()})}")


def _stored(name: str, storage: Optional[str], fmt: str, read: Any) -> list:
    """Records a study stores (decisions, checks), for a table or JSON listing."""
    if fmt not in ("table", "json"):
        raise _fail(f"--format must be table or json, got {fmt!r}")
    try:
        return read(load_study(name, storage=storage))
    except MotuneError as e:
        raise _fail(str(e)) from None


@app.command()
def decisions(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    current: Optional[int] = typer.Option(None, "--current", help="Make decision N the current one (with --why "
                                          "and --by; recorded, the history kept)."),
    why: Optional[str] = typer.Option(None, "--why", help="With --current: why it is current."),
    by: Optional[str] = typer.Option(None, "--by", help="With --current: who says so."),
    columns: Optional[str] = typer.Option(None, "--columns", help=COLUMNS_HELP),
) -> None:
    """List the decisions recorded for a study and which is current, or make an earlier one current."""
    if current is not None:
        from motune.selection import make_current

        try:
            if why is None or by is None:
                raise SpecError("--current N needs --why TEXT and --by NAME")
            chosen = make_current(load_study(name, storage=storage), current, why=why, by=by)
        except MotuneError as e:
            raise _fail(str(e)) from None
        _say(f"decision {chosen.number} of {name} (trial {chosen.trial}) is now current: {why} ({by})")
        _save_dashboard_figures(lambda: load_study(name, storage=storage))
        return
    if why is not None or by is not None:
        raise _fail("--why and --by go with --current N")
    found = _stored(name, storage, fmt, lambda result: result.decisions())
    if fmt == "json":
        typer.echo(json.dumps([json.loads(d.to_json()) for d in found], indent=2))
        return
    chosen = next((d for d in found if d.current), None)
    stated = f"; decision {chosen.number} is current" + (f" ({chosen.made_current['by']}: {chosen.made_current['why']})"
                                                        if chosen.made_current else ", the latest") if chosen else ""
    try:
        _print_frame(_decision_frame(found), title=f"decisions of {name} ({len(found)}{stated})", columns=columns,
                     key="decision", keep=["decision", "current", "trial", "rule"], long_ok=True)
    except MotuneError as e:
        raise _fail(str(e)) from None
    if chosen is not None:
        _print_decision(chosen)


def _decision_frame(found) -> pd.DataFrame:
    return pd.DataFrame([{"decision": d.number, "current": "yes" if d.current else "", "trial": d.trial,
                          "rule": d.rule, "on": d.values_used, "decided by": d.decided_by, "at": d.decided_at,
                          "why": d.rationale} for d in found])


@app.command()
def check(
    name: str = typer.Argument(..., help="Study name."),
    data: str = typer.Option(..., "--data", help="New rows: a .csv or .parquet file, or file.py:function returning "
                                                 "a DataFrame (the study's label, sensitive and feature columns)."),
    decision: Optional[int] = typer.Option(None, "--decision", help="Decision number (default: the current one)."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", help=ARTIFACTS_HELP),
    study_file: Optional[Path] = typer.Option(None, "--study-file", help="The file defining the study, if its "
                                              "recorded one moved."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="How far a metric may move (absolute; latency: "
                                                               "25 % of the recorded value)."),
    latency: bool = typer.Option(False, "--latency", help="Also re-time latency (when the study measures it)."),
    fail_on_drift: bool = typer.Option(False, "--fail-on-drift", help="Fail when a feature shifted (PSI above 0.2 "
                                       "and above what chance gives at these sample sizes)."),
    constraints_of: Optional[str] = typer.Option(None, "--constraints-of", help="Judge against another version's "
                                                 "constraints (e.g. NAME@v2)."),
    store: bool = typer.Option(True, "--store/--no-store", help="Record the check with the study."),
) -> None:
    """Check a decision's model on new data: exit 0 when its constraints hold and no objective moved beyond
    the tolerance, 1 when something broke, 2 on bad input."""
    from motune.monitoring.check import check as run_check

    if fmt not in ("table", "json"):
        raise _fail(f"--format must be table or json, got {fmt!r}")
    try:
        result = _open(name, storage, artifacts, study_file)
        other = load_study(constraints_of, storage=storage) if constraints_of else None
        record = run_check(result, data, decision=decision, tolerance=tolerance, latency=latency,
                           fail_on_drift=fail_on_drift, constraints_of=other, store=store, progress=_say)
    except MotuneError as e:
        raise _fail(str(e)) from None
    if fmt == "json":
        typer.echo(json.dumps(record, indent=2, default=str))
    else:
        _print_check(record)
    raise typer.Exit(code=0 if record["verdict"] == "pass" else 1)


def _print_check(record: dict) -> None:
    rows = []
    for metric, v in record["values"].items():
        kept = next((("kept" if c["kept"] else "BROKEN") + f" ({c['op']} {c['bound']:g})"
                     for c in record["constraints"].values() if c["metric"] == metric), "")
        interval = "" if v["low"] is None else f"[{v['low']:.4g}, {v['high']:.4g}]"
        rows.append({"metric": metric, "recorded": v["recorded"], "new": v["value"], "interval": interval,
                     "change": v["change"],
                     "moved": ("worse" if v.get("worse") else "yes") if v["moved"] else "", "constraint": kept})
    versions = f", constraints of {record['constraints_of']}" if record.get("constraints_of") else ""
    which = "the current one" if record.get("decision_current") else "not the current one"
    _print_frame(pd.DataFrame(rows), title=f"check of decision {record['decision']} ({which}; trial {record['trial']}) of "
                                           f"{record['study']} on {record['data']['rows']} rows of "
                                           f"{record['data']['source']}{versions}", key="metric",
                 keep=["metric", "new", "moved", "constraint"])  # what a verdict rests on stays on 80 columns
    shift = record["drift"]
    lines = [f"not checked: {c}" for c in record.get("not_checked") or []]
    lines += [f"not measured: {m}" for m in record.get("not_measured") or []]
    if "label_rate" in shift:
        lines.append(f"label rate {shift['label_rate']['train']:.3f} in training, {shift['label_rate']['new']:.3f} "
                     "now")
    for group in shift.get("groups_without_positives") or []:
        lines.append(f"group {group} has no positive label here: its true-positive rate is undefined, and "
                     "equalized-odds metrics count it as 0")
    lines.append("group shares: " + ", ".join(f"{g} {v['train']:.2f} -> {v['new']:.2f}"
                                              for g, v in shift["group_shares"].items()))
    top = list(shift["psi"].items())[:5]
    chance = shift.get("psi_by_chance", {})
    lines.append("population stability index (largest; by chance alone up to): "
                 + ", ".join(f"{c} {v:.3f}" + (f" ({chance[c]:.3f})" if c in chance else "") for c, v in top)
                 + (f"; shifted (> 0.2 and above chance): {', '.join(shift['shifted'])}" if shift["shifted"]
                    else "; none shifted"))
    for line in lines:
        _say(line)
    if record["verdict"] == "pass":
        _say(("pass", "bold green"), ": every constraint holds and no objective moved beyond its tolerance")
    else:
        _say(("FAIL", "bold red"), ": " + "; ".join(record["reasons"]))


@app.command()
def checks(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """The history of checks of a study's decisions on new data."""
    found = _stored(name, storage, fmt, lambda result: result.checks())
    if fmt == "json":
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    _print_frame(pd.DataFrame([{"check": c["number"], "at": c["at"], "decision": c["decision"],
                                "data": c["data"]["source"], "rows": c["data"]["rows"], "verdict": c["verdict"],
                                "why": "; ".join(c["reasons"])} for c in found]),
                 title=f"checks of {name} ({len(found)})")


@app.command()
def export(
    name: str = typer.Argument(..., help="Study name."),
    decision: Optional[int] = typer.Option(None, "--decision", help="Decision number (default: the current one)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write (created; must be empty)."),
    storage: Optional[str] = typer.Option(None, "--storage", help=STORAGE_HELP),
    artifacts: Optional[str] = typer.Option(None, "--artifacts", help=ARTIFACTS_HELP),
) -> None:
    """Write a decision's model (archive), its decision record and a model card into a folder."""
    from motune.export import export_decision

    try:
        result = load_study(name, storage=storage, artifact_store=artifacts)
        chosen = result.pick_decision(decision)
        written = export_decision(result, output, decision=chosen.number)
    except MotuneError as e:
        raise _fail(str(e)) from None
    _say(f"exported decision {chosen.number} of {name} (trial {chosen.trial}; "
         f"{'the current one' if chosen.current else 'not the current one'})")
    for path in written:
        _say(f"wrote {path}")


def _check_writable(output: Path) -> None:
    """Fail before any work when ``output`` cannot be written."""
    folder = output.resolve().parent
    if output.is_dir():
        raise OutputError(f"cannot write the report to {str(output)!r}: it is a folder; give a file name")
    if not folder.is_dir():
        raise OutputError(f"cannot write the report to {str(output)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise OutputError(f"cannot write the report to {str(output)!r}: permission denied")


def _save_dashboard_figures(stored: Any) -> None:
    """motune's constraint-aware front on the study's optuna-dashboard page (motune.viz.dashboard), for the
    study as ``stored()`` reads it now; a failure to save is said and does not fail the command."""
    from motune.viz.dashboard import save_dashboard_figures

    try:
        save_dashboard_figures(stored())
    except Exception as e:  # the figures are a convenience: the run or decision stands
        _say(f"note: the dashboard figures were not saved: {type(e).__name__}: {e}")


def _print_frame(frame: pd.DataFrame, *, title: str, columns: Optional[str] = None, params: Optional[bool] = None,
                 keep: Sequence[str] = (), long_ok: bool = False, key: Optional[str] = "trial") -> None:
    """``frame`` as a table fitted to the terminal (motune.terminal); what it hides is said on stderr."""
    terminal.print_frame(out, frame, title=title, columns=_column_names(columns), params=params, keep=keep,
                         long_ok=long_ok, key=key, notes=err)


def _column_names(columns: Optional[str]) -> Optional[list[str]]:
    return None if columns is None else [c.strip() for c in columns.split(",") if c.strip()]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
