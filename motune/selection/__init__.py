"""Choosing a configuration by a stated rule (:mod:`motune.selection.choose`, over the rules of
:mod:`motune.selection.rules`), and recording the decision (:mod:`motune.selection.decision`)."""

from motune.selection import rules
from motune.selection.choose import Choice, candidates_of, select
from motune.selection.decision import decide, make_current, spec_fingerprint

__all__ = ["Choice", "candidates_of", "decide", "make_current", "rules", "select", "spec_fingerprint"]
