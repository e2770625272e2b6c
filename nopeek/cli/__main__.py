"""`python -m nopeek.cli ...`: the same as the `nopeek` console script."""

from nopeek.cli._main import run

run()
