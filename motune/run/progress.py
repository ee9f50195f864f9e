"""Progress of a running study, as a motune callback: trials done, the feasible front so far, the best
feasible value per objective, infeasible, pruned and failed counts.

On a terminal it is a live rich progress bar (failures and interruptions are
printed above it); elsewhere (CI logs, pipes) one plain line per finished
trial, and every ``interval_s`` seconds (``$MOTUNE_PROGRESS_S``, default 60)
a line for each trial still running, with its last report, so a slow trial
does not look like a hang. "done" counts this run's trials (against its
total, which grows when a dead worker's trial is retried); the front, the
best values and the infeasible, pruned and failed counts are the whole
study's, trials stored before a resume included (:meth:`TrialProgress.seed`),
so they agree with ``motune front``. The best value of each objective comes
from whichever feasible trial has it (not one trial), and the line says so.
User text (study names, params, error messages) is printed as it is, never
read as rich markup.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from motune import _pareto
from motune.run.callbacks import Callback, ReportRecord, StudyStart, TrialStart


class TrialProgress(Callback):
    def __init__(self, study: Any, *, total: int | None, enabled: bool = True, console: Console | None = None):
        self.study = study  # the motune.Study (its name and objectives)
        self.total = total
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.infeasible = 0
        self._feasible: list[list[float]] = []  # the front so far (Result's rule), objective values
        self._best: dict[str, float] = {}
        self._bar: Progress | None = None
        self._lock = threading.Lock()
        self._task_id: Any = None
        self.worker_states: dict[int, str] = {}  # a pool's workers: index -> "trial 5", "idle", "died" ...
        self.stored = 0  # trials stored before this run (a resumed study)
        self.stored_counts: dict[str, int] = {}
        self.running: dict[int, dict[str, Any]] = {}  # trial -> {"since": monotonic, "report": (step, values)}
        self.interval_s = float(os.environ.get("MOTUNE_PROGRESS_S") or 60)
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        # where a running trial's last report is read when this process does not see its reports (a pool's
        # parent): number -> (step, values) or None
        self.last_report: Callable[[int], tuple[int, dict[str, float]] | None] | None = None

    # -------------------------------------------------------------- lifecycle
    def seed(self, records: Any) -> None:
        """Count the trials a resumed study already holds (finished ones) into the front, the best values and
        the infeasible, pruned and failed counts."""
        for record in records:
            if record.state not in ("COMPLETE", "PRUNED", "FAIL"):
                continue
            self.stored += 1
            self.stored_counts[record.state] = self.stored_counts.get(record.state, 0) + 1
            self._add_complete(record)

    def add_to_total(self, n: int = 1) -> None:
        """A retried trial adds to the run's total (a dead worker's trial, run again)."""
        if self.total is not None:
            self.total += n
            if self._bar is not None:
                self._bar.update(self._task_id, total=self.total)

    def on_trial_start(self, trial: TrialStart) -> None:
        with self._lock:
            self.running[trial.number] = {"since": time.monotonic(), "report": None}

    def on_report(self, report: ReportRecord) -> None:
        with self._lock:
            if report.number in self.running:
                self.running[report.number]["report"] = (report.step, report.values)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                running = {n: dict(info) for n, info in self.running.items()}
            for number, info in sorted(running.items()):
                if info["report"] is None and self.last_report is not None:
                    try:
                        info["report"] = self.last_report(number)
                    except Exception:  # noqa: BLE001 - a storage hiccup costs one line's report, not the run
                        info["report"] = None
                self.print(self.still_running(number, info))

    def still_running(self, number: int, info: dict[str, Any]) -> str:
        seconds = time.monotonic() - info["since"]
        report = info["report"]
        last = "no report yet" if report is None else (
            f"last report at step {report[0]}: " + ", ".join(f"{k} {v:.4g}" for k, v in list(report[1].items())[:4]))
        return f"trial {number} still running ({seconds:.0f} s; {last})"

    def on_study_start(self, info: StudyStart | None) -> None:
        if self.enabled and not self.console.is_terminal and self.interval_s > 0 and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="motune-progress", daemon=True)
            self._ticker.start()
        if self.enabled and info is not None:
            what = f"{info.n_trials} trials" if info.n_trials else f"trials for {info.timeout_s:g} s"
            resumed = f", resuming after {info.stored_trials} stored" if info.stored_trials else ""
            self.print(Text.assemble(f"running {what} of study ", (info.name, "bold"), f" in {info.storage}{resumed}"))
        if self.enabled and self.console.is_terminal:
            self._bar = Progress(
                TextColumn(self.study.name, style="bold", markup=False), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("{task.description}", markup=False), console=self.console,
            )
            self._bar.start()
            self._task_id = self._bar.add_task(self.status(), total=self.total)

    def on_study_end(self, result: Any) -> None:
        self.close()
        if self.enabled:
            self.print(Text.assemble((self.study.name, "bold"), f": {self.status()}"))

    def close(self) -> None:
        """Stop the live bar (if any) and the running-trial lines; safe to call twice, also after an error."""
        self._stop.set()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def print(self, text: str | Text) -> None:
        """A line above the bar (or in the log), never read as markup."""
        console = self._bar.console if self._bar is not None else self.console
        console.print(text if isinstance(text, Text) else Text(text), highlight=False, soft_wrap=True)

    # -------------------------------------------------------------- updates
    def on_trial_end(self, record: Any, prefix: str | None = None) -> None:
        with self._lock:  # Optuna calls back from its worker threads when n_jobs > 1
            self.running.pop(record.number, None)
            self.counts[record.state] = self.counts.get(record.state, 0) + 1
            self._add_complete(record)
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.update(self._task_id, advance=1, description=self.status())
                if record.state == "FAIL":  # above the bar, so the reason is not lost
                    self.print(self.line(record, prefix))
            else:
                self.print(self.line(record, prefix))

    def _add_complete(self, record: Any) -> None:
        """A completed trial into the front and best values (feasible) or the infeasible count."""
        if record.state == "COMPLETE":
            if record.feasible:
                self._add_feasible(record)
            else:
                self.infeasible += 1

    def _add_feasible(self, record: Any) -> None:
        objectives = self.study.objectives
        values = [record.metrics[o.metric] for o in objectives]
        for o, v in zip(objectives, values):
            best = self._best.get(o.metric)
            if best is None or _pareto.better(v, best, o.direction):
                self._best[o.metric] = v
        self._feasible = _pareto.add_to_front(self._feasible, values, [o.direction for o in objectives])

    # -------------------------------------------------------------- text
    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def status(self) -> str:
        best = ", ".join(f"{k} {v:.4g}" for k, v in self._best.items()) or "no feasible trial yet"
        stored = f" (+{self.stored} stored)" if self.stored else ""
        each = "best feasible of each objective (any trial)" if len(self._best) > 1 else "best feasible"
        return (
            f"done {self.done}{'/' + str(self.total) if self.total else ''}{stored} | front {len(self._feasible)} | "
            f"infeasible {self.infeasible} | pruned {self.counts.get('PRUNED', 0) + self.stored_counts.get('PRUNED', 0)} | "
            f"failed {self.counts.get('FAIL', 0) + self.stored_counts.get('FAIL', 0)} | {each}: {best}"
        ) + ("" if not self.worker_states else " | workers: " + ", ".join(
            f"w{i} {state}" for i, state in self.worker_states.items()))

    def line(self, record: Any, prefix: str | None = None) -> str:
        seconds = f" in {record.duration_s:.1f}s" if record.duration_s is not None else ""
        why = ""
        if record.state == "FAIL":
            why = f" ({record.error})"
        elif record.state == "PRUNED" and record.pruned:
            pruned = record.pruned
            why = f" at step {pruned['step']} by {pruned['rule']} ({pruned['reason']})"
        latency = record.attrs.get("latency") or {}
        noisy = f" | latency noisy: {'; '.join(latency['flags'])}" if latency.get("noisy") else ""
        head = f"{prefix} " if prefix else ""
        return f"{head}trial {record.number} {record.state.lower()}{seconds}{why}{noisy} | {self.status()}"
