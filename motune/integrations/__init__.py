"""Bridges to other tools' training loops (``motune.integrations.transformers``)."""
