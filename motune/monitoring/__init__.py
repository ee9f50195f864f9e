"""Keeping a decision honest over time: :mod:`motune.monitoring.check` checks its model on new data."""
