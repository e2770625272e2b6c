"""Are a preset's results the same as those of an earlier version? (a refactoring's check)

    python bench/identical.py --before REV [--preset default] [--keep DIR]
    python bench/identical.py --reference DIR [--preset quick]

Runs `nopeek sweep --preset P` with this checkout, and with git revision REV (checked out
in a temporary worktree; or compares with a sweep folder DIR made earlier), one after the
other on this machine, then compares the two `results.csv` cell by cell on every column
the earlier table has, timing columns and `config_hash` aside (a digest of the config's
fields: a field added since changes it, not the sweep), and every saved sample file byte
for byte.
Prints the CPU and the verdict; exits 1 when anything differs. Columns the new table adds
are listed, not compared.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# XLA_FLAGS as the user set it, before host_line imports nopeek (which adds its own flags to
# it): each tree's sweep gets the user's and then that tree's nopeek adds its own.
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS")

from bench._host import host_line  # noqa: E402

SKIPPED = {"train_seconds", "attack_seconds", "eval_seconds", "config_hash"}


def sweep_env(tree: str, environ=None, user_xla_flags: str | None = USER_XLA_FLAGS) -> dict:
    """The environment of a sweep run from `tree`: this process's (`environ`), with `tree` as
    PYTHONPATH and XLA_FLAGS as the user set it before nopeek added its own (absent if they
    set none), so that each tree's nopeek adds its own flags."""
    environ = os.environ if environ is None else environ
    env = {**{k: v for k, v in environ.items() if k != "XLA_FLAGS"}, "PYTHONPATH": tree}
    if user_xla_flags is not None:
        env["XLA_FLAGS"] = user_xla_flags
    return env


def run_sweep(tree: str, preset: str, out: str) -> None:
    env = sweep_env(tree)
    subprocess.run([sys.executable, "-m", "nopeek.cli", "sweep", "--preset", preset, "--quiet", "--out", out],
                   cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)


def rows(path: str) -> tuple[list[str], dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        table = list(reader)
        header = list(reader.fieldnames or [])
    key = ["dataset", "model", "topology", "cut", "defense", "alpha", "noise_scale", "seed", "party", "message"]
    return header, {tuple(r.get(k, "") for k in key): r for r in table}


def compare(before: str, after: str) -> list[str]:
    problems = []
    old_header, old = rows(os.path.join(before, "results.csv"))
    new_header, new = rows(os.path.join(after, "results.csv"))
    if set(old) != set(new):
        problems.append(f"cells differ: {sorted(set(old) ^ set(new))}")
    for key in sorted(set(old) & set(new)):
        for column in old_header:
            if column in SKIPPED:
                continue
            if old[key].get(column, "") != new[key].get(column, ""):
                problems.append(f"{key}: {column}: {old[key].get(column)!r} != {new[key].get(column)!r}")
    for name in sorted(os.listdir(os.path.join(before, "samples"))):
        a, b = os.path.join(before, "samples", name), os.path.join(after, "samples", name)
        if not os.path.exists(b) or not filecmp.cmp(a, b, shallow=False):
            problems.append(f"samples/{name} differs")
    added = [c for c in new_header if c not in old_header]
    print(f"columns only in the new table (not compared): {', '.join(added) or 'none'}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--before", help="git revision to compare with")
    source.add_argument("--reference", help="a sweep folder made earlier with the same preset")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--keep", default=None, help="folder to keep both sweeps in")
    args = parser.parse_args()
    print(host_line())
    work = args.keep or tempfile.mkdtemp(prefix="nopeek-identical-")
    if args.before:
        tree = os.path.join(work, "tree")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", tree, args.before], check=True,
                       stdout=subprocess.DEVNULL)
        try:
            before = os.path.join(work, "before")
            run_sweep(tree, args.preset, before)
        finally:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
    else:
        before = args.reference
    after = os.path.join(work, "after")
    run_sweep(ROOT, args.preset, after)
    problems = compare(before, after)
    for p in problems[:40]:
        print(p)
    print(f"preset {args.preset}: " + ("IDENTICAL (timing columns and config_hash aside)" if not problems else f"{len(problems)} differences"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
