"""`python -m nopeek.cli ...`: the same as the `nopeek` console script (`run`: it ends the
process; in Python, call `nopeek.cli.main`)."""

from nopeek.cli._main import run

run()
