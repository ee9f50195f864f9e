"""Progress of a running study: trials done, the feasible front so far, best
feasible value per objective, pruned and failed counts.

On a terminal it is a live rich progress bar; elsewhere (CI logs, pipes) one
plain line per finished trial. It counts the trials this process ran.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from motune.spec import Study


class TrialProgress:
    def __init__(self, study: Study, *, total: int | None, enabled: bool = True, console: Console | None = None):
        self.study = study
        self.total = total
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.infeasible = 0
        self._front: list[tuple[float, ...]] = []  # feasible non-dominated, as losses
        self._best: dict[str, float] = {}
        self._bar: Progress | None = None
        self._lock = threading.Lock()
        self._task_id: Any = None

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> TrialProgress:
        if self.enabled and self.console.is_terminal:
            self._bar = Progress(
                TextColumn(f"[bold]{self.study.name}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("{task.description}"), console=self.console,
            )
            self._bar.start()
            self._task_id = self._bar.add_task(self.status(), total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self.enabled:
            self.console.print(f"[bold]{self.study.name}[/]: {self.status()}", highlight=False, soft_wrap=True)

    # -------------------------------------------------------------- updates
    def on_trial_end(self, _study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with self._lock:  # Optuna calls back from its worker threads when n_jobs > 1
            state = trial.state.name
            self.counts[state] = self.counts.get(state, 0) + 1
            if state == "COMPLETE":
                feasible = all(v <= 0 for v in trial.constraints.values())
                if feasible:
                    self._add_feasible(trial.values)
                else:
                    self.infeasible += 1
            if not self.enabled:
                return
            if self._bar is not None:
                self._bar.update(self._task_id, advance=1, description=self.status())
                if state == "FAIL":  # above the bar, so the reason is not lost
                    self._bar.console.print(self.line(trial), highlight=False, soft_wrap=True)
            else:
                self.console.print(self.line(trial), highlight=False, soft_wrap=True)

    def _add_feasible(self, values: list[float]) -> None:
        loss = tuple(-v if o.direction == "maximize" else v for o, v in zip(self.study.objectives, values))
        for o, v in zip(self.study.objectives, values):
            best = self._best.get(o.metric)
            if best is None or (v > best if o.direction == "maximize" else v < best):
                self._best[o.metric] = v
        if any(_dominates_or_equals(f, loss) for f in self._front):
            return
        self._front = [f for f in self._front if not _dominates_or_equals(loss, f)] + [loss]

    # -------------------------------------------------------------- text
    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def status(self) -> str:
        best = ", ".join(f"{k} {v:.4g}" for k, v in self._best.items()) or "no feasible trial yet"
        return (
            f"done {self.done}{'/' + str(self.total) if self.total else ''} | front {len(self._front)} | "
            f"infeasible {self.infeasible} | pruned {self.counts.get('PRUNED', 0)} | "
            f"failed {self.counts.get('FAIL', 0)} | best feasible: {best}"
        )

    def line(self, trial: optuna.trial.FrozenTrial) -> str:
        state = trial.state.name.lower()
        seconds = f" in {trial.duration.total_seconds():.1f}s" if trial.duration else ""
        why = ""
        if trial.state.name == "FAIL":
            why = f" ({trial.user_attrs.get('error') or trial.system_attrs.get('fail_reason', '')})"
        elif trial.state.name == "PRUNED" and "pruned" in trial.user_attrs:
            pruned = trial.user_attrs["pruned"]
            why = f" at step {pruned['step']} by {pruned['rule']} ({pruned['reason']})"
        return f"trial {trial.number} {state}{seconds}{why} | {self.status()}"


def _dominates_or_equals(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is no worse than ``b`` in every loss."""
    return all(x <= y for x, y in zip(a, b))
