"""The `nopeek` command line: options generated from the config sections, each subcommand a
call to the library function a notebook would make. `main(argv)` runs one command and returns
its exit status; `run()` is the console script's entry, which ends the process."""

from nopeek.cli._main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
