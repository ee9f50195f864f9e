"""Tables for a terminal: fitted to its width, numbers never split over lines.

A table is laid out at the console's width (a terminal's; elsewhere, a pipe
or a file, ``$COLUMNS`` or :data:`PIPE_WIDTH`). Numbers print at 4
significant digits and each column is as wide as its longest cell, so a
number is never broken; headers wrap at their underscores. When the table
is wider than that:

1. parameter columns (``params_*``) are hidden, and a note says so
   (``params=True`` or ``--params`` shows them; ``--columns`` chooses);
2. a table of few rows and wide cells (``long_ok``: the confirmation table)
   is shown long instead, one line per row and column;
3. text columns (a note, a reason) wrap over lines, down to
   :data:`PROSE_MIN_WIDTH`, then half that;
4. columns are dropped from the right, never the ``keep`` ones, and the
   note names them.

``--format csv`` or ``json`` always has every column.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from motune.errors import SpecError

PIPE_WIDTH = 120  # the width of a table printed to a pipe or a file (CI logs), unless $COLUMNS says
PARAM_PREFIX = "params_"
PROSE_MIN_WIDTH = 30  # a text column (cells with spaces) wraps down to this width before columns are dropped


def cell(value: Any) -> str:
    """A table cell: floats at 4 significant digits, NaN and None empty, dicts and lists as JSON."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    if value is None or value is pd.NA:
        return ""
    return str(value) if not isinstance(value, (dict, list)) else json.dumps(value)


def header_lines(name: str, width: int) -> list[str]:
    """``name`` in lines of at most ``width`` characters, broken after underscores (a part longer than
    ``width`` stays whole)."""
    parts = [p + "_" for p in name.split("_")]
    parts[-1] = parts[-1][:-1]
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
        else:
            lines.append(part)
    return lines or [""]


@dataclass
class Fitted:
    """What :func:`fit` shows: the cells (column -> header, strings), whether long, and what it hid."""

    columns: list[str]
    rows: list[list[str]]
    widths: list[int]
    long: bool = False
    hidden_params: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    wrapped: list[str] = field(default_factory=list)  # text columns wrapped over lines

    def width(self) -> int:
        return table_width(self.widths)

    def notes(self) -> list[str]:
        notes = []
        if self.hidden_params:
            notes.append(f"params hidden to fit {len(self.hidden_params)} column(s) "
                         f"({', '.join(c.removeprefix(PARAM_PREFIX) for c in self.hidden_params)}): --params shows "
                         "them, --columns chooses, --format csv has all")
        if self.hidden:
            notes.append(f"not shown for width: {', '.join(self.hidden)} (--columns chooses; --format csv has all)")
        return notes


def table_width(widths: Sequence[int]) -> int:
    """The printed width of a rich table (box, one space of padding each side) with these column widths."""
    return sum(w + 3 for w in widths) + 1


def _column_width(name: str, cells: Sequence[str]) -> int:
    longest_cell = max((len(c) for c in cells), default=0)
    longest_part = max(len(p) for p in header_lines(name, 1))
    return max(longest_cell, longest_part, min(len(name), 8))


def select(frame: pd.DataFrame, columns: Sequence[str] | None) -> pd.DataFrame:
    """The ``columns`` of ``frame`` in that order (a parameter by its name, with or without ``params_``);
    an unknown one is a :class:`SpecError` naming those there are."""
    if not columns:
        return frame
    names = {c: c for c in frame.columns} | {c.removeprefix(PARAM_PREFIX): c for c in frame.columns}
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise SpecError(f"unknown column(s) {unknown}; the columns are "
                        f"{[str(c).removeprefix(PARAM_PREFIX) for c in frame.columns]}")
    return frame[list(dict.fromkeys(names[c] for c in columns))]


