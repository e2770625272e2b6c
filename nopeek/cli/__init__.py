"""The `nopeek` command line (`main`): options generated from the config sections, each
subcommand a call to the library function a notebook would make."""

from nopeek.cli._main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
