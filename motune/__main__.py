"""``python -m motune``: the command line (:mod:`motune.cli`)."""

from motune.cli import main

main()
