"""The `nopeek` command line: parses arguments and calls library functions, nothing more.

Every error a user can cause ends in one line `nopeek CMD: error: ...` and exit code 2;
an unexpected internal error ends in one line too (exit 1), with the traceback only when
NOPEEK_DEBUG=1.

`main` returns its exit status (for callers in Python); `run`, the console script's and
`python -m nopeek.cli`'s entry, exits with it without the interpreter's teardown (`exit_now`).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from typing import NoReturn

from nopeek import __version__
from nopeek.cli import _commands as commands
from nopeek.cli._args import OneLineErrorParser, add_dataclass_arguments, fail
from nopeek.errors import USER_ERRORS

# One line per subcommand for `nopeek --help`, without building (and importing) its options.
SUMMARIES = {
    "dcor": "distance correlation between two arrays, with its permutation null",
    "train": "train a NoPeek split model of any topology, against an honest or a dishonest server",
    "attack": "attack a message of a trained split model (--list: the attacks)",
    "audit": "audit activations saved from any framework (.npz files)",
    "sweep": "leakage sweep over topologies x cuts x defences x seeds (the main job)",
    "cost": "per-client compute and communication against federated learning",
    "figures": "redraw a sweep's figures from its results.csv, or compare sweeps",
    "report": "one self-contained HTML page (DIR/report.html) for a sweep, run, audit or cost folder",
}


def _train_parser(sub) -> None:
    from nopeek.dishonest import SERVER_POLICIES, FSHAConfig, SplitGuardConfig
    from nopeek.training import TrainConfig

    p = sub.add_parser("train", help=SUMMARIES["train"],
                       description=TrainConfig.__doc__)
    add_dataclass_arguments(p, TrainConfig)
    p.add_argument("--cut", type=int, default=None, help="one cut: shorthand for --cuts K")
    p.add_argument("--out", default=None, help="run folder (default: runs/train-<dataset>-<model>-...)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--fresh", action="store_true",
                   help="discard the epochs an interrupted run of --out saved, and train from the start (without it, "
                        "the same options resume from them)")
    p.add_argument("--list-cuts", action="store_true", help="print each cut's activation shape and size, then exit")
    p.add_argument("--list-defenses", action="store_true", help="print the registered defences, then exit")
    p.add_argument("--transcript", action="store_true", help="print what crosses between the parties in one step, then exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--server", choices=tuple(SERVER_POLICIES), default="honest",
                   help="the server's policy: " + "; ".join(f"{k}: {v}" for k, v in SERVER_POLICIES.items()))
    g = p.add_argument_group("--server fsha: the malicious server, and the client's detector")
    add_dataclass_arguments(g, FSHAConfig)
    g.add_argument("--attack-seed", type=int, default=None, help="the server's seed: public data, its networks (default 0)")
    g.add_argument("--splitguard", action="store_true", help="the client runs SplitGuard (fake batches) and reports detection")
    add_dataclass_arguments(g, SplitGuardConfig)
    p.set_defaults(func=commands.cmd_train)


def _attack_parser(sub) -> None:
    from nopeek.attacking import AttackConfig

    p = sub.add_parser("attack", help=SUMMARIES["attack"],
                       description=AttackConfig.__doc__)
    p.add_argument("--run", default=None, help="run folder written by `nopeek train`")
    add_dataclass_arguments(p, AttackConfig)
    p.add_argument("--list", action="store_true", help="print the registered attacks, then exit")
    p.add_argument("--out", default=None, help="output folder (default: RUN/attacks/ATTACK)")
    p.add_argument("--force", action="store_true", help="replace an attack's scores already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=commands.cmd_attack)


def _audit_parser(sub) -> None:
    from nopeek.audit import AuditConfig

    p = sub.add_parser("audit", help=SUMMARIES["audit"],
                       description="Leakage and attacks on a split model's activations saved as .npz: "
                       "LEAKED.npz holds the attacker's x, z (and y); each HELDOUT.npz the victim's x, z "
                       "(and y, g, accuracy). Writes scores.json, report.md and figures to --out.")
    p.add_argument("--pairs", nargs="+", required=True, metavar="LEAKED.npz",
                   help="the attacker's pairs: one file for every target, or one per target in the same order")
    p.add_argument("--targets", nargs="+", required=True, metavar="HELDOUT.npz",
                   help="held-out activations, one file per model (cut, alpha, ...) to audit")
    p.add_argument("--out", required=True, help="output folder (written whole or not at all)")
    p.add_argument("--accuracy", nargs="+", type=float, default=None, metavar="ACC",
                   help="each target's test accuracy in [0, 1] (over an `accuracy` entry in its file)")
    p.add_argument("--labels", nargs="+", default=None, metavar="NAME", help="a name per target (default: file names)")
    add_dataclass_arguments(p, AuditConfig)
    p.add_argument("--force", action="store_true", help="replace an earlier audit in --out (never other files)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=commands.cmd_audit)


def _sweep_parser(sub) -> None:
    from nopeek.sweeps import PRESETS, SweepConfig

    p = sub.add_parser("sweep", help=SUMMARIES["sweep"],
                       description=f"{SweepConfig.__doc__} An option not given takes the preset's value: "
                                   "the defaults shown are --preset default's; each preset sets its own.")
    p.add_argument("--preset", choices=tuple(PRESETS), default="default", help="starting point (default: default)")
    p.add_argument("--small", action="store_true", help="the preset's small version (seconds, on digits)")
    p.add_argument("--config", default=None, help="TOML or JSON file of SweepConfig fields (over the preset)")
    add_dataclass_arguments(p, SweepConfig, shown=PRESETS["default"], shown_from=" in --preset default")
    p.add_argument("--out", default=None, help="output folder (default: runs/<timestamp>)")
    p.add_argument("--force", action="store_true", help="discard results of a different config in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true",
                   help="print the config this command would run (the preset, --config and options resolved; JSON "
                        "that --config reads back) and its cell count, then exit")
    g = p.add_argument_group("on a cluster (docs/guide/cluster.md)")
    g.add_argument("--shard", metavar="I/N", default=None,
                   help="run shard I of N (0 <= I < N; e.g. $SLURM_ARRAY_TASK_ID/8) into --out, shared by all "
                        "shards; the last to finish merges into results.csv")
    g.add_argument("--merge-shards", metavar="DIR", default=None,
                   help="merge DIR's shard files into DIR/results.csv and draw the figures; lists missing groups (exit 3)")
    g.add_argument("--ray", metavar="ADDRESS", nargs="?", const="", default=None,
                   help="run the groups as Ray tasks: no value or local: start an instance here that listens on "
                        "127.0.0.1 only; a cluster, on a trusted network only (Ray has no authentication): auto "
                        "(RAY_ADDRESS, or the cluster `ray start --head` started here), HOST:PORT, ray://HOST:10001")
    g.add_argument("--ray-cpus", type=float, default=None, help="CPUs each group's task asks for (default 1)")
    g.add_argument("--ray-retries", type=int, default=None, help="retries of a task whose worker died (default 3)")
    p.set_defaults(func=commands.cmd_sweep)


def _cost_parser(sub) -> None:
    from nopeek.cost import COST_PRESETS, CostConfig

    p = sub.add_parser("cost", help=SUMMARIES["cost"],
                       description=CostConfig.__doc__)
    p.add_argument("--preset", choices=tuple(COST_PRESETS), default=None,
                   help="start from a preset (seed-table: the split-learning cost table); options given override it")
    add_dataclass_arguments(p, CostConfig)
    p.add_argument("--out", default=None, help="folder for cost.csv, cost.png (and the sensitivity files)")
    p.add_argument("--force", action="store_true", help="replace an earlier cost report in --out (never other files)")
    p.set_defaults(func=commands.cmd_cost)


def _dcor_parser(sub) -> None:
    p = sub.add_parser("dcor", help=SUMMARIES["dcor"])
    p.add_argument("x", nargs="?", help="X.npy, samples along axis 0 (neither X nor Y: a bundled example, the "
                   "breast-cancer features and their squares)")
    p.add_argument("y", nargs="?", help="Y.npy, as many samples as X")
    p.add_argument("--block-size", type=int, default=None, help="exact blocked form, O(n*block) memory "
                   "(the permutation test then recomputes the distances for each permutation)")
    p.add_argument("--permutations", type=int, default=None,
                   help="permutations of Y's rows for the null's 95%% quantile and the p-value, at least 19; 0: no "
                        "test (default: 200 up to 5,000 samples without --block-size; above, or blocked, where each "
                        "permutation costs one more dCor, only when asked)")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations, 0 to 2**32 - 1 (default: 0)")
    p.set_defaults(func=commands.cmd_dcor)


def _figures_parser(sub) -> None:
    p = sub.add_parser("figures", help=SUMMARIES["figures"], description=(
        "One folder: redraw DIR/figures/*.png from DIR/results.csv (and DIR/ranking.md, .csv where it holds "
        "several defences). Several folders, or --out: one comparison figure against alpha, one line per sweep "
        "(per topology and cut where a sweep holds several), into --out."))
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep output folder(s)")
    p.add_argument("--out", default=None, help="the comparison figure's .png file (needed with several folders)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=commands.cmd_figures)


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help=SUMMARIES["report"], description=(
        "Write DIR/report.html, one self-contained page (images embedded) for a sweep, a run (with the attacks "
        "in RUN/attacks/), an audit, an attack's scores or a cost report; several folders: one page each, and "
        "a folder that cannot be reported is named without stopping the others (exit 2)."))
    p.add_argument("dirs", nargs="+", metavar="DIR", help="folder(s) nopeek wrote")
    p.set_defaults(func=commands.cmd_report)


SUBCOMMANDS = {"dcor": _dcor_parser, "train": _train_parser, "attack": _attack_parser, "audit": _audit_parser,
               "sweep": _sweep_parser, "cost": _cost_parser, "figures": _figures_parser,
               "report": _report_parser}


# What an interrupted command leaves: a sweep keeps every finished group and resumes; every
# other command writes its folder whole at the end, so an interrupted one leaves none (a
# train run keeps its epoch checkpoints beside it, and resumes).
NOTHING_WRITTEN = "nothing was written (the output appears whole when the command finishes); run it again to start over"
ON_INTERRUPT = {"sweep": "finished groups are kept in --out; run the same command again to resume (the group in "
                         "progress from its last saved epoch)",
                "train": "nothing was written to --out (it appears whole when the run finishes); any epochs it saved "
                         "are kept beside it, in .NAME.resume/: the same command resumes from them (--fresh discards "
                         "them; a --server fsha run starts over)",
                "figures": "figures drawn before it are kept; run it again to draw them all",
                "cost": "files written before it are kept; run it again to write them all",
                "report": "reports written before it are kept; run it again for the rest"}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `nopeek` parser. With `only`, the other subcommands are listed but not built:
    building one imports what its options are generated from (configs, presets,
    registries), which costs seconds a run of another subcommand should not pay."""
    parser = OneLineErrorParser(
        prog="nopeek",
        description="Measure and reduce what leaks between the parties of a split neural network.",
    )
    parser.add_argument("--version", action="version", version=f"nopeek {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for name, build in SUBCOMMANDS.items():
        if only is None or name == only:
            build(sub)
        else:
            sub.add_parser(name, help=SUMMARIES[name], add_help=False)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv (the first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command_of(argv) or "")
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = f"nopeek {args.command}"
    try:
        return args.func(args)
    except USER_ERRORS as err:
        fail(prog, str(err).splitlines()[0] if str(err) else type(err).__name__)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted; {ON_INTERRUPT.get(args.command, NOTHING_WRITTEN)}\n")
        return 130
    except Exception as err:  # an unexpected internal error: still one line unless debugging
        if os.environ.get("NOPEEK_DEBUG"):
            raise
        sys.stderr.write(f"{prog}: internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
                         "(set NOPEEK_DEBUG=1 for the traceback)\n")
        return 1


def run() -> NoReturn:
    """The `nopeek` console script and `python -m nopeek.cli`: `main()` on `sys.argv`, then
    `exit_now` with its exit status (argparse's and `fail`'s `SystemExit` codes included),
    where `fast_exit_allowed()`; otherwise `sys.exit`. It ends the process: Python callers use
    `main`, which returns the status."""
    try:
        code = main()
    except SystemExit as stop:
        if stop.code is not None and not isinstance(stop.code, int):
            raise  # sys.exit("message"): Python prints it
        code = stop.code
    code = int(code or 0)
    if not fast_exit_allowed():
        sys.exit(code)
    exit_now(code)


def fast_exit_allowed() -> bool:
    """Whether `run` may end the process by `exit_now`: from the main thread, with no profiler,
    tracer or debugger attached (cProfile, coverage, pdb: they report at the interpreter's
    exit), and NOPEEK_FULL_EXIT unset (or "", "0", "false", "no")."""
    full = os.environ.get("NOPEEK_FULL_EXIT", "").strip().lower() not in ("", "0", "false", "no")
    return (not full and threading.current_thread() is threading.main_thread()
            and sys.getprofile() is None and sys.gettrace() is None)


def exit_now(code: int) -> NoReturn:
    """End the process with exit status `code` as `sys.exit` would, less the interpreter's teardown.

    What the interpreter does at exit that anyone can see is done, in its order: the threading
    module's exit hooks (thread and process pools are told to stop) and the joining of other
    non-daemon threads (`threading._shutdown`, as `Py_FinalizeEx` calls it), the `atexit`
    functions (Ray's shutdown, logging's flush, temporary folders' removal, jax's own), and
    stdout and stderr flushed. What is skipped is freeing every module and object one by one,
    with their `__del__` methods and C-level destructors (jax's backend, its compiled
    programs, the modules of jax and flax): a one-epoch digits `nopeek train` ends 0.17 s
    sooner on 2 cores (2.95 to 2.79 s, paired; bench/README.md, "The development host's
    kind, re-measured"). The operating system frees the memory; every file nopeek writes is closed
    before its command returns. Call it from the main thread only (`fast_exit_allowed`).
    """
    shutdown = getattr(threading, "_shutdown", None)
    if callable(shutdown):
        shutdown()
    else:  # an interpreter without it: join what it would have joined
        current = threading.current_thread()
        for thread in threading.enumerate():
            if thread is not current and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
