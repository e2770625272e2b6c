"""The `nopeek` command line: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from nopeek import __version__
from nopeek.cliargs import OneLineErrorParser, fail


def _load_npy(path: str, prog: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        fail(prog, f"cannot read {path}: expected a .npy array ({err})")


def cmd_dcor(args: argparse.Namespace) -> int:
    """Distance statistics between two arrays (.npy files, or a bundled example)."""
    import metrics

    prog = "nopeek dcor"
    if (args.x is None) != (args.y is None):
        fail(prog, "give both X.npy and Y.npy, or neither for the bundled example")
    if args.x is None:
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        x, y = data.data, data.data ** 2
        print("bundled example: breast-cancer features x (569, 30) and x**2")
    else:
        x, y = _load_npy(args.x, prog), _load_npy(args.y, prog)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        fail(prog, "inputs contain NaN or Inf")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    try:
        rows = [
            ("distance_correlation", metrics.distance_correlation(x, y, block_size=args.block_size)),
            ("distance_correlation_sqr", metrics.distance_correlation_sqr(x, y, block_size=args.block_size)),
            ("u_distance_correlation_sqr", metrics.u_distance_correlation_sqr(x, y, block_size=args.block_size)),
        ]
    except ValueError as err:
        fail(prog, str(err))
    for name, value in rows:
        print(f"{name:28s} {float(value):.6f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="nopeek",
        description="Measure and reduce what leaks through the cut layer of a split network.",
    )
    parser.add_argument("--version", action="version", version=f"nopeek {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)

    p = sub.add_parser("dcor", help="distance correlation between two arrays")
    p.add_argument("x", nargs="?", help="X.npy, samples along axis 0")
    p.add_argument("y", nargs="?", help="Y.npy, as many samples as X")
    p.add_argument("--block-size", type=int, default=None, help="exact blocked form, O(n*block) memory")
    p.set_defaults(func=cmd_dcor)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
