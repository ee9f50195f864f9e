"""Tables fitted to a terminal: numbers never split, what is hidden said, a chosen column set honoured."""

import io
import re

import pandas as pd
import pytest
from rich.console import Console

from motune import terminal
from motune.errors import SpecError


def wide_front(rows=6):
    """A front as `motune front` shows it: objectives, constraints and many parameter columns."""
    frame = pd.DataFrame({"trial": list(range(rows)),
                          "balanced_accuracy": [0.812345678 + i / 1000 for i in range(rows)],
                          "equalized_odds_difference": [0.0412345 + i / 100 for i in range(rows)],
                          "latency_p95_ms": [12.3456789 * (i + 1) for i in range(rows)],
                          "robust_accuracy": [0.7011 for _ in range(rows)]})
    for name in ("model", "C", "max_iter", "learning_rate", "n_estimators", "reweighing", "postprocess",
                 "max_depth", "min_samples_leaf"):
        frame[f"params_{name}"] = [f"{name}-value-{i}" for i in range(rows)]
    return frame


def printed(frame, width, **options):
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=True, color_system=None)
    notes = io.StringIO()
    laid = terminal.print_frame(console, frame, title="front", notes=Console(file=notes, width=200), **options)
    return buffer.getvalue(), notes.getvalue(), laid


@pytest.mark.parametrize("width", [100, 80, 60])
def test_a_wide_front_fits_the_terminal_and_never_splits_a_number(width):
    frame = wide_front()
    text, notes, laid = printed(frame, width, keep=["trial", "balanced_accuracy", "equalized_odds_difference"])
    assert max(len(line) for line in text.splitlines()) <= width
    for value in frame["balanced_accuracy"]:
        assert terminal.cell(value) in text  # each number whole on one line (4 significant digits)
    assert "params hidden to fit 9 column(s)" in notes and "--params shows them" in notes
    assert not any(c.startswith("params_") for c in laid.columns)
    if laid.hidden:  # narrower still: columns dropped from the right, never the kept ones
        assert "not shown for width" in notes and "balanced_accuracy" not in laid.hidden


def test_params_shown_when_they_fit_and_when_asked():
    frame = wide_front()[["trial", "balanced_accuracy", "params_C", "params_max_iter"]]
    text, notes, laid = printed(frame, 100)
    assert laid.columns == list(frame.columns) and notes == ""
    text, notes, laid = printed(wide_front(), 100, params=True)
    assert any(c.startswith("params_") for c in laid.columns)


def test_headers_wrap_at_underscores_and_keep_short_parts_whole():
    assert terminal.header_lines("equalized_odds_difference", 10) == ["equalized_", "odds_", "difference"]
    assert terminal.header_lines("latency_p95_ms", 40) == ["latency_p95_ms"]
    assert terminal.header_lines("demographic", 4) == ["demographic"]


def test_a_few_wide_rows_are_shown_long():
    frame = pd.DataFrame({"trial": [3, 7], "accuracy": ["0.8123 [0.8011, 0.8235]", "0.8012 [0.7911, 0.8117]"],
                          "equalized_odds_difference": ["0.0412 [0.0113, 0.0721]", "0.0322 [0.0101, 0.0611]"],
                          "latency_p95_ms": ["12.35 [12.01, 12.78]", "9.812 [9.511, 10.13]"],
                          "robust_accuracy": ["0.7011 [0.6811, 0.7201]", "0.6912 [0.6701, 0.7111]"]})
    text, notes, laid = printed(frame, 70, long_ok=True, key="trial")
    assert laid.long and laid.columns == ["trial", "column", "value"]
    assert max(len(line) for line in text.splitlines()) <= 70
    assert "0.8123 [0.8011, 0.8235]" in text and "9.812 [9.511, 10.13]" in text
    assert len(re.findall(r"│\s+3\s+│", text)) == 1  # the key once per group


def test_columns_choose_and_order_and_unknown_ones_are_named():
    frame = wide_front()
    text, notes, laid = printed(frame, 100, columns=["trial", "C", "balanced_accuracy"])
    assert laid.columns == ["trial", "params_C", "balanced_accuracy"]
    with pytest.raises(SpecError, match=r"unknown column\(s\) \['accuracy'\]; the columns are \['trial'"):
        terminal.select(frame, ["trial", "accuracy"])


def test_cells_keep_ints_and_empty_missing_values():
    assert terminal.cell(194) == "194" and terminal.cell(0.123456) == "0.1235" and terminal.cell(float("nan")) == ""
    assert terminal.cell(pd.NA) == "" and terminal.cell(None) == "" and terminal.cell({"a": 1}) == '{"a": 1}'


def test_a_pipe_gets_the_pipe_width_unless_columns_says(monkeypatch):
    console = Console(file=io.StringIO())
    monkeypatch.delenv("COLUMNS", raising=False)
    assert terminal.console_width(console) == terminal.PIPE_WIDTH
    monkeypatch.setenv("COLUMNS", "90")
    assert terminal.console_width(console) == 90


def test_a_long_note_wraps_instead_of_being_dropped():
    note = "NOISY: batch: the median's 97 % interval spans 31 % of the median (limit 10 %), load 3.21"
    frame = pd.DataFrame({"metric": ["latency_p95_ms", "accuracy"], "value": ["12.35 [12.01, 12.78]", "0.8123"],
                          "decided": ["yes", ""], "latency run": [note, ""]})
    text, notes, laid = printed(frame, 90)
    assert laid.columns == list(frame.columns) and laid.wrapped == ["latency run"] and notes == ""
    assert max(len(line) for line in text.splitlines()) <= 90
    assert "NOISY" in text and "load 3.21" in text and "12.35 [12.01, 12.78]" in text


def test_a_pipe_gets_tables_as_wide_as_its_width_not_rich_s_80_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    buffer = io.StringIO()
    console = Console(file=buffer)  # not a terminal: rich alone would crop at 80 columns
    frame = pd.DataFrame({"metric": ["demographic_parity_difference"], "recorded": [0.1628], "new": [0.2747],
                          "interval": ["[0.1488, 0.4177]"], "change": [0.1119], "moved": ["worse"],
                          "constraint": ["BROKEN (<= 0.25)"]})
    terminal.print_frame(console, frame, title="check")
    text = buffer.getvalue()
    assert "BROKEN (<= 0.25)" in text and 80 < max(len(line) for line in text.splitlines()) <= terminal.PIPE_WIDTH