def fit(frame: pd.DataFrame, width: int, *, params: bool | None = None, keep: Sequence[str] = (),
        long_ok: bool = False, key: str | None = None) -> Fitted:
    """Lay out ``frame`` for ``width`` characters (see the module docstring); ``params``: ``None`` shows
    parameter columns when they fit, ``True`` always, ``False`` never."""
    cells = {c: [cell(v) for v in frame[c]] for c in frame.columns}
    names = [str(c) for c in frame.columns]
    widths = {n: _column_width(n, cells[c]) for n, c in zip(names, frame.columns)}
    shown = list(names)
    hidden_params: list[str] = []
    is_param = [n for n in names if n.startswith(PARAM_PREFIX)]
    if params is False or (params is None and table_width([widths[n] for n in shown]) > width):
        hidden_params = is_param
        shown = [n for n in shown if n not in is_param]
    by_name = dict(zip(names, frame.columns))

    def fitted(columns: list[str], hidden: list[str]) -> Fitted:
        return Fitted(columns, [[cells[by_name[n]][i] for n in columns] for i in range(len(frame))],
                      [widths[n] for n in columns], hidden_params=hidden_params, hidden=hidden)

    if table_width([widths[n] for n in shown]) <= width:
        return fitted(shown, [])
    key = key if key in shown else (shown[0] if shown else None)
    if long_ok and key is not None:
        long_rows = [[cells[by_name[key]][i], n, cells[by_name[n]][i]]
                     for i in range(len(frame)) for n in shown if n != key and cells[by_name[n]][i]]
        long_widths = [widths[key], max((len(r[1]) for r in long_rows), default=6),
                       max((len(r[2]) for r in long_rows), default=5)]
        if table_width(long_widths) <= width:
            return Fitted([key, "column", "value"], long_rows, long_widths, long=True, hidden_params=hidden_params)
    wrapped: list[str] = []
    prose = sorted((n for n in shown if widths[n] > PROSE_MIN_WIDTH
                    and any(" " in c for c in cells[by_name[n]])), key=lambda n: -widths[n])
    for floor in (PROSE_MIN_WIDTH, PROSE_MIN_WIDTH // 2):  # text (a note, a reason) wraps over lines, down to
        for n in prose:                                      # 30 columns, then 15, before anything goes
            over = table_width([widths[m] for m in shown]) - width
            if over <= 0:
                break
            widths[n] = max(floor, widths[n] - over)
            if n not in wrapped:
                wrapped.append(n)
    hidden: list[str] = []
    droppable = [n for n in reversed(shown) if n not in keep and n != key]
    while table_width([widths[n] for n in shown]) > width and droppable:
        gone = droppable.pop(0)
        shown.remove(gone)
        hidden.insert(0, gone.removeprefix(PARAM_PREFIX))
    laid = fitted(shown, hidden)
    laid.wrapped = [n for n in wrapped if n in shown]
    return laid


def console_width(console: Console) -> int:
    """The width tables are fitted to: the terminal's, else ``$COLUMNS``, else :data:`PIPE_WIDTH`."""
    if console.is_terminal:
        return console.width
    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return PIPE_WIDTH


def print_frame(console: Console, frame: pd.DataFrame, *, title: str, columns: Sequence[str] | None = None,
                params: bool | None = None, keep: Sequence[str] = (), long_ok: bool = False,
                key: str | None = None, notes: Console | None = None) -> Fitted:
    """Print ``frame`` as a table fitted to ``console`` (see the module docstring); what was hidden is said
    on ``notes`` (default: the same console). Returns the layout."""
    frame = select(frame, columns)
    width = console_width(console)
    laid = fit(frame, width, params=True if columns else params, keep=keep, long_ok=long_ok, key=key)
    table = Table()
    for name, w in zip(laid.columns, laid.widths):
        shown = name.removeprefix(PARAM_PREFIX)
        prose = name in laid.wrapped
        table.add_column(Text("\n".join(header_lines(shown, w))),
                         justify="left" if prose or laid.long and name != laid.columns[0] else "right",
                         no_wrap=not prose, min_width=w, max_width=w, overflow="fold" if prose else "ellipsis")
    previous = None
    for row in laid.rows:
        if laid.long and row[0] == previous:
            row = ["", *row[1:]]  # a long table names its key once per group
        elif laid.long:
            previous = row[0]
        table.add_row(*(Text(c) for c in row))
    console.print(Text(title, style="bold"), soft_wrap=True)  # one line, not padded to the table's width
    console.print(table, width=max(width, laid.width()), crop=False)  # not cropped to the console's own width
    for note in laid.notes():
        (notes or console).print(Text(note), highlight=False, soft_wrap=True)
    return laid


__all__ = ["PIPE_WIDTH", "Fitted", "cell", "console_width", "fit", "header_lines", "print_frame", "select"]
